"""Benchmark of replies through the platform in its production shape, against a paced model server.

Run from the repository root: `python bench/replies.py [--quick] [--no-write]` (`make bench`). It
starts everything it needs itself: its own redis-server on a free port (or BENCH_REDIS_URL), a
PostgreSQL database of its own (BENCH_DATABASE_URL, default cs_bench on the local server, dropped,
created and migrated), bench/pace_server.py (first token after 20 ms, then 50 tokens/s per stream),
one daphne and one `celery -A cs_platform worker` configured from the environment only, exactly
as a deployment runs them. Then, as customers from distinct addresses behind a trusted proxy
(X-Forwarded-For with TRUSTED_PROXIES=127.0.0.1/32, on the websocket upgrade too), it measures:

- the time to first token through the platform (message frame sent → first `reply.delta`) against
  a client streaming from the pace server itself, at 1 customer (replies in a row) and 10, 50 and
  200 customers at once: p50 and p99, and the difference (the platform's added time);
- relay integrity of every reply: deltas numbered from 0 without gap or duplicate, and their
  concatenation equal to `reply.done`'s text, to the saved reply (REST history) and to what the
  model sent;
- idle websockets (hello'd) one daphne holds and the memory each costs, with replies streaming to
  100 of them;
- worker memory per concurrent reply, and database connections in use (pg_stat_activity, by
  application_name);
- where the time to first token goes for one customer (wall-clock timestamps along the path).

It prints the figures and replaces the `## Replies` and `## Where the time to first token goes`
sections of docs/benchmarks.md (bench/images.py writes the image section).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on the path, not the repository root.
sys.path.insert(0, str(REPOSITORY_ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import websockets  # noqa: E402
from websockets.typing import Origin  # noqa: E402

from bench.pace_server import MODEL, expected_text  # noqa: E402
from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering  # noqa: E402

BENCHMARKS_PATH = REPOSITORY_ROOT / "docs" / "benchmarks.md"
RESULTS_SECTION = "## Replies"
BREAKDOWN_SECTION = "## Where the time to first token goes"
FIRST_TOKEN_MS = 20
TOKENS_PER_SECOND = 50
REPLY_TOKENS = 24
DAPHNE_APPLICATION_NAME = "cs-bench-daphne"
WORKER_APPLICATION_NAME = "cs-bench-worker"


# --- statistics ------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 50 values is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def milliseconds(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


# --- the processes ---------------------------------------------------------------------------


@dataclass
class Stack:
    """The platform's processes, the pace server and where to reach them."""

    base_url: str
    pace_url: str
    database_url: str
    database_name: str
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    web_command: str = ""

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://")

    @property
    def pace_log(self) -> Path:
        return self.workdir / "pace.jsonl"

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            command,
            cwd=REPOSITORY_ROOT,
            env=env,
            stdout=self.log(name).open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A benchmark killed outright takes its servers with it.
            preexec_fn=parent_death_signal(),
        )
        self.processes[name] = process
        return process

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            stop_process_group(process, grace_seconds=15)

    def tail(self, name: str, characters: int = 2000) -> str:
        path = self.log(name)
        return path.read_text(errors="replace")[-characters:] if path.exists() else ""


def _raise_open_file_limit() -> int:
    """Thousands of sockets need thousands of descriptors, here and in daphne (which inherits it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _recreate_database(database_url: str) -> str:
    """Drop and create the benchmark's database; returns its name."""
    name = database_url.rsplit("/", 1)[1].split("?", 1)[0]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"BENCH_DATABASE_URL names an unusual database: {name!r}")
    maintenance = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(database_url: str, name: str) -> None:
    maintenance = database_url.rsplit("/", 1)[0] + "/postgres"
    with contextlib.suppress(psycopg.Error), psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def production_stack(workdir: Path) -> Iterator[Stack]:
    """Redis, PostgreSQL, the pace server, daphne and a Celery worker, stopped on the way out."""
    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cs_bench")
    database_name = _recreate_database(database_url)
    pace_port, web_port = free_port(), free_port()
    stack = Stack(
        base_url=f"http://127.0.0.1:{web_port}",
        pace_url=f"http://127.0.0.1:{pace_port}",
        database_url=database_url,
        database_name=database_name,
        workdir=workdir,
    )
    try:
        redis_url = os.environ.get("BENCH_REDIS_URL", "")
        if not redis_url:
            redis_port = free_port()
            stack.start(
                "redis",
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--maxclients", "20000"],
                dict(os.environ),
            )  # fmt: skip
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            _wait_for_redis(redis_port, stack)
        env = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("PG", "DJANGO_"))},
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "benchmark-only-secret-key",
            "TRUSTED_PROXIES": "127.0.0.1/32",
            "INFERENCE_BASE_URL": f"{stack.pace_url}/v1",
            # As the compose set does: the model is named, not discovered per reply.
            "INFERENCE_MODEL": MODEL,
            # One customer sends 30 messages within a minute here; the limit is not what is measured.
            "WIDGET_MESSAGES_PER_MINUTE": "100000",
            "MEDIA_ROOT": str(workdir / "media"),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        stack.env = env
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=REPOSITORY_ROOT,
            env=env,
            check=True,
        )
        stack.start(
            "pace",
            [sys.executable, "bench/pace_server.py", "--port", str(pace_port),
             "--first-token-ms", str(FIRST_TOKEN_MS), "--tokens-per-second", str(TOKENS_PER_SECOND),
             "--tokens", str(REPLY_TOKENS), "--log", str(stack.pace_log)],
            env,
        )  # fmt: skip
        # The production web entry point where there is one (the compose set's and the Dockerfile's).
        if (REPOSITORY_ROOT / "cs_platform" / "serve_web.py").exists():
            web_command = [sys.executable, "-m", "cs_platform.serve_web"]
        else:
            web_command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                           "cs_platform.asgi:application"]  # fmt: skip
        stack.web_command = " ".join(["python", *web_command[1:]])
        stack.start(
            "daphne",
            web_command,
            {
                **env,
                "PGAPPNAME": DAPHNE_APPLICATION_NAME,
                "DAPHNE_BIND": "127.0.0.1",
                "DAPHNE_PORT": str(web_port),
            },
        )
        stack.start(
            "worker",
            [sys.executable, "-m", "celery", "-A", "cs_platform", "worker"],
            {**env, "PGAPPNAME": WORKER_APPLICATION_NAME},
        )
        wait_until_answering(
            f"{stack.pace_url}/stats", timeout=30, process=stack.processes["pace"], what="pace"
        )
        wait_until_answering(
            f"{stack.base_url}/healthz", timeout=90, process=stack.processes["daphne"], what="daphne"
        )
        yield stack
    finally:
        stack.stop()
        _drop_database(database_url, database_name)


def _wait_for_redis(port: int, stack: Stack) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if stack.processes["redis"].poll() is not None:
            raise SystemExit(f"redis-server exited:\n{stack.tail('redis')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            probe.sendall(b"PING\r\n")
            if probe.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.1)
    raise SystemExit("redis-server did not answer")


# --- measuring processes ---------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident memory of one process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group (the worker and its pool processes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def group_rss(pgid: int) -> int:
    return sum(rss_bytes(pid) for pid in group_pids(pgid))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_until_idle(stack: Stack, *, seconds: float = 60.0) -> None:
    """Wait until daphne and the worker spend under 2 % of a core for a second (start-up work done)."""
    deadline = time.monotonic() + seconds
    before = sum(platform_cpu_seconds(stack))
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        now = sum(platform_cpu_seconds(stack))
        if now - before < 0.02:
            return
        before = now
    print(f"  the platform did not go idle within {seconds:.0f} s; measuring anyway", flush=True)


def platform_cpu_seconds(stack: Stack) -> tuple[float, float]:
    """CPU time so far of daphne, and of every process of the worker's group."""
    worker = stack.processes["worker"].pid
    return cpu_seconds(stack.processes["daphne"].pid), sum(cpu_seconds(pid) for pid in group_pids(worker))


@dataclass
class Sample:
    at: float
    daphne_rss: int
    worker_rss: int
    active_streams: int
    connections: dict[str, int]


class Sampler:
    """Samples memory, streams in progress at the model and database connections, in a thread."""

    def __init__(self, stack: Stack, interval: float = 0.1) -> None:
        self.stack = stack
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def _run(self) -> None:
        daphne = self.stack.processes["daphne"].pid
        worker = self.stack.processes["worker"].pid
        with (
            httpx.Client(base_url=self.stack.pace_url, timeout=5) as pace,
            psycopg.connect(self.stack.database_url, autocommit=True) as database,
        ):
            while not self._stop.is_set():
                try:
                    active = int(pace.get("/stats").json()["active_streams"])
                except (httpx.HTTPError, ValueError, KeyError):
                    active = 0
                rows = database.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1",
                    [self.stack.database_name],
                ).fetchall()
                self.samples.append(
                    Sample(time.monotonic(), rss_bytes(daphne), group_rss(worker), active, dict(rows))
                )
                self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def between(self, start: float, end: float) -> list[Sample]:
        return [sample for sample in list(self.samples) if start <= sample.at <= end]


# --- customers -------------------------------------------------------------------------------


@dataclass
class Reply:
    """One reply as a customer saw it."""

    ref: str
    tokens: int
    conversation_id: str = ""
    token: str = ""
    address: str = ""
    reply_id: int | None = None
    sent_wall: float = 0.0
    sent: float = 0.0
    first_delta: float | None = None
    first_delta_wall: float | None = None
    accepted_wall: float | None = None
    deltas: list[tuple[int, str]] = field(default_factory=list)
    outcome: str = "unfinished"  # "done", "error:<code>", "unfinished"
    done_text: str | None = None
    saved_text: str | None = None
    problem: str = ""

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_delta is None else self.first_delta - self.sent

    def check(self) -> None:
        """Name what is wrong with the relay of this reply, if anything."""
        expected = expected_text(self.tokens)
        seqs = [seq for seq, _ in self.deltas]
        relayed = "".join(text for _, text in self.deltas)
        if self.outcome != "done":
            self.problem = self.outcome
        elif seqs != list(range(len(seqs))):
            self.problem = "deltas out of sequence (gap or duplicate)"
        elif relayed != self.done_text:
            self.problem = "deltas differ from reply.done"
        elif self.saved_text is not None and relayed != self.saved_text:
            self.problem = "deltas differ from the saved reply"
        elif self.saved_text is None:
            self.problem = "no saved reply"
        elif relayed != expected:
            self.problem = "text differs from what the model sent"


def client_address(index: int) -> str:
    """A distinct customer address in 10.0.0.0/8 for each index."""
    index += 1
    return f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"


class Customer:
    """One customer: a conversation, a websocket after hello, and messages sent one after another."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient, index: int, label: str) -> None:
        self.stack = stack
        self.http = http
        self.index = index
        self.label = label
        self.address = client_address(index)
        self.conversation: dict[str, Any] = {}
        self.socket: Any = None
        self.replies: list[Reply] = []
        self._frames_by_reply: dict[int, list[tuple[float, float, dict[str, Any]]]] = {}

    async def open(self) -> None:
        response = await self.http.post(
            "/api/widget/conversations", json={"locale": "en"}, headers={"X-Forwarded-For": self.address}
        )
        if response.status_code != 201:
            raise RuntimeError(
                f"conversation creation answered {response.status_code}: {response.text[:200]}"
            )
        self.conversation = response.json()
        self.socket = await websockets.connect(
            self.stack.ws_base + self.conversation["ws_path"],
            origin=Origin(self.stack.base_url),
            additional_headers={"X-Forwarded-For": self.address},
            open_timeout=60,
            ping_interval=None,
            max_size=None,
        )
        await self.socket.send(json.dumps({"type": "hello", "token": self.conversation["token"]}))
        while True:
            frame = json.loads(await asyncio.wait_for(self.socket.recv(), 60))
            if frame["type"] == "ready":
                return
            if frame["type"] == "error":
                raise RuntimeError(f"hello refused: {frame}")

    async def ask(self, number: int, tokens: int, deadline: float) -> Reply:
        """Send one message and read frames until its reply is done, failed or the deadline passes."""
        reply = Reply(
            ref=f"{self.label}.{self.index}.{number}",
            tokens=tokens,
            conversation_id=self.conversation["id"],
            token=self.conversation["token"],
            address=self.address,
        )
        self.replies.append(reply)
        client_id = str(uuid.uuid4())
        frame = {
            "type": "message",
            "client_id": client_id,
            "text": f"Where is my parcel? [tokens={tokens}] [ref={reply.ref}]",
            "attachments": [],
        }
        reply.sent_wall = time.time()
        reply.sent = time.perf_counter()
        await self.socket.send(json.dumps(frame))
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return reply
                received = json.loads(await asyncio.wait_for(self.socket.recv(), remaining))
                now, now_wall = time.perf_counter(), time.time()
                kind = received.get("type")
                if kind == "message.accepted" and received.get("client_id") == client_id:
                    reply.reply_id = received.get("reply_id")
                    reply.accepted_wall = now_wall
                    for earlier in self._frames_by_reply.pop(reply.reply_id, []):
                        if self._take(reply, *earlier):
                            return reply
                    continue
                if kind == "error" and received.get("client_id") == client_id:
                    reply.outcome = f"error:{received.get('code')}"
                    return reply
                reply_id = received.get("reply_id")
                if reply_id is None:
                    continue
                if reply.reply_id is None:
                    # A frame of this reply before message.accepted named it: keep it for then.
                    self._frames_by_reply.setdefault(reply_id, []).append((now, now_wall, received))
                elif reply_id == reply.reply_id and self._take(reply, now, now_wall, received):
                    return reply
        except (TimeoutError, websockets.ConnectionClosed):
            return reply

    @staticmethod
    def _take(reply: Reply, now: float, now_wall: float, frame: dict[str, Any]) -> bool:
        """Apply one frame of the reply; True when the reply is finished."""
        kind = frame["type"]
        if kind == "reply.delta":
            if reply.first_delta is None:
                reply.first_delta, reply.first_delta_wall = now, now_wall
            reply.deltas.append((int(frame["seq"]), str(frame["text"])))
        elif kind == "reply.done":
            reply.outcome = "done"
            reply.done_text = str((frame.get("message") or {}).get("text", ""))
            return True
        elif kind == "reply.error":
            reply.outcome = f"error:{frame.get('code')}"
            return True
        return False

    async def close(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.socket.close(), 5)


async def fetch_saved_texts(http: httpx.AsyncClient, replies: list[Reply]) -> None:
    """The saved text of every reply, from each conversation's history (the REST API)."""
    by_conversation: dict[str, list[Reply]] = {}
    for reply in replies:
        by_conversation.setdefault(reply.conversation_id, []).append(reply)
    limit = asyncio.Semaphore(20)

    async def one(conversation_id: str, group: list[Reply]) -> None:
        async with limit:
            response = await http.get(
                f"/api/widget/conversations/{conversation_id}/messages",
                headers={"Authorization": f"Bearer {group[0].token}", "X-Forwarded-For": group[0].address},
            )
        if response.status_code != 200:
            return
        saved = {message["id"]: message for message in response.json()["messages"]}
        for reply in group:
            message = saved.get(reply.reply_id)
            if message is not None:
                reply.saved_text = message["text"]

    await asyncio.gather(*(one(key, group) for key, group in by_conversation.items()))


# --- the direct baseline ---------------------------------------------------------------------


async def direct_first_tokens(pace_url: str, customers: int, rounds: int, tokens: int) -> list[float]:
    """Time to first token of clients streaming from the pace server itself, `customers` at once.

    Each client opens its keep-alive connection first and speaks HTTP/1.1 itself: with 200 streams on
    two cores, a full HTTP client spends more time building requests than the model takes to answer.
    """
    host, port = pace_url.removeprefix("http://").split(":")

    async def client(index: int, start: asyncio.Event) -> list[float]:
        reader, writer = await asyncio.open_connection(host, int(port), limit=2**20)
        times = []
        try:
            await start.wait()
            for number in range(rounds):
                body = json.dumps(
                    {
                        "model": MODEL,
                        "stream": True,
                        "messages": [
                            {
                                "role": "user",
                                "content": f"Where? [tokens={tokens}] [ref=direct.{index}.{number}]",
                            }
                        ],
                    }
                ).encode()
                request = (
                    f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                started = time.perf_counter()
                writer.write(request)
                first = None
                while True:
                    line = await reader.readline()
                    if not line:
                        break
                    if first is None and line.startswith(b"data: {") and _carries_text(line.decode()):
                        first = time.perf_counter() - started
                    if line.startswith(b"data: [DONE]"):
                        await reader.readuntil(b"0\r\n\r\n")
                        break
                if first is not None:
                    times.append(first)
        finally:
            writer.close()
        return times

    start = asyncio.Event()
    clients = [asyncio.create_task(client(index, start)) for index in range(customers)]
    await asyncio.sleep(0.5)  # every connection open before the first request
    start.set()
    results = await asyncio.gather(*clients)
    return [value for times in results for value in times]


def _carries_text(line: str) -> bool:
    """Whether an SSE data line of a chat-completion chunk carries content."""
    try:
        chunk = json.loads(line[len("data: ") :])
        return bool(chunk["choices"] and chunk["choices"][0]["delta"].get("content"))
    except (ValueError, KeyError, IndexError, TypeError):
        return False


# --- scenarios -------------------------------------------------------------------------------


@dataclass
class LoadResult:
    customers: int
    rounds: int
    replies: list[Reply]
    direct: list[float]
    seconds: float
    samples: list[Sample]
    failed_to_open: int = 0
    # daphne's and the worker's CPU time while the messages were answered.
    daphne_cpu: float = 0.0
    worker_cpu: float = 0.0

    @property
    def first_tokens(self) -> list[float]:
        return [reply.time_to_first_token for reply in self.replies if reply.time_to_first_token is not None]

    @property
    def platform_cpu(self) -> float:
        return self.daphne_cpu + self.worker_cpu

    @property
    def cpu_per_reply(self) -> float:
        """Seconds of daphne's and the worker's CPU per reply answered."""
        return self.platform_cpu / max(len(self.replies), 1)

    @property
    def broken(self) -> list[Reply]:
        return [reply for reply in self.replies if reply.problem]


async def wait_until_quiet(stack: Stack, http: httpx.AsyncClient, seconds: float = 120) -> bool:
    """Wait until no reply is streaming at the model or waiting in the database."""
    deadline = time.monotonic() + seconds
    with psycopg.connect(stack.database_url, autocommit=True) as database:
        while time.monotonic() < deadline:
            active = (await http.get(f"{stack.pace_url}/stats")).json()["active_streams"]
            try:
                row = database.execute(
                    "SELECT count(*) FROM conversations_message WHERE status = 'streaming'"
                ).fetchone()
                waiting = int(row[0]) if row else 0
            except psycopg.Error:
                waiting = 0
            if active == 0 and waiting == 0:
                return True
            await asyncio.sleep(0.2)
    return False


async def run_load(
    stack: Stack,
    http: httpx.AsyncClient,
    sampler: Sampler,
    *,
    label: str,
    customers: int,
    rounds: int,
    first_index: int,
    deadline_seconds: float,
) -> LoadResult:
    """`customers` customers open their conversations, then all send `rounds` messages one after another."""
    print(f"  {label}: direct baseline ({customers} at once × {rounds})…", flush=True)
    direct = await direct_first_tokens(stack.pace_url, customers, rounds, REPLY_TOKENS)
    print(f"  {label}: opening {customers} conversations…", flush=True)
    people = [Customer(stack, http, first_index + index, label) for index in range(customers)]
    opening = asyncio.Semaphore(50)

    async def open_one(customer: Customer) -> bool:
        async with opening:
            try:
                await customer.open()
                return True
            except Exception as error:
                print(f"    customer {customer.index} could not open: {error}", flush=True)
                return False

    opened = await asyncio.gather(*(open_one(customer) for customer in people))
    ready = [customer for customer, ok in zip(people, opened, strict=True) if ok]
    print(f"  {label}: {len(ready)} customers send {rounds} message(s) each…", flush=True)
    cpu_before = platform_cpu_seconds(stack)
    started = time.monotonic()
    deadline = started + deadline_seconds

    async def converse(customer: Customer) -> None:
        for number in range(rounds):
            reply = await customer.ask(number, REPLY_TOKENS, deadline)
            if reply.outcome != "done":
                return

    await asyncio.gather(*(converse(customer) for customer in ready))
    seconds = time.monotonic() - started
    cpu_after = platform_cpu_seconds(stack)
    replies = [reply for customer in ready for reply in customer.replies]
    replies += [
        Reply(ref=f"{label}.{customer.index}.unsent", tokens=REPLY_TOKENS, outcome="unfinished")
        for customer in ready
        for _ in range(rounds - len(customer.replies))
    ]
    await asyncio.gather(*(customer.close() for customer in people))
    await fetch_saved_texts(http, [reply for reply in replies if reply.reply_id is not None])
    for reply in replies:
        reply.check()
    samples = sampler.between(started, time.monotonic())
    if not await wait_until_quiet(stack, http):
        print(f"  {label}: replies still streaming two minutes after the deadline", flush=True)
    return LoadResult(
        customers,
        rounds,
        replies,
        direct,
        seconds,
        samples,
        failed_to_open=customers - len(ready),
        daphne_cpu=cpu_after[0] - cpu_before[0],
        worker_cpu=cpu_after[1] - cpu_before[1],
    )


@dataclass
class IdleResult:
    sockets: int
    opened: int
    alive_after: int
    rss_before: int
    rss_idle: int
    rss_streaming_peak: int
    streaming: LoadResult | None


async def run_idle_sockets(
    stack: Stack, http: httpx.AsyncClient, sampler: Sampler, *, sockets: int, streaming: int, first_index: int
) -> IdleResult:
    """Open `sockets` hello'd websockets on one daphne, then stream replies to `streaming` of them."""
    daphne = stack.processes["daphne"].pid
    await asyncio.sleep(1)
    rss_before = rss_bytes(daphne)
    print(f"  idle: opening {sockets} hello'd websockets…", flush=True)
    people = [Customer(stack, http, first_index + index, "idle") for index in range(sockets)]
    opening = asyncio.Semaphore(50)
    failures: list[str] = []

    async def open_one(customer: Customer) -> bool:
        async with opening:
            try:
                await customer.open()
                return True
            except Exception as error:
                failures.append(str(error)[:200])
                return False

    opened_flags = await asyncio.gather(*(open_one(customer) for customer in people))
    held = [customer for customer, ok in zip(people, opened_flags, strict=True) if ok]
    if failures:
        print(f"    {len(failures)} could not open, e.g. {failures[0]}", flush=True)
    await asyncio.sleep(2)
    rss_idle = rss_bytes(daphne)
    print(f"  idle: {len(held)} open; replies stream to {streaming} of them…", flush=True)
    started = time.monotonic()
    deadline = started + 240
    talkers = held[:streaming]
    await asyncio.gather(*(customer.ask(0, REPLY_TOKENS, deadline) for customer in talkers))
    seconds = time.monotonic() - started
    samples = sampler.between(started, time.monotonic())
    replies = [reply for customer in talkers for reply in customer.replies]
    await fetch_saved_texts(http, [reply for reply in replies if reply.reply_id is not None])
    for reply in replies:
        reply.check()

    async def alive(customer: Customer) -> bool:
        try:
            waiter = await customer.socket.ping()
            await asyncio.wait_for(waiter, 30)
            return True
        except Exception:
            return False

    alive_flags = await asyncio.gather(*(alive(customer) for customer in held))
    await asyncio.gather(*(customer.close() for customer in people))
    await wait_until_quiet(stack, http)
    return IdleResult(
        sockets=sockets,
        opened=len(held),
        alive_after=sum(alive_flags),
        rss_before=rss_before,
        rss_idle=rss_idle,
        rss_streaming_peak=max((sample.daphne_rss for sample in samples), default=rss_idle),
        streaming=LoadResult(streaming, 1, replies, [], seconds, samples),
    )


# --- where the time goes ---------------------------------------------------------------------


def _parse_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def breakdown(stack: Stack, replies: list[Reply]) -> list[tuple[str, list[float]]]:
    """Per-stage durations (seconds) along the path of each reply, from wall-clock timestamps.

    The customer's message and the reply row carry their creation times and the reply its claim
    time and first-token latency (the database); the pace server logs when each request arrived and
    when its first token left; the customer knows when it sent the frame and got the first delta.
    """
    streams = {}
    if stack.pace_log.exists():
        for line in stack.pace_log.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "stream" and record.get("ref"):
                streams[record["ref"]] = record
    ids = [reply.reply_id for reply in replies if reply.reply_id is not None]
    rows: dict[int, dict[str, Any]] = {}
    customer_rows: list[Any] = []
    with psycopg.connect(stack.database_url, autocommit=True) as database, contextlib.suppress(psycopg.Error):
        cursor = database.execute("SELECT * FROM conversations_message WHERE id = ANY(%s)", [ids])
        names = [column.name for column in cursor.description or []]
        rows = {row[names.index("id")]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
        customer_rows = database.execute(
            "SELECT conversation_id, created_at, text FROM conversations_message WHERE role = 'customer'"
        ).fetchall()
    saved_at = {}
    for _conversation, created_at, text in customer_rows:
        found = re.search(r"\[ref=([\w.-]+)\]", text or "")
        if found:
            saved_at[found.group(1)] = _parse_time(created_at)
    stages: dict[str, list[float]] = {}

    def add(name: str, start: float | None, end: float | None) -> None:
        if start is not None and end is not None:
            stages.setdefault(name, []).append(end - start)

    for reply in replies:
        row = rows.get(reply.reply_id or -1)
        stream = streams.get(reply.ref)
        if row is None or stream is None or reply.first_delta_wall is None:
            continue
        created = _parse_time(row.get("created_at"))
        claimed = _parse_time(row.get("generation_started_at"))
        latency = row.get("first_token_latency_ms")
        worker_first_token = created + latency / 1000 if created is not None and latency is not None else None
        add(
            "1. frame sent → customer message saved (daphne: consumer, services)",
            reply.sent_wall,
            saved_at.get(reply.ref),
        )
        add(
            "2. reply row created → claimed by the worker (on_commit, enqueue, broker, task start)",
            created,
            claimed,
        )
        add(
            "3. claimed → request at the model (context, prompt, HTTP client, connect)",
            claimed,
            stream["received"],
        )
        add(
            "4. the model: request → first token sent (the pace server's 20 ms)",
            stream["received"],
            stream["first_token"],
        )
        add(
            "5. first token sent → worker has it (HTTP read, SSE parse, queue)",
            stream["first_token"],
            worker_first_token,
        )
        add(
            "6. worker has it → delta at the customer (cache write, group_send, daphne, socket)",
            worker_first_token,
            reply.first_delta_wall,
        )
        add(
            "(alongside 2–6) frame sent → message.accepted at the customer (the consumer's whole save)",
            reply.sent_wall,
            reply.accepted_wall,
        )
        add("total: frame sent → first delta (time to first token)", reply.sent_wall, reply.first_delta_wall)
    return list(stages.items())


def first_token_costs(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """bench/first_token_costs.py run with the benchmark's environment; empty if it could not run."""
    result = subprocess.run(
        [sys.executable, "bench/first_token_costs.py"],
        cwd=REPOSITORY_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        print(f"  bench/first_token_costs.py failed:\n{result.stderr[-2000:]}", flush=True)
        return {}
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


# --- the report ------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine_description(stack: Stack) -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    postgres = "?"
    with contextlib.suppress(psycopg.Error), psycopg.connect(stack.database_url) as database:
        row = database.execute("SHOW server_version").fetchone()
        limit = database.execute("SHOW max_connections").fetchone()
        postgres = f"{row[0] if row else '?'} (max_connections {limit[0] if limit else '?'})"
    redis_version = "?"
    if shutil.which("redis-server"):
        output = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        found = re.search(r"v=(\S+)", output)
        redis_version = found.group(1) if found else output.strip()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- CPU: {cpu}, {usable} logical CPUs usable ({os.cpu_count()} present); memory {memory}",
        f"- {platform.system()} {platform.release()}; Python {platform.python_version()}",
        f"- Django {_version('django')}, Channels {_version('channels')}, channels-redis "
        f"{_version('channels-redis')}, daphne {_version('daphne')}, Celery {_version('celery')}, "
        f"psycopg {_version('psycopg')}, httpx {_version('httpx')}",
        f"- PostgreSQL {postgres}, Redis {redis_version}",
    ]


def _mib(value: float) -> str:
    return f"{value / 1024 / 1024:.1f} MiB"


@dataclass
class Report:
    machine: list[str]
    loads: list[tuple[str, LoadResult]]
    idle: IdleResult | None
    stages: list[tuple[str, list[float]]]
    costs: dict[str, list[dict[str, Any]]]
    worker_rss_idle: int
    load_average: tuple[tuple[float, float, float], tuple[float, float, float]]
    started: str
    seconds: float
    worker_processes: int
    web_command: str

    def all_replies(self) -> list[Reply]:
        replies = [reply for _, load in self.loads for reply in load.replies]
        if self.idle and self.idle.streaming:
            replies += self.idle.streaming.replies
        return replies

    def added(self, load: LoadResult, fraction: float) -> float | None:
        if not load.first_tokens or not load.direct:
            return None
        return percentile(load.first_tokens, fraction) - percentile(load.direct, fraction)

    def results_section(self) -> str:
        lines = [
            RESULTS_SECTION,
            "",
            "Replies through the platform in its production shape, measured from outside by "
            f"`make bench` (`bench/replies.py`): one daphne (`{self.web_command}`), one "
            "`celery -A cs_platform worker` with "
            "its settings from the environment only, PostgreSQL, a Redis of its own, and "
            f"`bench/pace_server.py`, an OpenAI-compatible server that sends the first token "
            f"{FIRST_TOKEN_MS} ms after the request and then {TOKENS_PER_SECOND} tokens/s per stream, "
            f"however many streams it serves ({REPLY_TOKENS} tokens a reply). Customers come from "
            "distinct addresses behind a trusted proxy (X-Forwarded-For, TRUSTED_PROXIES=127.0.0.1/32, "
            "on the websocket upgrade too). Time to first token is from the message frame sent to "
            "the first `reply.delta` received; direct is a client streaming from the pace server "
            "itself with as many at once; added is platform minus direct at the same percentile.",
            "",
            f"- Date: {self.started}; the run took {self.seconds:.0f} s",
            *self.machine,
            f"- Worker: {self.worker_processes} process(es) in its process group (what the settings "
            "give); load average before and after the run: "
            + ", ".join(f"{a:.2f} {b:.2f} {c:.2f}" for a, b, c in self.load_average),
            "",
            "| customers at once | replies | platform p50 / p99 (ms) | direct p50 / p99 (ms) "
            "| added p50 / p99 (ms) | replies not intact | wall time (s) "
            "| CPU per reply, daphne / worker (ms) | DB connections peak (daphne / worker) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, load in self.loads:
            platform_times, direct = load.first_tokens, load.direct
            peak = _connection_peaks(load.samples)
            lines.append(
                f"| {label} | {len(load.replies)} "
                f"| {_pair(platform_times)} | {_pair(direct)} "
                f"| {milliseconds(self.added(load, 0.5))} / {milliseconds(self.added(load, 0.99))} "
                f"| {len(load.broken)} | {load.seconds:.1f} "
                f"| {load.daphne_cpu * 1000 / max(len(load.replies), 1):.0f} / "
                f"{load.worker_cpu * 1000 / max(len(load.replies), 1):.0f} "
                f"| {peak[0]} / {peak[1]} |"
            )
        replies = self.all_replies()
        broken = [reply for reply in replies if reply.problem]
        lines += [
            "",
            f"Relay integrity, every reply of every run: {len(replies)} replies, {len(broken)} not intact "
            "(deltas numbered from 0 without gap or duplicate, their concatenation equal to `reply.done`, "
            "to the saved reply and to the model's text; a reply that failed or did not finish in time "
            "counts as not intact).",
        ]
        problems: dict[str, int] = {}
        for reply in broken:
            problems[reply.problem] = problems.get(reply.problem, 0) + 1
        for problem, count in sorted(problems.items(), key=lambda item: -item[1]):
            lines.append(f"- {count}: {problem}")
        if self.idle is not None:
            idle = self.idle
            per_socket = (idle.rss_idle - idle.rss_before) / max(idle.opened, 1)
            streaming = idle.streaming
            lines += [
                "",
                f"Idle websockets on one daphne: {idle.opened} of {idle.sockets} opened and said hello; "
                f"{idle.alive_after} still answered a ping after replies streamed to "
                f"{len(streaming.replies) if streaming else 0} of them "
                f"({len(streaming.broken) if streaming else 0} not intact, "
                f"p50 / p99 time to first token {_pair(streaming.first_tokens) if streaming else '–'} ms). "
                f"daphne's memory: {_mib(idle.rss_before)} before, {_mib(idle.rss_idle)} with the "
                f"sockets open, {_mib(idle.rss_streaming_peak)} at most while streaming: "
                f"{per_socket / 1024:.1f} KiB per idle socket.",
            ]
        lines += ["", *self.worker_lines()]
        lines += ["", *self.targets()]
        return "\n".join(lines) + "\n"

    def worker_lines(self) -> list[str]:
        samples = [sample for _, load in self.loads for sample in load.samples]
        if self.idle and self.idle.streaming:
            samples += self.idle.streaming.samples
        busiest = max(samples, key=lambda sample: (sample.active_streams, sample.worker_rss), default=None)
        if busiest is None or busiest.active_streams == 0:
            return ["Worker memory: no reply was seen streaming at the model while sampling."]
        peak_rss = max(sample.worker_rss for sample in samples)
        return [
            f"Worker memory: {_mib(self.worker_rss_idle)} idle (all its processes); at most "
            f"{busiest.active_streams} replies streamed at once, with {_mib(busiest.worker_rss)} then "
            f"({_mib(busiest.worker_rss / busiest.active_streams)} per concurrent reply, "
            f"{_mib(max(busiest.worker_rss - self.worker_rss_idle, 0) / busiest.active_streams)} "
            "above idle); "
            f"{_mib(peak_rss)} at most during the runs. Database connections at most: "
            f"{max(s.connections.get(DAPHNE_APPLICATION_NAME, 0) for s in samples)} for daphne, "
            f"{max(s.connections.get(WORKER_APPLICATION_NAME, 0) for s in samples)} for the worker.",
        ]

    def targets(self) -> list[str]:
        loads = dict(self.loads)
        one = loads.get("1")
        many = loads.get("200")
        replies = self.all_replies()
        broken = sum(1 for reply in replies if reply.problem)
        rows = []

        def row(target: str, measured: str, met: bool | None, reason: str = "") -> None:
            verdict = "–" if met is None else ("yes" if met else "no")
            rows.append(f"| {target} | {measured} | {verdict} | {reason} |")

        def added_ms(load: LoadResult | None, fraction: float) -> float | None:
            value = self.added(load, fraction) if load else None
            return None if value is None else value * 1000

        def largest_stages(fraction: float) -> str:
            platform_stages = [
                (name, percentile(values, fraction) * 1000)
                for name, values in self.stages
                if name[:2] in {"1.", "2.", "3.", "5.", "6."}
            ]
            top = sorted(platform_stages, key=lambda item: -item[1])[:2]
            if not top:
                return "see where the time goes below"
            return "largest: " + "; ".join(f"{name.split(' (', 1)[0]} {value:.0f} ms" for name, value in top)

        p50 = added_ms(one, 0.5)
        row("added time to first token, 1 customer, p50 ≤ 15 ms", _or_dash(p50),
            None if p50 is None else p50 <= 15,
            "" if p50 is None or p50 <= 15 else largest_stages(0.5))  # fmt: skip
        p99 = added_ms(one, 0.99)
        row("added time to first token, 1 customer, p99 ≤ 50 ms", _or_dash(p99),
            None if p99 is None else p99 <= 50,
            "" if p99 is None or p99 <= 50 else largest_stages(0.99))  # fmt: skip
        p99_many = added_ms(many, 0.99)
        reason = ""
        if many is not None and p99_many is not None and p99_many > 150:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            reason = (
                f"daphne and the worker spent {many.cpu_per_reply * 1000:.0f} ms of CPU per reply "
                f"({many.platform_cpu:.1f} s for {len(many.replies)} replies in {many.seconds:.1f} s, on "
                f"{cores} cores shared with the benchmark's clients and the model server): the first "
                "tokens wait for the CPU"
            )
            if self.worker_processes > 2:
                reason += (
                    f"; and the worker runs {self.worker_processes - 1} pool processes, one reply each "
                    "for its whole length"
                )
        row("added time to first token, 200 customers at once, p99 ≤ 150 ms", _or_dash(p99_many),
            None if p99_many is None else p99_many <= 150, reason)  # fmt: skip
        row("broken replies: 0", str(broken), broken == 0, "" if broken == 0 else "see relay integrity above")
        if self.idle is not None:
            held = min(self.idle.opened, self.idle.alive_after)
            row("idle sockets per daphne process with 100 streaming ≥ 2,000", str(held), held >= 2000,
                "" if held >= 2000 else f"{self.idle.sockets} were tried")  # fmt: skip
        return [
            "Targets (issue 8):",
            "",
            "| target | measured | met? | reason |",
            "| --- | --- | --- | --- |",
            *rows,
        ]

    def breakdown_section(self) -> str:
        lines = [
            BREAKDOWN_SECTION,
            "",
            "For one customer (replies in a row), from wall-clock timestamps along the path of each "
            "reply: the database's creation, claim and first-token times, the pace server's log of "
            "when each request arrived and its first token left, and the customer's own clock. "
            "Median and p99 in milliseconds.",
            "",
            "| stage | p50 (ms) | p99 (ms) |",
            "| --- | --- | --- |",
        ]
        for name, values in self.stages:
            lines.append(
                f"| {name} | {statistics.median(values) * 1000:.1f} | {percentile(values, 0.99) * 1000:.1f} |"
            )
        if not self.stages:
            lines.append("| (no timestamps could be matched) | – | – |")
        lines += [
            "",
            "What the steps on that path cost, each measured alone on the same machine and database "
            "(`bench/first_token_costs.py`, median and minimum of 20 runs, in milliseconds); whether a "
            "reply pays a set-up step shows in the timeline below it:",
            "",
            "| step | where | median (ms) | min (ms) |",
            "| --- | --- | --- | --- |",
        ]
        for cost in self.costs.get("costs", []):
            if "skipped" in cost:
                lines.append(f"| {cost['step']} | {cost['where']} | skipped: {cost['skipped']} | |")
            else:
                lines.append(
                    f"| {cost['step']} | {cost['where']} | {cost['median_ms']:.2f} | {cost['min_ms']:.2f} |"
                )
        if not self.costs.get("costs"):
            lines.append("| (bench/first_token_costs.py did not run) | | | |")
        timeline = self.costs.get("worker_timeline", [])
        how = next((moment["moment"] for moment in timeline if moment["moment"].startswith("how: ")), "how: ")
        moments = [moment for moment in timeline if not moment["moment"].startswith("how: ")]
        if moments:
            lines += [
                "",
                "The worker's part in place: `reply_generate` run "
                + how.removeprefix("how: ")
                + ", with wrappers marking when each step starts and ends; milliseconds from the start, "
                "median of 15 replies (two tokens each; the model answers 20 ms after the request):",
                "",
                "| moment | ms from start |",
                "| --- | --- |",
                *(f"| {moment['moment']} | {moment['median_ms']:.1f} |" for moment in moments),
            ]
        return "\n".join(lines) + "\n"


def _pair(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{milliseconds(statistics.median(values))} / {milliseconds(percentile(values, 0.99))}"


def _or_dash(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _connection_peaks(samples: list[Sample]) -> tuple[int, int]:
    return (
        max((sample.connections.get(DAPHNE_APPLICATION_NAME, 0) for sample in samples), default=0),
        max((sample.connections.get(WORKER_APPLICATION_NAME, 0) for sample in samples), default=0),
    )


def replace_section(document: str, title: str, section: str, before: str | None = None) -> str:
    """Replace the section called `title` (up to the next `## `), or add it (before `before`, if there)."""
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: section + "\n", document, count=1)
    if before and before in document:
        index = document.index(before)
        return document[:index] + section + "\n" + document[index:]
    if not document:
        document = "# Benchmarks\n\n"
    return document.rstrip("\n") + "\n\n" + section


# --- main ------------------------------------------------------------------------------------


async def benchmark(stack: Stack, *, quick: bool, idle_sockets: int) -> Report:
    started_at = time.monotonic()
    load_before = os.getloadavg()
    sampler = Sampler(stack).start()
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    scenarios = [
        ("1", 1, 10 if quick else 30),
        ("10", 10, 2 if quick else 5),
        ("20" if quick else "50", 20 if quick else 50, 1 if quick else 2),
    ]
    if not quick:
        scenarios.append(("200", 200, 1))
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, limits=limits, timeout=60) as http:
            print("warming up (three replies through the whole path)…", flush=True)
            warm = await run_load(
                stack,
                http,
                sampler,
                label="warm-up",
                customers=1,
                rounds=3,
                first_index=900_000,
                deadline_seconds=120,
            )
            if warm.broken:
                raise SystemExit(
                    "The warm-up replies did not come through: "
                    f"{[reply.problem for reply in warm.broken]}\n--- worker ---\n{stack.tail('worker')}"
                    f"\n--- daphne ---\n{stack.tail('daphne')}"
                )
            # A starting worker loads retrieval (jieba, the embedder) on a thread of its own for a few
            # seconds: measure the steady state, once the platform's processes have gone quiet.
            await wait_until_idle(stack)
            worker_rss_idle = group_rss(stack.processes["worker"].pid)
            worker_processes = len(group_pids(stack.processes["worker"].pid))
            loads = []
            index = 0
            for label, customers, rounds in scenarios:
                print(f"{label} customer(s) at once, {rounds} message(s) each:", flush=True)
                load = await run_load(
                    stack, http, sampler, label=label, customers=customers, rounds=rounds,
                    first_index=index, deadline_seconds=150,
                )  # fmt: skip
                index += customers
                loads.append((label, load))
                print(f"  platform {_pair(load.first_tokens)} ms, direct {_pair(load.direct)} ms, "
                      f"{len(load.broken)} not intact, {load.seconds:.1f} s", flush=True)  # fmt: skip
            stages = breakdown(stack, loads[0][1].replies)
            print("the steps' costs, each alone (bench/first_token_costs.py)…", flush=True)
            costs = first_token_costs(stack)
            idle = None
            if idle_sockets:
                idle = await run_idle_sockets(
                    stack,
                    http,
                    sampler,
                    sockets=idle_sockets,
                    streaming=min(100, idle_sockets),
                    first_index=index,
                )
    finally:
        sampler.stop()
    return Report(
        machine=machine_description(stack),
        loads=loads,
        idle=idle,
        stages=stages,
        costs=costs,
        worker_rss_idle=worker_rss_idle,
        load_average=(load_before, os.getloadavg()),
        started=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.monotonic() - started_at,
        worker_processes=worker_processes,
        web_command=stack.web_command,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="a short run while developing (1, 10, 20 customers)"
    )
    parser.add_argument(
        "--idle-sockets",
        type=int,
        default=None,
        help="idle websockets to open (default 2000; 300 with --quick)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()
    idle_sockets = (
        arguments.idle_sockets if arguments.idle_sockets is not None else (300 if arguments.quick else 2000)
    )
    limit = _raise_open_file_limit()
    if limit < idle_sockets * 2 + 200:
        print(f"the open-file limit is {limit}: fewer sockets may open than asked for", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        tempfile.TemporaryDirectory(prefix="cs-bench-") as directory,
        production_stack(Path(directory)) as stack,
    ):
        try:
            report = asyncio.run(benchmark(stack, quick=arguments.quick, idle_sockets=idle_sockets))
        except BaseException:
            for name in ("worker", "daphne", "pace"):
                print(f"--- {name}.log ---\n{stack.tail(name)}", flush=True)
            raise
    results, stages = report.results_section(), report.breakdown_section()
    print()
    print(results)
    print(stages)
    if arguments.no_write:
        return
    document = BENCHMARKS_PATH.read_text() if BENCHMARKS_PATH.exists() else ""
    document = replace_section(document, RESULTS_SECTION, results, before="## Image preprocessing")
    document = replace_section(document, BREAKDOWN_SECTION, stages, before="## Image preprocessing")
    BENCHMARKS_PATH.write_text(document)
    print(f"updated {BENCHMARKS_PATH.relative_to(REPOSITORY_ROOT)}")


if __name__ == "__main__":
    main()
