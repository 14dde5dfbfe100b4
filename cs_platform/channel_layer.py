"""The Redis channel layer, made to ride out a Redis restart.

channels-redis lets a Redis error escape from `receive()`, which ends the consumer's dispatch loop:
daphne closes every open websocket with 1011 the moment Redis goes away, and a socket that says hello
while it is away dies in `group_add`. And a Redis restarted without persistence has forgotten every
group, so a socket that lived through the restart would never hear its conversation again. Here a
socket keeps its receive loop through the outage (waiting with a backoff), remembers which groups
each of this process's channels joined, and joins them again once Redis answers; then it hands each
consumer a `layer.rejoined` message, since whatever was sent to those groups meanwhile is lost.

Only one of a process's sockets reads Redis at a time (channels-redis's receive lock); the others wait
on their buffers in this process and never see the error. So an outage noticed anywhere marks every
channel of the process, and one re-join task joins them all again and wakes each with a message.
The first command on a pooled connection that a restarted Redis closed fails; a join or a send is
tried once more at once on a fresh connection before it counts as failed.
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
# What the first command on a connection that a restarted Redis closed raises: worth one more try at
# once (the failed connection is dropped from the pool). A timeout is not: the command may have run.
STALE_CONNECTION_ERRORS = (RedisConnectionError, ConnectionResetError, BrokenPipeError)

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
        self._rejoiner: asyncio.Task[None] | None = None

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

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await super().send(channel, message)
        except STALE_CONNECTION_ERRORS:
            await super().send(channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        try:
            await super().group_send(group, message)
        except STALE_CONNECTION_ERRORS:
            await super().group_send(group, message)

    async def group_add(self, group: str, channel: str) -> None:
        self.memberships[channel].add(group)
        try:
            try:
                await super().group_add(group, channel)
            except STALE_CONNECTION_ERRORS:
                await super().group_add(group, channel)
        except REDIS_UNAVAILABLE_ERRORS as error:
            # The socket stays open; the re-join task joins the group once Redis is back.
            logger.warning("Joining %s failed while Redis is unavailable (%s); will retry", group, error)
            self.rejoin_pending.add(channel)
            self._rejoin_soon()

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
                message: dict[str, Any] = await super().receive(channel)
                return message
            except REDIS_UNAVAILABLE_ERRORS as error:
                if delay == RECONNECT_FIRST_DELAY_SECONDS:
                    logger.warning("Channel layer lost Redis (%s); waiting for it to come back", error)
                # Every channel of this process may have lost its groups, not only the one reading.
                self.rejoin_pending.update(self.memberships)
                self._rejoin_soon()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    def _rejoin_soon(self) -> None:
        if self.rejoin_pending and (self._rejoiner is None or self._rejoiner.done()):
            self._rejoiner = asyncio.ensure_future(self._rejoin_pending_channels())

    async def _rejoin_pending_channels(self) -> None:
        """Join the pending channels' groups again once Redis answers, and wake each channel's receive."""
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while self.rejoin_pending:
            await asyncio.sleep(delay)
            for channel in sorted(self.rejoin_pending):
                try:
                    for group in sorted(self.memberships.get(channel, ())):
                        await super().group_add(group, channel)
                    if channel in self.memberships:
                        # Through Redis: the one receive reading it hands it on to the channel's
                        # consumer (a message put straight into this process's buffer would wait
                        # until some other message woke that reader).
                        await super().send(channel, {"type": "layer.rejoined"})
                except REDIS_UNAVAILABLE_ERRORS:
                    delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)
                    break
                self.rejoin_pending.discard(channel)
                logger.info("Channel layer re-joined %s's groups after a Redis outage", channel)
