"""Browser tests: daphne as a separate process on the test database, replies generated in-process
against a scripted inference server, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from playwright.sync_api import Browser, Playwright, sync_playwright

from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering
from tests.scripted_inference import ScriptedInferenceServer

ROOT = Path(__file__).resolve().parents[2]
# Ignored by git: a test run leaves the tree clean. `make screenshots` copies the README's into docs/.
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between
# browser steps are ordinary synchronous calls all the same.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = pytest.mark.browser


@dataclass
class Platform:
    url: str
    inference: ScriptedInferenceServer
    log: Path
    embedding_origin: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start daphne and wait until it answers."""
        self.process = subprocess.Popen(
            # The production entry point, as the Dockerfile and docker compose run it.
            [sys.executable, "-m", "cs_platform.serve_web"],
            cwd=ROOT,
            env={**self.env, "DAPHNE_BIND": "127.0.0.1", "DAPHNE_PORT": str(self.port)},
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=parent_death_signal(),
        )
        try:
            wait_until_answering(f"{self.url}/healthz", timeout=60, process=self.process, what="daphne")
        except RuntimeError as error:
            raise RuntimeError(f"{error}:\n{self.log.read_text()}") from error

    def kill(self) -> None:
        """Kill daphne at once, as a crash or a lost connection would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process_group(self.process)


# Package scope, not session: Playwright's sync API keeps an event loop running in this thread,
# and the async tests collected after this package need the thread back.
@pytest.fixture(scope="package")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="package")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def host_page_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain web server on another origin, for pages that embed the widget with embed.js."""
    root = tmp_path / "host-site"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()


@pytest.fixture
def platform(
    transactional_db: None, scripted_inference: ScriptedInferenceServer, tmp_path: Path, host_page_server: Any
) -> Iterator[Platform]:
    """The platform served by daphne in its own process, on the test database and Redis database."""
    database = settings.DATABASES["default"]
    # The tests' own Redis database (TEST_REDIS_URL in `make test`), emptied first: no rate-limit
    # counters or queued jobs from earlier tests, and nothing shared with another checkout's run.
    assert settings.REDIS_URL, "the browser tests need REDIS_URL (make test sets it from TEST_REDIS_URL)"
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    port = free_port()
    embedding_origin = host_page_server[0]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "browser-test-secret",
        "REPLY_GENERATION_IN_PROCESS": "true",
        "INFERENCE_BASE_URL": scripted_inference.base_url,
        "INFERENCE_VISION": "true",
        "WHITENOISE_USE_FINDERS": "true",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "WIDGET_ALLOWED_ORIGINS": embedding_origin,
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "daphne.log"
    platform = Platform(
        url=f"http://127.0.0.1:{port}",
        inference=scripted_inference,
        log=log,
        embedding_origin=embedding_origin,
        port=port,
        env=env,
    )
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()
        print(log.read_text()[-4000:])
