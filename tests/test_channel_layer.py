"""The Redis channel layer on the tests' Redis: many sockets leaving at once all leave their groups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from django.conf import settings

from cs_platform.channel_layer import ResilientRedisChannelLayer

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


def _layer() -> ResilientRedisChannelLayer:
    config: Any = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    return ResilientRedisChannelLayer(hosts=config["hosts"], prefix="asgi-test-pool")


async def test_it_removes_every_membership_when_more_sockets_leave_at_once_than_it_has_connections() -> None:
    layer = _layer()
    group = "conversation.many-leave"
    channels = [await layer.new_channel() for _ in range(300)]
    await asyncio.gather(*(layer.group_add(group, channel) for channel in channels))
    client = redis.Redis.from_url(settings.REDIS_URL)
    group_key = layer._group_key(group)
    assert client.zcard(group_key) == 300

    await asyncio.gather(*(layer.group_discard(group, channel) for channel in channels))

    assert client.zcard(group_key) == 0
    assert layer.memberships == {}
    assert layer.rejoin_pending == set()
    await layer.flush()
