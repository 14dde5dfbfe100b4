"""IP rules across real processes: two daphne servers on one database, and `manage.py ip_rule` run as
an operator runs it; a rule change reaches both within IP_RULES_CACHE_SECONDS, over HTTP and websockets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Origin

from cs_platform.processes import free_port, stop_process_group
from tests.processes import ROOT, daphne_start, database_url

CACHE_SECONDS = 1
# How long a test waits for both servers to apply a change: the cache interval, and room for a loaded
# machine to answer. Reached only when the rule does not propagate.
DEADLINE_SECONDS = CACHE_SECONDS + 4
# The servers trust one proxy: 127.0.0.1. Another loopback address is a client that is not the proxy.
PROXY = "127.0.0.1"
CLIENT = "127.0.0.2"
PUBLIC = "203.0.113.9"


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "ip-rules-test-secret",
        "IP_RULES_CACHE_SECONDS": str(CACHE_SECONDS),
        "TRUSTED_PROXIES": f"{PROXY}/32",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def servers(transactional_db: None, tmp_path: Path) -> Iterator[list[str]]:
    """Two daphne processes (python -m cs_platform.serve_web) on the test database; their base URLs."""
    assert settings.REDIS_URL, "these tests need REDIS_URL (the tests' own Redis database)"
    processes: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / "daphne-1.log", tmp_path / "daphne-2.log"]
    urls = []
    try:
        for log in logs:
            port = free_port()
            processes.append(daphne_start(port=port, environment=environment(tmp_path), log=log))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            stop_process_group(process)
        for log in logs:
            if log.exists():
                print(log.name, log.read_text()[-4000:])


def ip_rule(tmp_path: Path, *args: str) -> str:
    """`manage.py ip_rule ...` in a process of its own, as an operator runs it; its output."""
    result = subprocess.run(
        [sys.executable, "manage.py", "ip_rule", *args],
        cwd=ROOT,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_until(condition: Callable[[], bool], *, what: str) -> None:
    """Poll `condition` until it holds, failing after DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_SECONDS} s: {what}")
        time.sleep(0.05)


def staff_page_refused(url: str, *, address: str = PROXY, forwarded_for: str | None = None) -> bool:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30) as client:
        response = client.get(f"{url}/admin/login/", headers=headers)
    if response.status_code == 200:
        return False
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "ip_not_allowed"
    return True


def staff_page_admits(url: str) -> bool:
    return not staff_page_refused(url)


def console_socket_close_code(url: str) -> int | None:
    """The close code of /ws/agent/ (no session: the console closes it with 4401; refused: 4403)."""
    with connect(f"{url.replace('http', 'ws', 1)}/ws/agent/", origin=Origin(url), open_timeout=30) as socket:
        try:
            socket.recv(timeout=30)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def test_a_deny_rule_added_with_the_command_reaches_both_servers_and_its_removal_too(
    servers: list[str], tmp_path: Path
) -> None:
    for url in servers:
        assert not staff_page_refused(url)
        assert console_socket_close_code(url) == 4401

    added = ip_rule(tmp_path, "add", "--scope", "staff", "--cidr", "127.0.0.1/32", "--deny", "--note", "test")
    rule_id = added.split()[3].rstrip(":")
    assert added.startswith(f"Added IP rule {rule_id}: deny 127.0.0.1/32 on staff.")

    for url in servers:
        wait_until(partial(staff_page_refused, url), what=f"{url} refuses 127.0.0.1 on /admin/")
        assert console_socket_close_code(url) == 4403
    # Only the rule's address: another loopback address is still admitted.
    assert not staff_page_refused(servers[0], address=CLIENT)

    ip_rule(tmp_path, "disable", rule_id)
    for url in servers:
        wait_until(partial(staff_page_admits, url), what=f"{url} admits 127.0.0.1 again")
        assert console_socket_close_code(url) == 4401


def test_forwarded_for_counts_only_from_the_trusted_proxy(servers: list[str]) -> None:
    url = servers[0]

    # From the trusted proxy, the header is believed: a public client, which staff refuses by default.
    assert staff_page_refused(url, address=PROXY, forwarded_for=PUBLIC)
    assert not staff_page_refused(url, address=PROXY, forwarded_for="10.1.2.3")
    # From any other peer it is not: the peer (loopback, admitted) is the client.
    assert not staff_page_refused(url, address=CLIENT, forwarded_for=PUBLIC)
