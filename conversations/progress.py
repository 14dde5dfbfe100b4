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

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

__all__ = [
    "ReplyText",
    "reply_cancel_flag_set",
    "reply_cancel_flagged",
    "reply_progress_clear",
    "reply_text_append",
    "reply_text_get",
]

logger = logging.getLogger(__name__)

_local_lock = threading.Lock()
_local_texts: dict[int, list[str]] = {}


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
