"""What the steps on a reply's way to its first token cost, each measured alone (for `make bench`).

Run by bench/replies.py with the benchmark's environment (`DATABASE_URL`, `REDIS_URL`, ...), or by
hand the same way: `python bench/first_token_costs.py`. It prints one JSON list of
`{"step", "where", "median_ms", "min_ms"}`. Each step is what the platform does today on the path
from a message to its first delta; a step this code base no longer has is reported as skipped
rather than failing the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_platform.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402

RUNS = 20


def measure(function: Callable[[], Any], runs: int = RUNS) -> tuple[float, float]:
    """Median and minimum milliseconds of `runs` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times)


def new_database_connection() -> None:
    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()
    connection.ensure_connection()
    connection.cursor().execute("SELECT 1")


def pooled_query() -> None:
    connection.close()  # with the pool: back into it
    connection.cursor().execute("SELECT 1")


def conversation_with_history(messages: int) -> int:
    """A conversation with `messages` customer messages and answered replies; the last reply's id."""
    import importlib

    from conversations import services
    from conversations.models import Message

    # Nothing is generated here: whichever module holds the enqueue function gets a no-op for a while.
    patched: list[tuple[Any, str, Any]] = []
    for module_name in ("conversations.services", "conversations.replies"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in ("_reply_generation_enqueue", "reply_generation_enqueue"):
            if hasattr(module, name):
                patched.append((module, name, getattr(module, name)))
                setattr(module, name, lambda **_: None)
    try:
        conversation, _token = services.conversation_create(
            locale="en", metadata={}, customer_ip="10.255.0.1", customer_user_agent="bench"
        )
        reply_id = 0
        for index in range(messages):
            posted = services.message_post(
                conversation=conversation,
                text=f"Where is my parcel? ({index})",
                client_id=uuid.uuid4(),
                attachment_ids=[],
            )
            assert posted.reply is not None
            reply_id = posted.reply.pk
            if index < messages - 1:
                Message.objects.filter(pk=reply_id).update(status="complete", text="It is on its way.")
        return reply_id
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


async def first_group_send() -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send("bench-costs", {"type": "bench.noop"})


async def later_group_sends(count: int = 10) -> float:
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send("bench-costs", {"type": "bench.noop"})
    started = time.perf_counter()
    for _ in range(count):
        await layer.group_send("bench-costs", {"type": "bench.noop"})
    return (time.perf_counter() - started) * 1000 / count


_cache_set = sync_to_async(cache.set, thread_sensitive=False)


async def snapshot_writes(count: int = 10) -> float:
    await _cache_set("bench-costs", {"text": "x" * 200, "seq": 1}, 60)
    started = time.perf_counter()
    for seq in range(count):
        await _cache_set("bench-costs", {"text": "x" * 200, "seq": seq}, 60)
    return (time.perf_counter() - started) * 1000 / count


async def database_hops(count: int = 10) -> float:
    hop = database_sync_to_async(lambda: None)
    await hop()
    started = time.perf_counter()
    for _ in range(count):
        await hop()
    return (time.perf_counter() - started) * 1000 / count


def per_call(coroutine: Callable[[], Any]) -> tuple[float, float]:
    values = [asyncio.run(coroutine()) for _ in range(RUNS)]
    return statistics.median(values), min(values)


def main() -> None:
    results: list[dict[str, Any]] = []

    def step(name: str, where: str, function: Callable[[], tuple[float, float]]) -> None:
        try:
            median, minimum = function()
        except Exception as error:  # a step the code no longer has: say so, don't fail the benchmark
            results.append(
                {"step": name, "where": where, "skipped": f"{type(error).__name__}: {error}"[:200]}
            )
            return
        results.append({"step": name, "where": where, "median_ms": median, "min_ms": minimum})

    step(
        "a new httpx.AsyncClient (its SSL context loads the CA bundle)",
        "inference/client.py InferenceClient.stream_chat: `async with httpx.AsyncClient(...)` per reply",
        lambda: measure(httpx.AsyncClient),
    )
    step(
        "of which ssl.create_default_context()",
        "httpx/_config.py create_ssl_context",
        lambda: measure(ssl.create_default_context),
    )
    step(
        "a new PostgreSQL connection, first query",
        "celery/fixups/django.py DjangoWorkerFixup._close_database closes the pool after every task "
        "in a prefork child, so each reply's reply_claim connects again",
        lambda: measure(new_database_connection),
    )
    step(
        "a pooled connection borrowed (health check), SELECT 1, returned",
        "every database_sync_to_async call",
        lambda: measure(pooled_query),
    )
    step(
        "a database_sync_to_async hop with no query",
        "channels/db.py (close_old_connections before and after)",
        lambda: per_call(database_hops),
    )
    try:
        from inference.generation import _reply_context
        from inference.prompts import prompt_build

        long_reply = conversation_with_history(30)
        short_reply = conversation_with_history(1)
        step("prompt_build, first message of a conversation", "inference/prompts.py prompt_build",
             lambda: measure(lambda: prompt_build(reply_id=short_reply)))  # fmt: skip
        step("prompt_build, 30th message (59 messages of history)", "inference/prompts.py prompt_build",
             lambda: measure(lambda: prompt_build(reply_id=long_reply)))  # fmt: skip
        step("_reply_context (conversation and locale, one query)", "inference/generation.py reply_generate",
             lambda: measure(lambda: _reply_context(long_reply)))  # fmt: skip
    except Exception as error:
        results.append({"step": "prompt_build", "where": "inference/prompts.py", "skipped": str(error)[:200]})
    step(
        "a new event loop and the channel layer's first group_send (connects to Redis)",
        "inference/tasks.py generate_reply: asyncio.run per task, so a new Redis connection per reply",
        lambda: measure(lambda: asyncio.run(first_group_send())),
    )
    step(
        "a group_send on a connected channel layer",
        "inference/generation.py ReplyGeneration._flush",
        lambda: per_call(later_group_sends),
    )
    step(
        "the snapshot's cache.set through sync_to_async (a thread hop)",
        "inference/generation.py ReplyGeneration._flush",
        lambda: per_call(snapshot_writes),
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
