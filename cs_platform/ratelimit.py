"""A fixed-window counter in the cache, for limits that have no HTTP request (websocket frames)."""

from __future__ import annotations

import time

from django.core.cache import cache


async def rate_limit_exceeded(*, key: str, limit: int, window_seconds: int = 60) -> bool:
    """Count one hit for `key`; True once more than `limit` hits fall in the current window."""
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
