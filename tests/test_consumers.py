"""The websocket contract, through the real Redis channel layer and a scripted inference server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from conversations.models import Message
from cs_platform.asgi import application
from tests.factories import ConversationFactory
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(
    conversation: Any, token: str | None = None
) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": token or conversation.token})
    ready = await communicator.receive_json_from(timeout=5)
    return communicator, ready


async def receive_until(
    communicator: WebsocketCommunicator, *types: str, wait: float = 10
) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=wait)
        frames.append(frame)
        if frame["type"] in types:
            return frames


async def test_it_streams_a_reply_whose_deltas_add_up_to_the_saved_text(
    live_replies: ScriptedInferenceServer,
):
    live_replies.enqueue(Script(tokens=["Hel", "lo", ", ", "wor", "ld", "!"], token_delay=0.05))
    conversation = await database_sync_to_async(ConversationFactory)()
    communicator, ready = await connect(conversation)
    assert ready == {
        "type": "ready",
        "conversation": str(conversation.pk),
        "messages": [],
        "pending_reply": None,
    }

    client_id = str(uuid.uuid4())
    await communicator.send_json_to({"type": "message", "client_id": client_id, "text": "Hi there"})
    frames = await receive_until(communicator, "reply.done", "reply.error")

    accepted, started, *deltas, done = frames
    assert accepted["type"] == "message.accepted"
    assert accepted["client_id"] == client_id
    assert accepted["message"]["role"] == "customer"
    assert accepted["message"]["text"] == "Hi there"
    assert started == {"type": "reply.started", "reply_id": accepted["reply_id"]}
    assert [delta["seq"] for delta in deltas] == list(range(len(deltas)))
    assert "".join(delta["text"] for delta in deltas) == "Hello, world!"
    assert done["type"] == "reply.done"
    assert done["message"]["text"] == "Hello, world!"
    assert done["message"]["status"] == "complete"
    reply = await database_sync_to_async(Message.objects.get)(pk=accepted["reply_id"])
    assert reply.text == "Hello, world!"
    assert reply.status == Message.Status.COMPLETE
    assert reply.completion_tokens == 6
    assert reply.first_token_latency_ms is not None
    await communicator.disconnect()
