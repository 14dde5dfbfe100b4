"""The text of a reply in progress, for sockets that join mid-reply, and the request to stop it.

Both live in the cache, beside the database, and both are best-effort: with Redis gone a reply goes
on streaming and is saved to the database all the same; only a socket that joins mid-reply misses
the text so far (the saved message reaches it with `reply.done` or on reconnect), and a cancel waits
for the heartbeat, which reads the database's flag.

The text is kept as a list of chunks, one per delta, so that each delta appends one chunk (Redis
RPUSH) instead of rewriting the whole text; a chunk's index in the list is its delta's `seq`. With a
cache that is not Redis (the embedded default's in-memory one, in the one process that both streams
and serves the sockets), a dict in this process holds the same lists.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "ReplyText",
    "areply_cancel_flagged",
    "areply_text_append",
    "reply_cancel_flag_set",
    "reply_cancel_flagged",
    "reply_progress_clear",
    "reply_text_append",
    "reply_text_get",
]

logger = logging.getLogger(__name__)

_local_lock = threading.Lock()
_local_texts: dict[int, list[str]] = {}

# One asyncio Redis client per event loop (a worker's reply runtime has one loop; each streams many
# replies): the streaming path's appends and cancel reads are awaited on the loop, with no hop to a
# thread per delta. The sync functions below serve everything else through Django's cache.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class ReplyText:
    """All text generated so far, and the seq of the last delta it includes."""

    text: str
    seq: int


def _text_key(reply_id: int) -> str:
    return f"reply-progress:{reply_id}"


def _cancel_key(reply_id: int) -> str:
    return f"reply-cancel:{reply_id}"


def _expiry_seconds() -> int:
    # Outlives any reply (INFERENCE_TOTAL_TIMEOUT), so a worker that died cannot leave it for good.
    return int(settings.INFERENCE_TOTAL_TIMEOUT) + 300


def _redis_cache() -> RedisCache | None:
    cache = caches["default"]
    return cache if isinstance(cache, RedisCache) else None


def reply_text_append(reply_id: int, chunks: Sequence[str]) -> bool:
    """Store the newest of `chunks` (all the reply's deltas so far); False if the cache failed.

    Normally one RPUSH; when the list's length shows that an earlier append was lost (a Redis
    restart, a failed call), the whole list is written again so that indexes stay the deltas' seqs.
    """
    if not chunks:
        return True
    cache = _redis_cache()
    if cache is None:
        with _local_lock:
            stored = _local_texts.setdefault(reply_id, [])
            if len(stored) == len(chunks) - 1:
                stored.append(chunks[-1])
            else:
                stored[:] = chunks
        return True
    key = cache.make_and_validate_key(_text_key(reply_id))
    try:
        client = cache._cache.get_client(key, write=True)
        pipeline = client.pipeline(transaction=False)
        pipeline.rpush(key, chunks[-1])
        pipeline.expire(key, _expiry_seconds())
        length, _ = pipeline.execute()
        if length != len(chunks):
            pipeline = client.pipeline(transaction=True)
            pipeline.delete(key)
            pipeline.rpush(key, *chunks)
            pipeline.expire(key, _expiry_seconds())
            pipeline.execute()
    except Exception as error:
        logger.debug("Reply %s: storing the text so far failed: %s", reply_id, error)
        return False
    return True


def _async_client() -> redis.asyncio.Redis:
    """This loop's client for the cache's Redis, with the cache's timeouts (fail fast, retry once)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        config: dict[str, Any] = settings.CACHES["default"]
        options: dict[str, Any] = config.get("OPTIONS", {})
        location = config["LOCATION"]
        client = redis.asyncio.Redis.from_url(
            # The server writes go to (Django's cache writes to the first of several).
            location.split(",")[0].split(";")[0] if isinstance(location, str) else location[0],
            socket_connect_timeout=options.get("socket_connect_timeout", 2),
            socket_timeout=options.get("socket_timeout", 5),
            socket_keepalive=True,
            health_check_interval=options.get("health_check_interval", 10),
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        _async_clients[loop] = client
    return client


async def areply_text_append(reply_id: int, chunks: Sequence[str]) -> bool:
    """`reply_text_append` awaited on the running loop: one RPUSH, no thread."""
    if not chunks:
        return True
    cache = _redis_cache()
    if cache is None:
        # The in-memory dict: a lock held for a list append, cheaper than any hop.
        return reply_text_append(reply_id, chunks)
    key = cache.make_and_validate_key(_text_key(reply_id))
    try:
        client = _async_client()
        async with client.pipeline(transaction=False) as pipeline:
            pipeline.rpush(key, chunks[-1])
            pipeline.expire(key, _expiry_seconds())
            length, _ = await pipeline.execute()
        if length != len(chunks):
            async with client.pipeline(transaction=True) as pipeline:
                pipeline.delete(key)
                pipeline.rpush(key, *chunks)
                pipeline.expire(key, _expiry_seconds())
                await pipeline.execute()
    except Exception as error:
        logger.debug("Reply %s: storing the text so far failed: %s", reply_id, error)
        return False
    return True


def reply_text_get(reply_id: int) -> ReplyText | None:
    """The text generated so far, or None if there is none (or the cache cannot say)."""
    cache = _redis_cache()
    if cache is None:
        with _local_lock:
            chunks = list(_local_texts.get(reply_id, ()))
    else:
        key = cache.make_and_validate_key(_text_key(reply_id))
        try:
            raw = cache._cache.get_client(key).lrange(key, 0, -1)
        except Exception as error:
            logger.warning("Reply %s: reading the text so far failed: %s", reply_id, error)
            return None
        chunks = [chunk.decode() if isinstance(chunk, bytes) else chunk for chunk in raw]
    if not chunks:
        return None
    return ReplyText(text="".join(chunks), seq=len(chunks) - 1)


def reply_cancel_flag_set(reply_id: int) -> bool:
    """Ask a reply's generator to stop; False if the cache failed (the database flag still holds)."""
    try:
        caches["default"].set(_cancel_key(reply_id), True, timeout=_expiry_seconds())
    except Exception as error:
        logger.warning("Reply %s: setting the cancel flag failed: %s", reply_id, error)
        return False
    return True


def reply_cancel_flagged(reply_id: int) -> bool | None:
    """Whether the customer asked the reply to stop; None if the cache cannot say."""
    try:
        return bool(caches["default"].get(_cancel_key(reply_id)))
    except Exception as error:
        logger.debug("Reply %s: reading the cancel flag failed: %s", reply_id, error)
        return None


async def areply_cancel_flagged(reply_id: int) -> bool | None:
    """`reply_cancel_flagged` awaited on the running loop: one EXISTS, no thread."""
    cache = _redis_cache()
    if cache is None:
        return reply_cancel_flagged(reply_id)
    try:
        # The flag is only ever set to True (reply_cancel_flag_set), so being there is being set.
        return bool(await _async_client().exists(cache.make_and_validate_key(_cancel_key(reply_id))))
    except Exception as error:
        logger.debug("Reply %s: reading the cancel flag failed: %s", reply_id, error)
        return None


def reply_progress_clear(reply_ids: Iterable[int]) -> bool:
    """Forget the text so far and the cancel flag of finished replies; False if the cache failed."""
    reply_ids = list(reply_ids)
    cache = _redis_cache()
    if cache is None:
        with _local_lock:
            for reply_id in reply_ids:
                _local_texts.pop(reply_id, None)
    keys = [_text_key(reply_id) for reply_id in reply_ids] + [_cancel_key(reply_id) for reply_id in reply_ids]
    try:
        caches["default"].delete_many(keys)
    except Exception as error:
        logger.warning("Replies %s: clearing the text so far failed: %s", reply_ids, error)
        return False
    return True
