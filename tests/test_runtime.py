"""The reply runtime: one `celery -A cs_platform worker` process streams many replies at once.

Each test starts a real worker with nothing but `--loglevel=INFO` (the pool and concurrency come from
settings) on the test database and the tests' Redis database, against a scripted inference server,
and listens on the conversations' channel-layer groups as the customers' sockets would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from conversations import events, replies, services
from conversations.models import Conversation, Message
from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering
from inference import runtime, tasks
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
ConversationFactory: Any = factories.ConversationFactory
BARRIER = {"type": "test.barrier"}
# The worker's libpq application name, so its connections can be told apart in pg_stat_activity.
WORKER_APPLICATION = "cs-runtime-test-worker"
WORKER_POOL_MAX_SIZE = 4


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child in its own process group that dies with this test run, even a killed one."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )


def _wait_until(
    predicate: Callable[[], bool], *, seconds: float, what: str, state: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f" ({state()})" if state else ""))
        time.sleep(0.05)


async def _wait_until_async(
    predicate: Callable[[], bool], *, seconds: float, what: str, state: Callable[[], str] | None = None
) -> None:
    await asyncio.to_thread(_wait_until, predicate, seconds=seconds, what=what, state=state)


@dataclass
class Stack:
    """A Celery worker (and, when asked, beat) as separate processes, like production's."""

    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]]

    def start_worker(self) -> None:
        log = self.logs / "worker.log"
        ready_before = log.read_text().count(" ready.") if log.exists() else 0
        self.processes["worker"] = _start(
            [sys.executable, "-m", "celery", "-A", "cs_platform", "worker", "--loglevel=INFO"], self.env, log
        )
        _wait_until(lambda: log.read_text().count(" ready.") > ready_before, seconds=60, what="the worker")

    def start_beat(self) -> None:
        self.processes["beat"] = _start(
            [sys.executable, "-m", "celery", "-A", "cs_platform", "beat", "--loglevel=INFO",
             f"--schedule={self.logs / 'beat-schedule'}"],
            self.env,
            self.logs / "beat.log",
        )  # fmt: skip

    def worker_log(self) -> str:
        return (self.logs / "worker.log").read_text()

    def kill_worker(self) -> None:
        """SIGKILL the worker's whole process group: no chance to save or say anything."""
        worker = self.processes["worker"]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)


@pytest.fixture
def stack_for(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start a worker against an inference server, with the test's database and Redis database."""
    database = settings.DATABASES["default"]
    redis_url = settings.REDIS_URL
    assert redis_url, "the runtime tests need REDIS_URL (make test sets it from TEST_REDIS_URL)"
    redis.Redis.from_url(redis_url).flushdb()
    logs = tmp_path / "logs"
    logs.mkdir()
    stacks: list[Stack] = []

    def start(base_url: str, model: str, **extra: str) -> Stack:
        env = {
            **os.environ,
            "DATABASE_URL": (
                f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
            ),
            "DATABASE_POOL_MAX_SIZE": str(WORKER_POOL_MAX_SIZE),
            "PGAPPNAME": WORKER_APPLICATION,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "runtime-test-secret",
            "INFERENCE_BASE_URL": base_url,
            "INFERENCE_MODEL": model,
            "MEDIA_ROOT": str(tmp_path / "media"),
            "REPLY_HEARTBEAT_SECONDS": "1",
            "REPLY_STALLED_AFTER_SECONDS": "5",
            "REPLY_SWEEP_INTERVAL_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
        for name in ("CELERY_WORKER_POOL", "REPLY_CONCURRENCY_PER_PROCESS", "CELERY_WORKER_CONCURRENCY"):
            if name not in extra:
                env.pop(name, None)
        stack = Stack(env=env, logs=logs, processes={})
        stacks.append(stack)
        stack.start_worker()
        return stack

    try:
        yield start
    finally:
        for stack in stacks:
            for process in stack.processes.values():
                stop_process_group(process)
        for log in sorted(logs.iterdir()):
            if log.suffix == ".log":
                print(f"----- {log.name} -----\n{log.read_text()[-4000:]}")


@pytest.fixture
def scripted_server() -> Iterator[ScriptedInferenceServer]:
    with ScriptedInferenceServer(default=Script(model="scripted-model")) as server:
        yield server


class Customers:
    """The customers' sockets: one channel in each conversation's group."""

    def __init__(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        self.layer = layer
        self.channels: dict[int, str] = {}

    async def join(self, conversation: Conversation, reply_id: int) -> None:
        channel = await self.layer.new_channel()
        await self.layer.group_add(events.conversation_group(conversation.pk), channel)
        self.channels[reply_id] = channel

    async def until(self, reply_id: int, *types: str, wait: float = 30) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        while not received or received[-1]["type"] not in types:
            received.append(await asyncio.wait_for(self.layer.receive(self.channels[reply_id]), wait))
        return received

    async def rest(self, reply_id: int) -> list[dict[str, Any]]:
        """Everything sent to the reply's group so far: a barrier sent now arrives after all of it."""
        await self.layer.send(self.channels[reply_id], BARRIER)
        return (await self.until(reply_id, BARRIER["type"]))[:-1]


@database_sync_to_async
def _queued_reply(text: str = "Where is my parcel?") -> tuple[Conversation, int]:
    """A customer message and its reply, queued (the `enqueued_replies` fixture keeps it here)."""
    conversation = ConversationFactory(locale="en")
    posted = services.message_post(conversation=conversation, text=text)
    assert posted.reply is not None
    return conversation, posted.reply.pk


async def _queue(customers: Customers, count: int, text: str = "Where is my parcel?") -> list[int]:
    reply_ids = []
    for _ in range(count):
        conversation, reply_id = await _queued_reply(text)
        await customers.join(conversation, reply_id)
        reply_ids.append(reply_id)
    return reply_ids


async def _enqueue(*reply_ids: int) -> None:
    """Send the reply tasks to the broker, as `reply_generation_start` does on commit."""
    for reply_id in reply_ids:
        await asyncio.to_thread(tasks.reply_generate.delay, reply_id)


@database_sync_to_async
def _reply(reply_id: int) -> Message:
    return Message.objects.get(pk=reply_id)


@database_sync_to_async
def _statuses(reply_ids: list[int]) -> dict[int, str]:
    return dict(Message.objects.filter(pk__in=reply_ids).values_list("pk", "status"))


def _open_streams(server: ScriptedInferenceServer) -> int:
    return sum(1 for r in server.chat_requests if not r.completed and r.disconnected_at is None)


def _worker_connections() -> int:
    """The worker's connections to PostgreSQL right now."""
    database = settings.DATABASES["default"]
    with psycopg.connect(
        host=database["HOST"], port=database["PORT"], user=database["USER"], dbname="postgres"
    ) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [WORKER_APPLICATION]
        ).fetchone()
    assert row is not None
    return int(row[0])


def _assert_relayed_whole(frames: list[dict[str, Any]], reply_id: int, saved: Message) -> None:
    """Deltas numbered from 0 without gap or duplicate, and together the saved text."""
    deltas = [frame for frame in frames if frame["type"] == "reply.delta"]
    assert [(d["reply_id"], d["seq"]) for d in deltas] == [(reply_id, seq) for seq in range(len(deltas))]
    assert "".join(d["text"] for d in deltas) == saved.text


async def test_it_streams_twenty_replies_at_once_in_one_worker_process(
    stack_for: Callable[..., Stack], scripted_server: ScriptedInferenceServer
) -> None:
    tokens = [f"word{index} " for index in range(50)]
    gate = threading.Event()
    scripted_server.default = Script(tokens=tokens, token_delay=0.05, gate=gate, model="scripted-model")
    # The first streams wait at the gate for the last to open: give them longer than that.
    stack = stack_for(scripted_server.base_url, "scripted-model", INFERENCE_TOKEN_TIMEOUT="90")
    customers = Customers()
    reply_ids = await _queue(customers, 20)

    await _enqueue(*reply_ids)
    # Every stream holds after its first token until all twenty are open: one process streams
    # them side by side, however slowly a loaded machine starts them.
    await _wait_until_async(
        lambda: _open_streams(scripted_server) == 20,
        seconds=60,
        what="20 streams open at once",
        state=lambda: (
            f"{_open_streams(scripted_server)} open of {len(scripted_server.chat_requests)} requests"
        ),
    )
    connections_while_streaming = _worker_connections()
    gate.set()
    received = {
        reply_id: await customers.until(reply_id, "reply.done", "reply.error") for reply_id in reply_ids
    }

    assert [frames[-1]["type"] for frames in received.values()] == ["reply.done"] * 20
    for reply_id, frames in received.items():
        saved = await _reply(reply_id)
        assert (saved.status, saved.text, saved.error_code) == ("complete", "".join(tokens), "")
        assert await customers.rest(reply_id) == []
        _assert_relayed_whole(frames, reply_id, saved)
    assert len(scripted_server.chat_requests) == 20
    # One worker process, one pool: twenty replies share a few database connections.
    assert 1 <= connections_while_streaming <= WORKER_POOL_MAX_SIZE
    assert [process.poll() for process in stack.processes.values()] == [None]


async def test_it_generates_a_job_delivered_twice_once(
    stack_for: Callable[..., Stack], scripted_server: ScriptedInferenceServer
) -> None:
    scripted_server.default = Script(tokens=["Only", " once"], token_delay=0.2, model="scripted-model")
    stack = stack_for(scripted_server.base_url, "scripted-model")
    customers = Customers()
    [reply_id] = await _queue(customers, 1)

    # Two deliveries of the same job (a redelivery after a lost acknowledgement), run side by side.
    for _ in range(2):
        await asyncio.to_thread(tasks.reply_generate.apply_async, (reply_id,), task_id="redelivered-job")
    frames = await customers.until(reply_id, "reply.done", "reply.error")
    await _wait_until_async(
        lambda: f"Reply {reply_id} already claimed" in stack.worker_log(),
        seconds=15,
        what="the second delivery to find the reply claimed",
    )

    frames += await customers.rest(reply_id)
    saved = await _reply(reply_id)
    assert [frame["type"] for frame in frames if frame["type"] != "reply.delta"] == ["reply.done"]
    assert (saved.status, saved.text) == ("complete", "Only once")
    _assert_relayed_whole(frames, reply_id, saved)
    assert len(scripted_server.chat_requests) == 1


async def test_it_reports_replies_of_a_killed_worker_as_worker_lost_within_a_minute(
    stack_for: Callable[..., Stack], scripted_server: ScriptedInferenceServer
) -> None:
    tokens = [f"step{index} " for index in range(600)]
    scripted_server.default = Script(tokens=tokens, token_delay=0.1, model="scripted-model")
    stack = stack_for(scripted_server.base_url, "scripted-model")
    stack.start_beat()
    customers = Customers()
    reply_ids = await _queue(customers, 3)
    await _enqueue(*reply_ids)
    seen = {reply_id: await customers.until(reply_id, "reply.delta") for reply_id in reply_ids}

    stack.kill_worker()
    killed_at = time.monotonic()
    # Its supervisor starts a new worker, which runs the sweeps beat schedules.
    stack.start_worker()
    finals = {
        reply_id: await customers.until(reply_id, "reply.done", "reply.error", wait=60)
        for reply_id in reply_ids
    }

    assert time.monotonic() - killed_at < 60
    for reply_id in reply_ids:
        frames = seen[reply_id] + finals[reply_id]
        error = frames[-1]
        assert (error["type"], error["reply_id"], error["code"]) == ("reply.error", reply_id, "worker_lost")
        saved = await _reply(reply_id)
        assert (saved.status, saved.error_code) == ("failed", "worker_lost")
        # What the customer saw before the worker died is kept, and nothing came after the error.
        assert saved.text == error["message"]["text"]
        assert "".join(f["text"] for f in frames if f["type"] == "reply.delta").startswith(saved.text)
        assert await customers.rest(reply_id) == []
    # The dead worker's jobs are not started again by the new one.
    assert len(scripted_server.chat_requests) == 3


async def test_it_cancels_one_reply_while_the_others_stream_on(
    stack_for: Callable[..., Stack], scripted_server: ScriptedInferenceServer
) -> None:
    tokens = [f"part{index} " for index in range(40)]
    scripted_server.default = Script(tokens=tokens, token_delay=0.1, model="scripted-model")
    stack_for(scripted_server.base_url, "scripted-model")
    customers = Customers()
    reply_ids = await _queue(customers, 3)
    cancelled_id = reply_ids[0]
    await _enqueue(*reply_ids)
    before = await customers.until(cancelled_id, "reply.delta")

    reply = await _reply(cancelled_id)
    outcome = await database_sync_to_async(replies.reply_cancel)(
        conversation=await database_sync_to_async(lambda: reply.conversation)(), reply_id=cancelled_id
    )
    assert outcome.cancelled_here is False
    frames = before + await customers.until(cancelled_id, "reply.done", "reply.error", wait=10)
    # The worker closed the stream, so the inference server stopped generating it.
    await asyncio.to_thread(scripted_server.wait_for_disconnects, 1, 10)
    finals = {
        reply_id: (await customers.until(reply_id, "reply.done", "reply.error"))[-1]
        for reply_id in reply_ids[1:]
    }

    saved = await _reply(cancelled_id)
    assert (frames[-1]["type"], frames[-1]["message"]["status"]) == ("reply.done", "cancelled")
    assert saved.status == "cancelled"
    assert 0 < len(saved.text) < len("".join(tokens))
    _assert_relayed_whole(frames, cancelled_id, saved)
    assert scripted_server.client_disconnects == 1
    for final in finals.values():
        assert (final["type"], final["message"]["status"], final["message"]["text"]) == (
            "reply.done",
            "complete",
            "".join(tokens),
        )


def _as_celery_runs(task: Callable[[int], None], reply_id: int) -> None:
    """Run a task's body in this thread and close the thread's connection after, as Celery does."""
    try:
        task(reply_id)
    finally:
        connection.close()


def _pace_stats(port: int) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
    return stats


@pytest.fixture
def pace_server(tmp_path: Path) -> Iterator[int]:
    """bench's paced server in its own process: keep-alive honoured, TCP connections counted.

    Streams of 3 s, so that the replies of a wave are all streaming before the first ends.
    """
    port = free_port()
    process = _start(
        [sys.executable, "bench/pace_server.py", "--port", str(port), "--first-token-ms", "20",
         "--tokens-per-second", "50", "--tokens", "150"],
        dict(os.environ),
        tmp_path / "pace.log",
    )  # fmt: skip
    try:
        wait_until_answering(
            f"http://127.0.0.1:{port}/stats", timeout=30, process=process, what="pace server"
        )
        yield port
    finally:
        stop_process_group(process)


async def test_it_reuses_http_connections_to_the_inference_server_across_replies(
    stack_for: Callable[..., Stack], pace_server: int
) -> None:
    stack_for(f"http://127.0.0.1:{pace_server}/v1", "pace-model")
    customers = Customers()
    await asyncio.to_thread(httpx.post, f"http://127.0.0.1:{pace_server}/stats/reset", timeout=5)

    # Two waves of ten: the second starts when the first has finished, on the connections it left.
    for _ in range(2):
        reply_ids = await _queue(customers, 10)
        await _enqueue(*reply_ids)
        for reply_id in reply_ids:
            assert (await customers.until(reply_id, "reply.done", "reply.error"))[-1]["type"] == "reply.done"

    stats = await asyncio.to_thread(_pace_stats, pace_server)
    assert stats["streams"] == 20
    # A connection per stream open at the same time, none per reply; this stats request is one more.
    assert stats["connections"] - 1 == stats["peak_active_streams"] <= 10


async def test_it_fails_a_reply_that_outlives_the_runtime_time_limit(
    monkeypatch: pytest.MonkeyPatch, settings: Any, scripted_server: ScriptedInferenceServer
) -> None:
    settings.INFERENCE_BASE_URLS = [scripted_server.base_url]
    settings.INFERENCE_MODEL = "scripted-model"
    scripted_server.enqueue(Script(tokens=["Half", " of it"], stall_after=1, stall_seconds=30))
    monkeypatch.setattr(tasks, "REPLY_RUNTIME_TIME_LIMIT", 1.0)
    customers = Customers()
    [reply_id] = await _queue(customers, 1)

    # The Celery task's body, in this process: it hands the reply to this process's runtime.
    await asyncio.to_thread(_as_celery_runs, tasks.reply_generate, reply_id)

    frames = await customers.rest(reply_id)
    saved = await _reply(reply_id)
    assert (saved.status, saved.error_code, saved.text) == ("failed", "inference_timeout", "Half")
    assert [(f["type"], f.get("code")) for f in frames] == [
        ("reply.delta", None),
        ("reply.error", "inference_timeout"),
    ]
    # The reply's coroutine was cancelled, closing the stream: the server stopped too.
    await asyncio.to_thread(scripted_server.wait_for_disconnects, 1, 10)


def test_it_keeps_one_pooled_http_client_per_event_loop() -> None:
    async def client_twice() -> tuple[Any, Any]:
        return runtime.http_client(), runtime.http_client()

    first_loop = asyncio.run(client_twice())
    second_loop = asyncio.run(client_twice())
    on_the_runtime = runtime.run(client_twice(), timeout=5)
    again_on_the_runtime = runtime.run(client_twice(), timeout=5)

    assert first_loop[0] is not None
    assert first_loop[0] is first_loop[1]
    assert second_loop[0] is not first_loop[0]
    assert on_the_runtime[0] is on_the_runtime[1] is again_on_the_runtime[0]
    assert runtime.http_client() is None
    # Loops that closed are forgotten, the runtime's is kept.
    assert list(runtime._clients.values()).count(first_loop[0]) == 0
    assert on_the_runtime[0] in runtime._clients.values()


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        (
            "CELERY_WORKER_POOL",
            "gevent",
            "CELERY_WORKER_POOL must be threads (many replies per process), prefork or solo.",
        ),
        ("REPLY_CONCURRENCY_PER_PROCESS", "0", "REPLY_CONCURRENCY_PER_PROCESS must be a positive integer."),
    ],
)
def test_it_refuses_to_start_with_a_runtime_that_cannot_work(name: str, value: str, sentence: str) -> None:
    # Real settings in a fresh interpreter, as Celery loads them.
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "cs_platform.settings", name: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1] == f"django.core.exceptions.ImproperlyConfigured: {sentence}"
    )
