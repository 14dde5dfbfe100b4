"""Which pages may open a websocket: the platform's own hosts for every socket, the widget's
embedding origins (WIDGET_ALLOWED_ORIGINS) for the customers' conversation sockets only."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from cs_platform.asgi import application
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

SHOP = "https://shop.example.com"


async def opens(path: str, origin: str | None) -> bool:
    headers = [(b"origin", origin.encode())] if origin is not None else []
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return bool(connected)


async def conversation_path() -> str:
    conversation: Any = await database_sync_to_async(factories.ConversationFactory)()
    return f"/ws/conversations/{conversation.pk}/"


async def test_a_conversation_socket_opens_from_the_platform_and_the_embedding_pages(settings: Any) -> None:
    settings.WIDGET_ALLOWED_ORIGINS = [SHOP]
    path = await conversation_path()

    assert await opens(path, "http://localhost:8000")
    assert await opens(path, SHOP)
    assert not await opens(path, "https://evil.example.net")
    assert not await opens(path, "http://shop.example.com")  # another scheme is another origin
    assert not await opens(path, None)


async def test_with_no_embedding_origins_only_the_platform_opens_a_conversation_socket(settings: Any) -> None:
    settings.WIDGET_ALLOWED_ORIGINS = []
    path = await conversation_path()

    assert await opens(path, "http://127.0.0.1:8000")
    assert not await opens(path, SHOP)


async def test_the_agent_socket_opens_only_from_the_platform(settings: Any) -> None:
    settings.WIDGET_ALLOWED_ORIGINS = [SHOP]

    assert await opens("/ws/agent/", "http://localhost:8000")
    assert not await opens("/ws/agent/", SHOP)
