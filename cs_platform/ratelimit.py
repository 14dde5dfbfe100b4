"""Rate limits that fail open while the cache (Redis) cannot be reached.

A fixed-window counter for limits that have no HTTP request (websocket frames), and the cache that
django-ratelimit counts HTTP requests in. Both are best-effort: with Redis away, a request or a
customer's message is let through, logged and counted in `cs_rate_limit_unavailable_total`, rather
than every frame and every new conversation failing for as long as Redis is gone; what the customer
sends is saved in the database either way, and the reply still runs one at a time per conversation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from prometheus_client import Counter
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RATE_LIMIT_UNAVAILABLE = Counter(
    "cs_rate_limit_unavailable",
    "Rate-limit checks let through because the cache could not be reached (the limit failed open).",
    ["scope"],
    # Not in the default registry: /metrics (cs_platform/metrics.py) builds a registry of its own.
    registry=None,
)


def _note_unavailable(scope: str, error: Exception) -> None:
    RATE_LIMIT_UNAVAILABLE.labels(scope=scope).inc()
    logger.warning(
        "Rate limit %s not checked, the cache is unavailable (%s): letting it through", scope, error
    )


class FailOpenRedisCache(RedisCache):
    """Django's Redis cache for django-ratelimit's counters: an unreachable Redis counts nothing.

    django-ratelimit catches only a DNS failure from `add`; any other error from Redis became a 500
    on every rate-limited view. Here `add` and `incr` fail quietly, django-ratelimit then sees no
    count, and RATELIMIT_FAIL_OPEN lets the request through.
    """

    def add(self, key: Any, value: Any, timeout: Any = None, version: int | None = None) -> bool:
        try:
            return bool(super().add(key, value, timeout=timeout, version=version))
        except (RedisError, OSError) as error:
            _note_unavailable("http", error)
            return False

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        try:
            return super().incr(key, delta=delta, version=version)
        except (RedisError, OSError):
            return None  # already counted by the add that failed before it


async def rate_limit_exceeded(*, key: str, limit: int, window_seconds: int = 60) -> bool:
    """Count one hit for `key`; True once more than `limit` hits fall in the current window.

    False, logged and counted, when the cache cannot be reached: the limit fails open.
    """
    try:
        return await _count_hit(key=key, limit=limit, window_seconds=window_seconds)
    except (RedisError, OSError) as error:
        _note_unavailable(key.split(":", 1)[0], error)
        return False


async def _count_hit(*, key: str, limit: int, window_seconds: int) -> bool:
    window = int(time.time() // window_seconds)
    cache_key = f"ratelimit:{key}:{window}"
    if await cache.aadd(cache_key, 1, timeout=window_seconds + 5):
        return limit < 1
    try:
        hits = await cache.aincr(cache_key)
    except ValueError:  # expired between add and incr
        await cache.aset(cache_key, 1, timeout=window_seconds + 5)
        hits = 1
    return hits > limit


@dataclass(frozen=True)
class RateLimitHit:
    """One hit counted: whether it went over the limit, and the window's counter to give it back to."""

    exceeded: bool
    # None when the cache could not count it (the limit failed open): there is nothing to give back.
    cache_key: str | None


def rate_limit_retry_after(window_seconds: int = 60) -> int:
    """Whole seconds until the current fixed window ends, when a limited client may try again."""
    return max(1, math.ceil(window_seconds - time.time() % window_seconds))


def rate_limit_hit(*, key: str, limit: int, window_seconds: int = 60) -> RateLimitHit:
    """`rate_limit_exceeded` for sync code (a consumer's one database hop counts its hit there too).

    Fails open the same way: not exceeded, logged and counted, when the cache cannot be reached.
    """
    window = int(time.time() // window_seconds)
    cache_key = f"ratelimit:{key}:{window}"
    try:
        if cache.add(cache_key, 1, timeout=window_seconds + 5):
            return RateLimitHit(exceeded=limit < 1, cache_key=cache_key)
        try:
            hits = cache.incr(cache_key)
        except ValueError:  # expired between add and incr
            cache.set(cache_key, 1, timeout=window_seconds + 5)
            hits = 1
    except (RedisError, OSError) as error:
        _note_unavailable(key.split(":", 1)[0], error)
        return RateLimitHit(exceeded=False, cache_key=None)
    return RateLimitHit(exceeded=hits > limit, cache_key=cache_key)


def rate_limit_refund(hit: RateLimitHit) -> None:
    """Take back a hit that turned out not to count (a message re-sent, answered from what was saved)."""
    if hit.cache_key is None:
        return
    try:
        cache.decr(hit.cache_key)
    except ValueError:
        pass  # the window's counter expired meanwhile: nothing left to take back from
    except (RedisError, OSError) as error:
        logger.warning("Rate limit hit not taken back, the cache is unavailable (%s)", error)
