"""The Redis channel layer, made to ride out a Redis restart.

channels-redis lets a Redis error escape from `receive()`, which ends the consumer's dispatch loop:
daphne closes every open websocket with 1011 the moment Redis goes away, and a socket that says hello
while it is away dies in `group_add`. And a Redis restarted without persistence has forgotten every
group, so a socket that lived through the restart would never hear its conversation again. Here a
socket keeps its receive loop through the outage (waiting with a backoff), remembers which groups
each of this process's channels joined, and joins them again once Redis answers; then it hands the
consumer a `layer.rejoined` message, since whatever was sent to those groups meanwhile is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import redis.asyncio
from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# Errors that mean "Redis is not reachable right now", not a bug or a bad command.
REDIS_UNAVAILABLE_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

# How long a receive loop waits before trying Redis again: doubling from the first to the last. The
# last is short because a socket hears nothing sent to its groups until it has joined them again.
RECONNECT_FIRST_DELAY_SECONDS = 0.25
RECONNECT_MAX_DELAY_SECONDS = 1.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    """channels-redis whose receive loops wait out a Redis outage and re-join their groups after it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The groups each channel of this process joined, to join again after Redis forgot them.
        self.memberships: defaultdict[str, set[str]] = defaultdict(set)
        # Channels whose memberships Redis may not hold (it failed or restarted since they joined).
        self.rejoin_pending: set[str] = set()

    def create_pool(self, index: int) -> Any:
        """A pool that waits for a free connection when all are in use: redis-py's plain pool raises
        "Too many connections" instead, which lost the group_discard of most of 200 sockets that closed
        at once and left their memberships in Redis for a day (group_expiry)."""
        host = dict(self.hosts[index])
        if "address" not in host:
            return super().create_pool(index)
        address = host.pop("address")
        wait_seconds = host.pop("pool_wait_seconds", 10)
        return redis.asyncio.BlockingConnectionPool.from_url(address, timeout=wait_seconds, **host)

    async def group_add(self, group: str, channel: str) -> None:
        self.memberships[channel].add(group)
        try:
            await super().group_add(group, channel)
        except REDIS_UNAVAILABLE_ERRORS as error:
            # The socket stays open; its receive loop joins the group once Redis is back.
            logger.warning("Joining %s failed while Redis is unavailable (%s); will retry", group, error)
            self.rejoin_pending.add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        groups = self.memberships.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self.memberships[channel]
                self.rejoin_pending.discard(channel)
        try:
            await super().group_discard(group, channel)
        except REDIS_UNAVAILABLE_ERRORS as error:
            # The membership expires with group_expiry; a send to a gone channel is dropped.
            logger.warning("Leaving %s failed while Redis is unavailable (%s)", group, error)

    async def receive(self, channel: str) -> dict[str, Any]:
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            try:
                if channel in self.rejoin_pending:
                    await self._rejoin(channel)
                    # What was sent to its groups meanwhile is lost: its consumer resynchronises.
                    return {"type": "layer.rejoined"}
                message: dict[str, Any] = await super().receive(channel)
                return message
            except REDIS_UNAVAILABLE_ERRORS as error:
                if delay == RECONNECT_FIRST_DELAY_SECONDS:
                    logger.warning("Channel layer lost Redis (%s); waiting for it to come back", error)
                if channel in self.memberships:
                    self.rejoin_pending.add(channel)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def _rejoin(self, channel: str) -> None:
        for group in sorted(self.memberships.get(channel, ())):
            await super().group_add(group, channel)
        self.rejoin_pending.discard(channel)
        logger.info("Channel layer re-joined %s's groups after a Redis outage", channel)
