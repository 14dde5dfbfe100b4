"""A key's limits, counted in Redis across every web process: requests and tokens per minute, and its
monthly token quota, summed from the kept requests.

Like the platform's other limits, the per-minute ones fail open while Redis is away (logged and
counted on /metrics, cs_platform/ratelimit.py); the monthly quota is read from the database and holds.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone
from redis.exceptions import RedisError

from access.models import ApiKey
from cs_platform.ratelimit import rate_limit_exceeded, rate_limit_retry_after
from gateway.errors import insufficient_quota
from gateway.errors import rate_limit_exceeded as rate_limit_error
from gateway.models import ApiRequest

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60


def _tokens_key(api_key: ApiKey) -> str:
    return f"gateway-tokens:{api_key.prefix}:{int(time.time() // WINDOW_SECONDS)}"


async def month_tokens_used(api_key: ApiKey) -> int:
    """The key's prompt and completion tokens since the start of this month (TIME_ZONE)."""
    month_start = timezone.localtime().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    totals = await ApiRequest.objects.filter(api_key=api_key, created_at__gte=month_start).aaggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    return int(totals["prompt"] or 0) + int(totals["completion"] or 0)


async def limits_check(api_key: ApiKey) -> None:
    """Count this request against the key's limits; GatewayError (429) when one is reached."""
    if api_key.monthly_tokens is not None:
        used = await month_tokens_used(api_key)
        if used >= api_key.monthly_tokens:
            raise insufficient_quota(
                f"This API key has used its monthly quota of {api_key.monthly_tokens} tokens "
                f"({used} used this month). Ask its owner to raise the quota, or wait for next month."
            )
    if api_key.tokens_per_minute is not None:
        try:
            used_this_minute = int(await cache.aget(_tokens_key(api_key)) or 0)
        except (RedisError, OSError) as error:
            logger.warning(
                "Token limit of key %s not checked, the cache is unavailable (%s)", api_key.prefix, error
            )
            used_this_minute = 0
        if used_this_minute >= api_key.tokens_per_minute:
            raise rate_limit_error(
                f"Rate limit reached for this API key: {api_key.tokens_per_minute} tokens per minute "
                f"({used_this_minute} used). Try again in {rate_limit_retry_after(WINDOW_SECONDS)} s.",
                retry_after=rate_limit_retry_after(WINDOW_SECONDS),
            )
    if api_key.requests_per_minute is not None and await rate_limit_exceeded(
        key=f"gateway:{api_key.prefix}", limit=api_key.requests_per_minute, window_seconds=WINDOW_SECONDS
    ):
        retry_after = rate_limit_retry_after(WINDOW_SECONDS)
        raise rate_limit_error(
            f"Rate limit reached for this API key: {api_key.requests_per_minute} requests per minute. "
            f"Try again in {retry_after} s.",
            retry_after=retry_after,
        )


async def tokens_count(api_key: ApiKey, tokens: int) -> None:
    """Add an answer's tokens to the key's minute (for its tokens-per-minute limit)."""
    if api_key.tokens_per_minute is None or tokens <= 0:
        return
    key = _tokens_key(api_key)
    try:
        if not await cache.aadd(key, tokens, timeout=WINDOW_SECONDS + 5):
            await cache.aincr(key, tokens)
    except ValueError:  # expired between add and incr
        await cache.aset(key, tokens, timeout=WINDOW_SECONDS + 5)
    except (RedisError, OSError) as error:
        logger.warning("Tokens of key %s not counted, the cache is unavailable (%s)", api_key.prefix, error)
