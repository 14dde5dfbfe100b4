"""The production web server (daphne through cs_platform.serve_web) in a process of its own, on the
test database, for the tests that talk to it over real sockets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.conf import settings

from cs_platform.processes import parent_death_signal, wait_until_answering

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The test database as a DATABASE_URL, password included when it has one."""
    database = settings.DATABASES["default"]
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    return f"postgres://{database['USER']}{password}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


def daphne_start(*, port: int, environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `python -m cs_platform.serve_web` (as the Dockerfile and compose run it) on 127.0.0.1:`port`
    and wait until /healthz answers; the log is appended to `log` and quoted if it never does.

    Stop it with cs_platform.processes.stop_process_group."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cs_platform.serve_web"],
        cwd=ROOT,
        env={**environment, "DAPHNE_BIND": "127.0.0.1", "DAPHNE_PORT": str(port)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/healthz", timeout=60, process=process, what="daphne")
    except RuntimeError as error:
        raise RuntimeError(f"{error}:\n{log.read_text()}") from error
    return process
