"""A real daphne under a few hundred concurrent requests keeps its PostgreSQL connections bounded.

Under ASGI each request runs in a thread of its own; with persistent connections (the old
DATABASE_CONN_MAX_AGE=60) each of those threads kept a connection, until PostgreSQL refused new
clients. The pool (DATABASE_POOL_MAX_SIZE) bounds them per process: connections are counted in
pg_stat_activity while the load runs, by the application_name daphne's connections carry.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from django.conf import settings

from conversations.models import Conversation
from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering

ROOT = Path(__file__).resolve().parent.parent
POOL_MAX_SIZE = 4
CONVERSATIONS = 300
IN_FLIGHT = 150


@dataclass
class Daphne:
    base_url: str
    application_name: str
    process: subprocess.Popen[bytes]


def _database_url() -> str:
    database = settings.DATABASES["default"]
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    return f"postgres://{database['USER']}{password}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


@pytest.fixture
def daphne(transactional_db: None, tmp_path: Path) -> Iterator[Daphne]:
    """daphne on the test database, its connections named by a unique application_name (PGAPPNAME)."""
    port = free_port()
    application_name = f"cs-test-daphne-{uuid.uuid4().hex[:12]}"
    redis_url = os.environ.get("TEST_REDIS_URL") or settings.REDIS_URL or "redis://127.0.0.1:6379/1"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "DATABASE_POOL_MAX_SIZE": str(POOL_MAX_SIZE),
        "DATABASE_POOL_MIN_SIZE": "1",
        "REDIS_URL": redis_url,
        "SECRET_KEY": "database-connections-test-secret",
        # Each customer comes from its own address behind the proxy, so the per-IP limit stays out of it.
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "PGAPPNAME": application_name,
    }
    log = tmp_path / "daphne.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "cs_platform.serve_web"],
        cwd=ROOT,
        env={**env, "DAPHNE_BIND": "127.0.0.1", "DAPHNE_PORT": str(port)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/healthz", timeout=60, process=process, what="daphne")
        yield Daphne(f"http://127.0.0.1:{port}", application_name, process)
    finally:
        stop_process_group(process)
        print(f"----- daphne.log -----\n{log.read_text()[-3000:]}")


class ConnectionCounter:
    """Polls pg_stat_activity in a thread of its own for the connections of one application_name."""

    def __init__(self, application_name: str) -> None:
        self.application_name = application_name
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        database = settings.DATABASES["default"]
        with psycopg.connect(_database_url(), autocommit=True) as db:
            while not self._stop.is_set():
                row = db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                    [database["NAME"], self.application_name],
                ).fetchone()
                self.samples.append(int(row[0]) if row else 0)
                self._stop.wait(0.01)

    def __enter__(self) -> ConnectionCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


async def _customer(http: httpx.AsyncClient, index: int, limit: asyncio.Semaphore) -> tuple[int, int]:
    """One customer from an address of its own: open a conversation (a write), then read its messages."""
    address = f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256 or 1}"
    async with limit:
        created = await http.post(
            "/api/widget/conversations", json={"locale": "en"}, headers={"X-Forwarded-For": address}
        )
        if created.status_code != 201:
            return created.status_code, 0
        body = created.json()
        listed = await http.get(
            f"/api/widget/conversations/{body['id']}/messages",
            headers={"X-Forwarded-For": address, "Authorization": f"Bearer {body['token']}"},
        )
        return created.status_code, listed.status_code


async def _load(base_url: str) -> list[tuple[int, int]]:
    # A connection per request: reusing a kept-alive one races daphne closing it (a ReadError that
    # says nothing about the database), and the test is about the requests in flight at once.
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
    limit = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
        return await asyncio.gather(*(_customer(http, index, limit) for index in range(CONVERSATIONS)))


def test_it_keeps_daphnes_connections_within_the_pool_under_hundreds_of_concurrent_requests(
    daphne: Daphne,
) -> None:
    with ConnectionCounter(daphne.application_name) as counter:
        outcomes = asyncio.run(_load(daphne.base_url))

    assert outcomes == [(201, 200)] * CONVERSATIONS
    assert Conversation.objects.count() == CONVERSATIONS
    assert len(counter.samples) > 10
    # The counter saw daphne's connections (it counts the right ones), never more than the pool's.
    assert max(counter.samples) >= 1
    assert max(counter.samples) <= POOL_MAX_SIZE, f"daphne held {max(counter.samples)} connections"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DATABASE_CONN_MAX_AGE": "60"}, "DATABASE_CONN_MAX_AGE must be 0 with the connection pool"),
        ({"DATABASE_POOL_MAX_SIZE": "-1"}, "DATABASE_POOL_MAX_SIZE must be 0 (no pool)"),
        ({"DATABASE_POOL_MIN_SIZE": "11"}, "DATABASE_POOL_MIN_SIZE must be between 0 and"),
        ({"DATABASE_POOL_TIMEOUT": "0"}, "DATABASE_POOL_TIMEOUT must be a positive number"),
    ],
)
def test_it_refuses_to_start_with_pool_settings_that_cannot_work(
    overrides: dict[str, str], message: str
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/cs_unused",
        "REDIS_URL": "redis://127.0.0.1:6379/1",
        "SECRET_KEY": "settings-test-secret",
        "DATABASE_CONN_MAX_AGE": "0",
        "DATABASE_POOL_MAX_SIZE": "10",
        "DATABASE_POOL_MIN_SIZE": "1",
        **overrides,
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "cs_platform.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert message in result.stderr


def test_it_starts_without_a_pool_when_its_size_is_zero() -> None:
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/cs_unused",
        "REDIS_URL": "redis://127.0.0.1:6379/1",
        "SECRET_KEY": "settings-test-secret",
        "DATABASE_CONN_MAX_AGE": "0",
        "DATABASE_POOL_MAX_SIZE": "0",
        "DJANGO_SETTINGS_MODULE": "cs_platform.settings",
    }
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default']['OPTIONS'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pool" not in result.stdout
