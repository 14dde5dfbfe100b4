"""What the steps on a reply's way to its first token cost, each measured alone (for `make bench`).

Run by bench/replies.py with the benchmark's environment (`DATABASE_URL`, `REDIS_URL`, ...), or by
hand the same way: `python bench/first_token_costs.py`. It prints one JSON list of
`{"step", "where", "median_ms", "min_ms"}`. Each step is what the platform does today on the path
from a message to its first delta; a step this code base no longer has is reported as skipped
rather than failing the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def conversation_with_history(messages: int, text: str = "Where is my parcel?") -> int:
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
                text=f"{text} ({index})",
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


def celery_publish() -> tuple[float, float]:
    """A task message published to a queue nobody consumes, then the queue removed."""
    from cs_platform.celery import app

    queue = f"bench-costs-{uuid.uuid4().hex[:8]}"
    try:
        return measure(lambda: app.send_task("bench.costs.unconsumed", args=[0], queue=queue))
    finally:
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)


class Timeline:
    """Moments of one reply's generation, relative to its start, from wrappers around the steps."""

    def __init__(self) -> None:
        self.started = 0.0
        self.moments: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.moments.setdefault(name, (time.perf_counter() - self.started) * 1000)

    def wrap_sync(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.mark(f"{label} starts")
            try:
                return original(*args, **kwargs)
            finally:
                self.mark(f"{label} ends")

        setattr(owner, name, wrapper)

    def wrap_async(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.mark(f"{label} starts")
            try:
                return await original(*args, **kwargs)
            finally:
                self.mark(f"{label} ends")

        setattr(owner, name, wrapper)


def worker_timeline(runs: int = 15) -> list[dict[str, Any]]:
    """The worker's part, in place: `reply_generate` run the way a worker runs it today (on the reply
    runtime's loop, or as a prefork task), with the moments each step starts and ends."""
    import importlib

    import inference.generation as generation

    entry = getattr(generation, "reply_generate", None)
    if entry is None:
        raise RuntimeError("inference.generation has no reply_generate")
    reply_ids = [conversation_with_history(1, text="Where is my parcel? [tokens=2]") for _ in range(runs + 1)]
    timeline = Timeline()
    for name in (
        "reply_claim",
        "_reply_context",
        "prompt_build",
        "_prompt_build_on_own_thread",
        "inference_client",
    ):
        timeline.wrap_sync(generation, name, name)
    for module_name, name in (
        ("inference.prompts", "prompt_build"),
        ("conversations.selectors", "reply_for_prompt"),
    ):
        with contextlib.suppress(ImportError):
            timeline.wrap_sync(importlib.import_module(module_name), name, name)
    original_init = httpx.AsyncClient.__init__

    def client_init(client: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        timeline.mark("httpx.AsyncClient() starts")
        original_init(client, *args, **kwargs)
        timeline.mark("httpx.AsyncClient() ends")

    original_send = httpx.AsyncClient.send

    async def client_send(client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        timeline.mark("HTTP request to the model starts (connect, send)")
        response = await original_send(client, request, **kwargs)
        timeline.mark("HTTP response headers from the model")
        return response

    layer = get_channel_layer()
    assert layer is not None
    layer_class = type(layer)
    original_group_send = layer_class.group_send

    async def group_send(self: Any, group: str, message: dict[str, Any]) -> None:
        if message.get("type") == "reply.delta":
            timeline.mark("first reply.delta group_send starts")
        await original_group_send(self, group, message)
        if message.get("type") == "reply.delta":
            timeline.mark("first reply.delta group_send ends")

    httpx.AsyncClient.__init__ = client_init  # type: ignore[method-assign, assignment]
    httpx.AsyncClient.send = client_send  # type: ignore[method-assign, assignment]
    layer_class.group_send = group_send
    try:
        reply_runtime: Any = importlib.import_module("inference.runtime")
    except ImportError:
        reply_runtime = None
    rows = []
    try:
        for index, reply_id in enumerate(reply_ids):
            timeline.moments = {}
            if reply_runtime is not None and hasattr(reply_runtime, "run"):
                # As a task thread of the threads pool does: hand the coroutine to the process's loop.
                timeline.started = time.perf_counter()
                reply_runtime.run(entry(reply_id=reply_id), timeout=60)
            else:
                # What Celery's Django fix-up does after every task in a prefork child, then a new loop.
                connection.close()
                if hasattr(connection, "close_pool"):
                    connection.close_pool()
                timeline.started = time.perf_counter()
                asyncio.run(entry(reply_id=reply_id))
            if index:  # the first run warms imports up
                rows.append(dict(timeline.moments))
    finally:
        httpx.AsyncClient.__init__ = original_init  # type: ignore[method-assign]
        httpx.AsyncClient.send = original_send  # type: ignore[method-assign]
        layer_class.group_send = original_group_send
    names = sorted({name for row in rows for name in row}, key=lambda name: statistics.median(
        [row[name] for row in rows if name in row]))  # fmt: skip
    how = (
        "on the process's reply runtime (inference/runtime.py run), as a threads-pool task does"
        if reply_runtime is not None and hasattr(reply_runtime, "run")
        else "as a prefork task does: a new event loop, the database pool closed after the previous task"
    )
    return [{"moment": f"how: {how}", "median_ms": 0.0}] + [
        {"moment": name, "median_ms": statistics.median([row[name] for row in rows if name in row])}
        for name in names
    ]


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
        "paid per reply where a reply makes its own client (inference/client.py without a shared one)",
        lambda: measure(httpx.AsyncClient),
    )
    step(
        "of which ssl.create_default_context()",
        "httpx/_config.py create_ssl_context",
        lambda: measure(ssl.create_default_context),
    )
    step(
        "a new PostgreSQL connection, first query",
        "paid per reply where the pool is closed after each task: Celery's Django fix-up "
        "(celery/fixups/django.py _close_database) does so in prefork children",
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
        long_reply = conversation_with_history(30)
        short_reply = conversation_with_history(1)
    except Exception as error:
        long_reply = short_reply = 0
        results.append({"step": "a conversation to build prompts for", "where": "conversations/services.py",
                        "skipped": f"{type(error).__name__}: {error}"[:200]})  # fmt: skip

    def prompt(reply_id: int) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            from inference.prompts import prompt_build

            assert reply_id, "no conversation"
            return measure(lambda: prompt_build(reply_id=reply_id))

        return run

    step(
        "prompt_build, first message of a conversation",
        "inference/prompts.py prompt_build",
        prompt(short_reply),
    )
    step("prompt_build, 30th message (59 messages of history)", "inference/prompts.py prompt_build",
         prompt(long_reply))  # fmt: skip
    step("a Celery publish (kombu to Redis), as on_commit does for each message",
         "conversations/services.py message_post → on_commit → reply_generation_enqueue, in daphne's thread",
         celery_publish)  # fmt: skip
    step(
        "a new event loop and the channel layer's first group_send (connects to Redis)",
        "paid per reply where each task runs a loop of its own (asyncio.run): a new Redis connection",
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
    try:
        timeline = worker_timeline()
    except Exception as error:
        timeline = [{"moment": f"skipped: {type(error).__name__}: {error}"[:200], "median_ms": 0.0}]
    print(json.dumps({"costs": results, "worker_timeline": timeline}))


if __name__ == "__main__":
    main()
