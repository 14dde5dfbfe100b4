"""A fixed-window counter in the cache, for limits that have no HTTP request (websocket frames).

The counter is best-effort: while the cache (Redis) cannot be reached, the limit fails open. A
customer's message is then let through, logged and counted in `cs_rate_limit_unavailable_total`,
rather than every frame failing for as long as Redis is away; the message itself is saved in the
database either way, and the reply still runs one at a time per conversation.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache
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


async def rate_limit_exceeded(*, key: str, limit: int, window_seconds: int = 60) -> bool:
    """Count one hit for `key`; True once more than `limit` hits fall in the current window.

    False, logged and counted, when the cache cannot be reached: the limit fails open.
    """
    try:
        return await _count_hit(key=key, limit=limit, window_seconds=window_seconds)
    except (RedisError, OSError) as error:
        scope = key.split(":", 1)[0]
        RATE_LIMIT_UNAVAILABLE.labels(scope=scope).inc()
        logger.warning(
            "Rate limit %s not checked, the cache is unavailable (%s): letting it through", scope, error
        )
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
