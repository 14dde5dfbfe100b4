"""A Redis that goes away in the middle of a reply: the reply is saved whole, and its final frame
reaches the conversation once Redis is back.

The generation runs in this process against the scripted inference server, with the cache and the
channel layer pointed at a `redis-server` of the test's own (a free port, append-only file, so the
groups survive its restart), which the test kills after the first delta.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from conversations import events, services
from conversations.models import Message
from cs_platform.processes import free_port
from inference.generation import reply_generate
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

ConversationFactory: Any = factories.ConversationFactory

TOKENS = [f"word{index} " for index in range(30)]


class OwnRedis:
    """A `redis-server` on a free port that can be killed and started again with the same data."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                # Every write on disk at once: the groups and queued events outlive a kill -9.
                "--appendonly", "yes",
                "--appendfsync", "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path, settings: Any) -> Iterator[OwnRedis]:
    """The cache and the channel layer (as configured, only the address changed) on a Redis of our own."""
    server = OwnRedis(tmp_path)
    server.start()
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = server.url
    settings.CACHES = caches
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    for host in layers["default"]["CONFIG"]["hosts"]:
        host["address"] = server.url
    settings.CHANNEL_LAYERS = layers
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()


async def wait_for(condition: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_it_saves_the_whole_reply_while_redis_is_gone_and_sends_the_final_frame_once_it_is_back(
    own_redis: OwnRedis, scripted_inference: ScriptedInferenceServer
):
    scripted_inference.enqueue(Script(tokens=TOKENS, token_delay=0.05))
    conversation = await database_sync_to_async(ConversationFactory)()
    posted = await database_sync_to_async(services.message_post)(conversation=conversation, text="Hello?")
    assert posted.reply is not None
    reply_id = posted.reply.pk
    layer = get_channel_layer()
    assert layer is not None
    channel = await layer.new_channel()
    await layer.group_add(events.conversation_group(conversation.pk), channel)
    generation = asyncio.create_task(reply_generate(reply_id=reply_id))
    first = await asyncio.wait_for(layer.receive(channel), 10)
    assert (first["type"], first["seq"]) == ("reply.delta", 0)

    own_redis.kill()

    # Through channels' wrapper, which closes the connection it used (the async ORM's would leave it).
    load = database_sync_to_async(lambda: Message.objects.get(pk=reply_id))

    async def finished() -> bool:
        return (await load()).status != Message.Status.STREAMING

    await wait_for(finished)
    saved = await load()
    # Saved whole, as a complete reply, though every cache and channel-layer call after the first
    # delta failed: no error code, let alone one outside the README's list.
    assert (saved.status, saved.text, saved.error_code) == ("complete", "".join(TOKENS), "")
    assert saved.relay_failures > 0
    assert not generation.done()  # still offering the final frame to the channel layer

    own_redis.start()
    await asyncio.wait_for(generation, 60)

    received: list[dict[str, Any]] = []
    while not received or received[-1]["type"] not in ("reply.done", "reply.error"):
        received.append(await asyncio.wait_for(layer.receive(channel), 10))
    done = received[-1]
    assert done["type"] == "reply.done"
    assert (done["message"]["status"], done["message"]["text"]) == ("complete", "".join(TOKENS))
