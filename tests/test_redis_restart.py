"""A real Redis stopped and restarted in the middle of a reply: every process rides it out.

daphne, a Celery worker and beat run as separate processes, with production's command lines,
against the test PostgreSQL database and a `redis-server` of the test's own on a free port (so that
stopping it breaks nobody else); the scripted inference server streams a slow reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.typing import Origin

from conversations.models import Conversation, Message
from cs_platform.channel_layer import ResilientRedisChannelLayer
from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering
from cs_platform.ratelimit import RATE_LIMIT_UNAVAILABLE, rate_limit_exceeded
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

ROOT = Path(__file__).resolve().parent.parent

# The reply codes the README lists for a failed reply.
README_REPLY_ERROR_CODES = {
    "inference_unavailable",
    "inference_timeout",
    "inference_bad_response",
    "inference_rejected",
    "worker_lost",
}
SLOW_TOKENS = [f"word{index} " for index in range(40)]
SLOW_TOKEN_DELAY = 0.3


class RedisServer:
    """A throwaway `redis-server` on its own port, with nothing kept on disk across a restart."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=parent_death_signal(),
        )  # fmt: skip
        _wait_until(self._answers, seconds=10, what="redis-server to answer")

    def kill(self) -> None:
        """Kill it outright, as a crashed or OOM-killed Redis dies."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        assert not self._answers()

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1).ping())
        except redis.RedisError:
            return False


@dataclass
class Stack:
    base_url: str
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path
    redis: RedisServer
    inference: ScriptedInferenceServer


def _wait_until(predicate: Any, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _wait_until_async(predicate: Any, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )


@pytest.fixture
def restartable_stack(transactional_db: None, tmp_path: Path) -> Iterator[Stack]:
    """daphne, a Celery worker and beat on the test database and a Redis of their own."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    inference = ScriptedInferenceServer(Script(tokens=["All ", "good ", "again."])).start()
    database = settings.DATABASES["default"]
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": redis_server.url,
        "SECRET_KEY": "redis-restart-test-secret",
        "INFERENCE_BASE_URL": inference.base_url,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "REPLY_HEARTBEAT_SECONDS": "1",
        "REPLY_STALLED_AFTER_SECONDS": "15",
        "REPLY_SWEEP_INTERVAL_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    logs = tmp_path / "logs"
    logs.mkdir()
    # The command lines of docker-compose.yml, with fewer worker processes.
    processes = {
        "daphne": _start(
            [sys.executable, "-m", "cs_platform.serve_web"],
            {**env, "DAPHNE_BIND": "127.0.0.1", "DAPHNE_PORT": str(port)},
            logs / "daphne.log",
        ),
        "worker": _start(
            [sys.executable, "-m", "celery", "-A", "cs_platform", "worker", "--loglevel=INFO"],
            env,
            logs / "worker.log",
        ),
        "beat": _start(
            [sys.executable, "-m", "celery", "-A", "cs_platform", "beat", "--loglevel=INFO",
             f"--schedule={tmp_path / 'beat-schedule'}"],
            env,
            logs / "beat.log",
        ),
    }  # fmt: skip
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}",
        processes=processes,
        logs=logs,
        redis=redis_server,
        inference=inference,
    )
    try:
        wait_until_answering(
            f"{stack.base_url}/healthz", timeout=60, process=processes["daphne"], what="daphne"
        )
        _wait_until(lambda: "ready." in (logs / "worker.log").read_text(), seconds=60, what="the worker")
        yield stack
    finally:
        for process in processes.values():
            stop_process_group(process)
        inference.stop()
        if redis_server.process is not None:
            stop_process_group(redis_server.process)
        for log in sorted(logs.iterdir()):
            print(f"----- {log.name} -----\n{log.read_text()[-6000:]}")


async def _create_conversation(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/api/widget/conversations", json={"locale": "en"})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _connect(base_url: str, conversation: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Open the conversation's websocket and say hello; the socket and its `ready` frame."""
    socket = await websockets.connect(
        base_url.replace("http", "ws") + conversation["ws_path"], origin=Origin(base_url)
    )
    await socket.send(json.dumps({"type": "hello", "token": conversation["token"]}))
    ready = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert ready["type"] == "ready", ready
    return socket, ready


async def _frames_until(socket: Any, *types: str, seconds: float) -> list[dict[str, Any]]:
    frames = []
    async with asyncio.timeout(seconds):
        while True:
            frame = json.loads(await socket.recv())
            frames.append(frame)
            if frame["type"] in types:
                return frames


async def _final_frame_or_none(socket: Any, reply_id: int, *, seconds: float) -> dict[str, Any] | None:
    """The reply's reply.done or reply.error on this socket; None if the socket closed first."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                frame = json.loads(await socket.recv())
                if frame["type"] in {"reply.done", "reply.error"} and frame["reply_id"] == reply_id:
                    return dict(frame)
    except websockets.ConnectionClosed:
        return None


def _send_message(text: str) -> str:
    return json.dumps({"type": "message", "client_id": str(uuid.uuid4()), "text": text})


async def _reply(reply_id: int) -> Message:
    return await database_sync_to_async(Message.objects.get)(pk=reply_id)


@pytest.mark.e2e
async def test_it_rides_out_a_redis_restart_in_the_middle_of_a_reply(restartable_stack: Stack) -> None:
    stack = restartable_stack
    stack.inference.enqueue(Script(tokens=SLOW_TOKENS, token_delay=SLOW_TOKEN_DELAY))
    replying = await _create_conversation(stack.base_url)
    bystander = await _create_conversation(stack.base_url)
    socket, _ = await _connect(stack.base_url, replying)
    bystander_socket, _ = await _connect(stack.base_url, bystander)

    await socket.send(_send_message("Tell me a long story, please."))
    frames = await _frames_until(socket, "reply.delta", seconds=30)
    accepted = frames[0]
    assert accepted["type"] == "message.accepted", frames
    reply_id = accepted["reply_id"]

    stack.redis.kill()
    # While Redis is down, the open sockets stay open and their frames are answered: a rating is
    # saved, and a message is saved (or refused with an error frame).
    await bystander_socket.send(json.dumps({"type": "csat", "score": 4, "comment": ""}))
    assert json.loads(await asyncio.wait_for(bystander_socket.recv(), 15)) == {
        "type": "csat.saved",
        "score": 4,
    }
    await bystander_socket.send(_send_message("Are you still there?"))
    answer = json.loads(await asyncio.wait_for(bystander_socket.recv(), 15))
    assert answer["type"] in {"message.accepted", "error"}, answer
    # A customer who arrives now can start a conversation and is let in.
    latecomer = await _create_conversation(stack.base_url)
    latecomer_socket, ready = await _connect(stack.base_url, latecomer)
    assert ready["messages"] == []
    await asyncio.sleep(3)  # Redis stays away for three seconds, as in the incident
    stack.redis.start()

    final = await _final_frame_or_none(socket, reply_id, seconds=60)

    async def reply_finished() -> bool:
        return (await _reply(reply_id)).status != Message.Status.STREAMING

    await _wait_until_async(reply_finished, seconds=60, what="the reply to be saved")
    reply = await _reply(reply_id)
    if reply.status == Message.Status.FAILED:
        assert reply.error_code in README_REPLY_ERROR_CODES, reply.error_code
    else:
        assert reply.status == Message.Status.COMPLETE
        assert reply.text == "".join(SLOW_TOKENS)
    if final is None:
        # The socket did not survive: on reconnect the customer gets the saved reply.
        socket, ready = await _connect(stack.base_url, replying)
        saved = [message for message in ready["messages"] if message["id"] == reply_id]
        assert saved, ready
        assert saved[0]["status"] == reply.status
        assert saved[0]["text"] == reply.text
    else:
        assert final["message"]["status"] == reply.status
        assert final["message"]["text"] == reply.text
    await socket.close()
    assert bystander_socket.close_code is None  # it lived through the outage
    await bystander_socket.close()
    assert latecomer_socket.close_code is None
    await latecomer_socket.close()

    for name, process in stack.processes.items():
        assert process.poll() is None, f"{name} exited with {process.returncode}"

    # A new customer after the restart gets a whole streamed reply over a new websocket.
    newcomer = await _create_conversation(stack.base_url)
    new_socket, ready = await _connect(stack.base_url, newcomer)
    async with new_socket:
        await new_socket.send(_send_message("Hello after the restart"))
        frames = await _frames_until(new_socket, "reply.done", "reply.error", seconds=60)
    accepted, started, *deltas, done = frames
    assert accepted["type"] == "message.accepted"
    assert started == {"type": "reply.started", "reply_id": accepted["reply_id"]}
    assert done["type"] == "reply.done", done
    assert [delta["seq"] for delta in deltas] == list(range(len(deltas)))
    assert "".join(delta["text"] for delta in deltas) == done["message"]["text"] == "All good again."
    assert (await _reply(accepted["reply_id"])).status == Message.Status.COMPLETE
    for name, process in stack.processes.items():
        assert process.poll() is None, f"{name} exited with {process.returncode}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            stop_process_group(server.process)


def _layer(redis_url: str) -> ResilientRedisChannelLayer:
    """The channel layer with production's host options (settings with REDIS_URL), on `redis_url`."""
    config: Any = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    hosts = [{**host, "address": redis_url} for host in config.get("hosts", [])]
    return ResilientRedisChannelLayer(hosts=hosts or [{"address": redis_url}])


async def test_it_keeps_a_receive_loop_through_a_redis_restart_and_rejoins_its_groups(
    own_redis: RedisServer,
) -> None:
    layer = _layer(own_redis.url)
    channel = await layer.new_channel()
    await layer.group_add("conversation.one", channel)
    receiving = asyncio.ensure_future(layer.receive(channel))

    await asyncio.to_thread(own_redis.kill)

    async def outage_noticed() -> bool:
        return channel in layer.rejoin_pending

    await _wait_until_async(outage_noticed, seconds=10, what="the receive loop to notice the outage")
    assert not receiving.done()  # the loop waits for Redis instead of raising
    await asyncio.to_thread(own_redis.start)
    # The restarted Redis forgot the group; the loop joins it again, then the message arrives.
    sender = _layer(own_redis.url)

    async def delivered() -> bool:
        if not receiving.done():
            await sender.group_send("conversation.one", {"type": "reply.delta", "text": "back"})
            await asyncio.sleep(0.2)
        return receiving.done()

    await _wait_until_async(delivered, seconds=20, what="the loop to re-join after the restart")
    # First the consumer is told that what was sent meanwhile is lost, then messages flow again.
    assert receiving.result() == {"type": "layer.rejoined"}
    await sender.group_send("conversation.one", {"type": "reply.delta", "text": "back"})
    assert await asyncio.wait_for(layer.receive(channel), 10) == {"type": "reply.delta", "text": "back"}
    await layer.group_discard("conversation.one", channel)
    assert layer.memberships == {}
    await layer.flush()
    await sender.flush()


async def test_it_rejoins_every_socket_of_the_process_not_only_the_one_reading_redis(
    own_redis: RedisServer,
) -> None:
    # channels-redis lets one receive read Redis at a time; the others wait in this process and never
    # see the outage, yet the restarted Redis forgot their groups too.
    layer = _layer(own_redis.url)
    channels = [await layer.new_channel() for _ in range(3)]
    for position, channel in enumerate(channels):
        await layer.group_add(f"conversation.reader-{position}", channel)
    receiving = [asyncio.ensure_future(layer.receive(channel)) for channel in channels]

    await asyncio.to_thread(own_redis.kill)
    await asyncio.sleep(0.5)  # Redis stays away a moment, as in a restart
    await asyncio.to_thread(own_redis.start)

    done, _ = await asyncio.wait(receiving, timeout=20)
    assert [task.result() for task in receiving] == [{"type": "layer.rejoined"}] * 3, done
    sender = _layer(own_redis.url)
    for position in range(3):
        await sender.group_send(
            f"conversation.reader-{position}", {"type": "reply.delta", "text": str(position)}
        )
    assert [await asyncio.wait_for(layer.receive(channel), 10) for channel in channels] == [
        {"type": "reply.delta", "text": str(position)} for position in range(3)
    ]
    assert layer.rejoin_pending == set()
    await layer.flush()
    await sender.flush()


async def test_it_joins_at_once_after_a_restart_on_a_connection_the_old_redis_left_in_the_pool(
    own_redis: RedisServer,
) -> None:
    layer = _layer(own_redis.url)
    first = await layer.new_channel()
    await layer.group_add("conversation.before", first)  # a pooled connection to this Redis
    await asyncio.to_thread(own_redis.kill)
    await asyncio.to_thread(own_redis.start)
    newcomer = await layer.new_channel()

    await layer.group_add("conversation.after", newcomer)

    assert newcomer not in layer.rejoin_pending
    await _layer(own_redis.url).group_send("conversation.after", {"type": "reply.delta", "text": "hi"})
    assert await asyncio.wait_for(layer.receive(newcomer), 10) == {"type": "reply.delta", "text": "hi"}
    await layer.flush()


async def test_it_answers_a_hello_while_redis_is_down_and_joins_the_group_when_it_is_back(
    own_redis: RedisServer,
) -> None:
    layer = _layer(own_redis.url)
    channel = await layer.new_channel()
    await asyncio.to_thread(own_redis.kill)

    await layer.group_add("conversation.two", channel)  # does not raise: the socket stays open

    assert layer.memberships == {channel: {"conversation.two"}}
    assert layer.rejoin_pending == {channel}
    await asyncio.to_thread(own_redis.start)
    receiving = asyncio.ensure_future(layer.receive(channel))
    sender = _layer(own_redis.url)

    await asyncio.wait_for(receiving, 20)
    assert receiving.result() == {"type": "layer.rejoined"}  # the ready it got may lack the snapshot
    await sender.group_send("conversation.two", {"type": "reply.done"})
    assert await asyncio.wait_for(layer.receive(channel), 10) == {"type": "reply.done"}
    assert layer.rejoin_pending == set()
    await layer.flush()
    await sender.flush()


async def test_it_lets_a_message_through_when_the_rate_limit_counter_is_unreachable(
    settings: Any, own_redis: RedisServer
) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": own_redis.url}
    }
    key = f"ws-message:{uuid.uuid4()}"
    assert await rate_limit_exceeded(key=key, limit=1) is False
    assert await rate_limit_exceeded(key=key, limit=1) is True  # counted while Redis is up
    before = RATE_LIMIT_UNAVAILABLE.labels(scope="ws-message")._value.get()
    await asyncio.to_thread(own_redis.kill)

    assert await rate_limit_exceeded(key=key, limit=1) is False  # fails open

    assert RATE_LIMIT_UNAVAILABLE.labels(scope="ws-message")._value.get() == before + 1


@pytest.mark.django_db
def test_it_creates_a_conversation_while_the_rate_limit_cache_is_unreachable(
    settings: Any, own_redis: RedisServer, client: Any
) -> None:
    cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": own_redis.url}
    settings.CACHES = {
        "default": cache,
        "ratelimit": {**cache, "BACKEND": "cs_platform.ratelimit.FailOpenRedisCache"},
    }
    settings.RATELIMIT_USE_CACHE = "ratelimit"
    settings.RATELIMIT_FAIL_OPEN = True
    before = RATE_LIMIT_UNAVAILABLE.labels(scope="http")._value.get()
    own_redis.kill()

    response = client.post("/api/widget/conversations", {"locale": "en"}, content_type="application/json")

    assert response.status_code == 201, response.content
    assert Conversation.objects.filter(pk=response.json()["id"]).exists()
    assert RATE_LIMIT_UNAVAILABLE.labels(scope="http")._value.get() == before + 1
