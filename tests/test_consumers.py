"""The websocket contract, through the real Redis channel layer and a scripted inference server."""

from __future__ import annotations

import asyncio
import time
import types
import uuid
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from conversations import events, progress, replies
from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from cs_platform import ratelimit
from cs_platform.asgi import application
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory


async def open_socket(conversation: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def connect(
    conversation: Any, token: str | None = None
) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    communicator = await open_socket(conversation)
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


async def assert_next_frame_answers_a_barrier(communicator: WebsocketCommunicator) -> None:
    """Nothing was sent since the last frame read: the answer to a fresh frame comes next.

    The consumer handles one frame at a time, so anything it sent for earlier frames precedes this.
    """
    await communicator.send_json_to({"type": "barrier"})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "unknown_type",
        "detail": "Unknown frame type 'barrier'.",
    }


def message_frame(text: str = "Where is my parcel?", **fields: Any) -> dict[str, Any]:
    return {"type": "message", "client_id": str(uuid.uuid4()), "text": text, **fields}


@database_sync_to_async
def create_conversation(**fields: Any) -> Conversation:
    return ConversationFactory(**fields)


@database_sync_to_async
def message_rows(conversation: Conversation) -> list[tuple[str, str, str]]:
    return [
        (message.role, message.text, message.status)
        for message in Message.objects.filter(conversation=conversation).order_by("id")
    ]


@database_sync_to_async
def get_message(pk: int) -> Message:
    return Message.objects.get(pk=pk)


@database_sync_to_async
def count(model: Any, **filters: Any) -> int:
    return int(model.objects.filter(**filters).count())


# --- authentication ------------------------------------------------------------------------------


async def test_it_closes_the_socket_with_4401_on_a_wrong_token():
    conversation = await create_conversation()
    communicator = await open_socket(conversation)

    await communicator.send_json_to({"type": "hello", "token": "not-the-token"})

    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def test_it_closes_the_socket_with_4401_on_another_conversations_token():
    conversation = await create_conversation()
    other = await create_conversation()
    communicator = await open_socket(conversation)

    await communicator.send_json_to({"type": "hello", "token": other.token})

    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def test_it_refuses_frames_before_hello_and_keeps_the_socket_open():
    conversation = await create_conversation()
    communicator = await open_socket(conversation)

    await communicator.send_json_to(message_frame())
    refused = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "hello", "token": conversation.token})
    ready = await communicator.receive_json_from(timeout=5)

    assert refused == {
        "type": "error",
        "code": "not_authenticated",
        "detail": 'Send {"type": "hello", "token": ...} first.',
    }
    assert ready == {
        "type": "ready",
        "conversation": str(conversation.pk),
        "messages": [],
        "pending_reply": None,
        "handoff": None,
    }
    assert await message_rows(conversation) == []
    await communicator.disconnect()


async def test_it_answers_a_second_hello_with_already_authenticated():
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "hello", "token": conversation.token})

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "already_authenticated",
        "detail": "Already authenticated.",
    }
    await communicator.disconnect()


# --- malformed frames ----------------------------------------------------------------------------


NOT_A_FRAME = 'A frame is a JSON object with a "type".'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{not json", {"code": "invalid_json", "detail": "The frame is not valid JSON."}),
        ("[1, 2]", {"code": "invalid_frame", "detail": NOT_A_FRAME}),
        ('"message"', {"code": "invalid_frame", "detail": NOT_A_FRAME}),
        ('{"text": "no type"}', {"code": "invalid_frame", "detail": NOT_A_FRAME}),
        ('{"type": "dance"}', {"code": "unknown_type", "detail": "Unknown frame type 'dance'."}),
    ],
)
async def test_it_answers_a_malformed_frame_with_an_error_and_saves_nothing(
    raw: str, expected: dict[str, str], enqueued_replies: list[int]
):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_to(text_data=raw)
    error = await communicator.receive_json_from(timeout=5)
    # The socket is still open and usable.
    await communicator.send_json_to(message_frame("Still there?"))
    accepted = await communicator.receive_json_from(timeout=5)

    assert error == {"type": "error", **expected}
    assert accepted["type"] == "message.accepted"
    assert await message_rows(conversation) == [
        ("customer", "Still there?", "complete"),
        ("assistant", "", "streaming"),
    ]
    await communicator.disconnect()


async def test_it_refuses_a_binary_frame():
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_to(bytes_data=b"\x00\x01")

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": "Frames are JSON text, not binary.",
    }
    assert await message_rows(conversation) == []
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("fields", "code", "detail"),
    [
        ({"client_id": "not-a-uuid"}, "invalid_frame", "client_id: Must be a valid UUID."),
        ({"attachments": ["not-a-uuid"]}, "invalid_frame", "attachments: 0: Must be a valid UUID."),
        ({"text": "   "}, "empty_message", "A message needs text or at least one image."),
        (
            {"attachments": [str(uuid.uuid4())]},
            "unknown_attachment",
            "An attachment was not found in this conversation.",
        ),
    ],
)
async def test_it_refuses_an_invalid_message_frame_and_saves_nothing(
    fields: dict[str, Any], code: str, detail: str, enqueued_replies: list[int]
):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    frame = message_frame(**fields)

    await communicator.send_json_to(frame)
    error = await communicator.receive_json_from(timeout=5)

    expected = {"type": "error", "code": code, "detail": detail, "client_id": frame["client_id"]}
    if fields.get("client_id") == "not-a-uuid":
        del expected["client_id"]  # echoed only when it is a UUID
    assert error == expected
    await assert_next_frame_answers_a_barrier(communicator)
    assert await message_rows(conversation) == []
    assert enqueued_replies == []
    await communicator.disconnect()


async def test_it_accepts_a_message_of_exactly_4000_characters(enqueued_replies: list[int]):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to(message_frame("x" * 4000))
    accepted = await communicator.receive_json_from(timeout=5)

    assert accepted["type"] == "message.accepted"
    assert len(accepted["message"]["text"]) == 4000
    await communicator.disconnect()


# --- messages and replies ------------------------------------------------------------------------


async def test_it_streams_a_reply_whose_deltas_add_up_to_the_saved_text(
    live_replies: ScriptedInferenceServer,
):
    live_replies.enqueue(Script(tokens=["Hel", "lo", ", ", "wor", "ld", "!"], token_delay=0.05))
    conversation = await create_conversation()
    communicator, ready = await connect(conversation)
    assert ready == {
        "type": "ready",
        "conversation": str(conversation.pk),
        "messages": [],
        "pending_reply": None,
        "handoff": None,
    }

    client_id = str(uuid.uuid4())
    await communicator.send_json_to({"type": "message", "client_id": client_id, "text": "Hi there"})
    accepted = await communicator.receive_json_from(timeout=5)
    # The message is saved before it is acknowledged.
    saved = await get_message(accepted["message"]["id"])
    frames = await receive_until(communicator, "reply.done", "reply.error")

    assert accepted["type"] == "message.accepted"
    assert accepted["client_id"] == client_id
    assert (saved.role, saved.text, str(saved.client_id)) == ("customer", "Hi there", client_id)
    assert accepted["message"] == {
        "id": saved.pk,
        "role": "customer",
        "text": "Hi there",
        "status": "complete",
        "attachments": [],
        "source": "customer",
        "citations": [],
        "truncated": False,
        "error": None,
        "created_at": saved.created_at.isoformat(),
    }
    started, *deltas, done = frames
    assert started == {"type": "reply.started", "reply_id": accepted["reply_id"]}
    assert {delta["type"] for delta in deltas} == {"reply.delta"}
    assert {delta["reply_id"] for delta in deltas} == {accepted["reply_id"]}
    assert [delta["seq"] for delta in deltas] == list(range(len(deltas)))
    assert "".join(delta["text"] for delta in deltas) == "Hello, world!"
    reply = await get_message(accepted["reply_id"])
    assert done == {
        "type": "reply.done",
        "reply_id": reply.pk,
        "message": {
            "id": reply.pk,
            "role": "assistant",
            "text": "Hello, world!",
            "status": "complete",
            "attachments": [],
            "source": "model",
            "citations": [],
            "truncated": False,
            "error": None,
            "created_at": reply.created_at.isoformat(),
        },
    }
    assert reply.text == "Hello, world!"
    assert reply.status == Message.Status.COMPLETE
    assert reply.reply_to_id == saved.pk
    assert reply.completion_tokens == 6
    assert reply.model == "scripted-model"
    assert reply.first_token_latency_ms is not None
    await communicator.disconnect()


async def test_it_saves_a_repeated_client_id_once_and_answers_with_the_same_message(
    live_replies: ScriptedInferenceServer,
):
    live_replies.enqueue(Script(tokens=["Once", "."]))
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    frame = message_frame("Only once, please")

    await communicator.send_json_to(frame)
    first = await receive_until(communicator, "reply.done", "reply.error")
    await communicator.send_json_to(frame)
    again = await communicator.receive_json_from(timeout=5)

    accepted = first[0]
    assert first[-1]["type"] == "reply.done"
    assert again == {
        "type": "message.accepted",
        "client_id": frame["client_id"],
        "message": accepted["message"],
        "reply_id": accepted["reply_id"],
    }
    # No second reply.started (nor anything else) for the repeat.
    await assert_next_frame_answers_a_barrier(communicator)
    assert await message_rows(conversation) == [
        ("customer", "Only once, please", "complete"),
        ("assistant", "Once.", "complete"),
    ]
    assert len(live_replies.chat_requests) == 1
    await communicator.disconnect()


async def test_it_queues_one_reply_for_a_client_id_repeated_while_the_reply_is_queued(
    enqueued_replies: list[int],
):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    frame = message_frame()

    await communicator.send_json_to(frame)
    accepted, started = await receive_until(communicator, "reply.started")
    await communicator.send_json_to(frame)
    again = await communicator.receive_json_from(timeout=5)

    assert started == {"type": "reply.started", "reply_id": accepted["reply_id"]}
    assert again == accepted
    await assert_next_frame_answers_a_barrier(communicator)
    assert enqueued_replies == [accepted["reply_id"]]
    assert await message_rows(conversation) == [
        ("customer", "Where is my parcel?", "complete"),
        ("assistant", "", "streaming"),
    ]
    await communicator.disconnect()


async def test_it_gives_a_socket_that_joins_mid_reply_the_text_so_far_and_the_rest_without_gaps(
    live_replies: ScriptedInferenceServer,
):
    tokens = [f"t{index} " for index in range(30)]
    live_replies.enqueue(Script(tokens=tokens, token_delay=0.05))
    conversation = await create_conversation()
    first, _ = await connect(conversation)
    await first.send_json_to(message_frame())
    accepted, _started = await receive_until(first, "reply.started")
    first_deltas: list[dict[str, Any]] = []
    while not first_deltas or first_deltas[-1]["seq"] < 2:
        first_deltas += await receive_until(first, "reply.delta")

    second, ready = await connect(conversation)
    second_frames = await receive_until(second, "reply.done", "reply.error")
    first_frames = await receive_until(first, "reply.done", "reply.error")

    reply_id = accepted["reply_id"]
    pending = ready["pending_reply"]
    assert set(pending) == {"reply_id", "text", "seq"}
    assert pending["reply_id"] == reply_id
    assert pending["seq"] >= 2
    assert [(message["role"], message["status"]) for message in ready["messages"]] == [
        ("customer", "complete"),
        ("assistant", "streaming"),
    ]
    *later_deltas, done = second_frames
    assert [delta["seq"] for delta in later_deltas] == list(
        range(pending["seq"] + 1, pending["seq"] + 1 + len(later_deltas))
    )
    assert {delta["type"] for delta in later_deltas} == {"reply.delta"}
    final = "".join(tokens)
    assert pending["text"] + "".join(delta["text"] for delta in later_deltas) == final
    assert done["type"] == "reply.done"
    assert done["message"]["text"] == final
    # The first socket saw every delta exactly once, too.
    first_all = first_deltas + first_frames[:-1]
    assert [delta["seq"] for delta in first_all] == list(range(len(first_all)))
    assert "".join(delta["text"] for delta in first_all) == final
    assert first_frames[-1] == done
    assert (await get_message(reply_id)).text == final
    await first.disconnect()
    await second.disconnect()


async def test_it_gives_a_socket_that_reconnects_after_the_reply_the_saved_history(
    live_replies: ScriptedInferenceServer,
):
    live_replies.enqueue(Script(tokens=["All", " done"]))
    conversation = await create_conversation()
    first, _ = await connect(conversation)
    await first.send_json_to(message_frame("Is it done?"))
    frames = await receive_until(first, "reply.done", "reply.error")
    await first.disconnect()

    second, ready = await connect(conversation)

    accepted, done = frames[0], frames[-1]
    assert done["type"] == "reply.done"
    assert ready == {
        "type": "ready",
        "conversation": str(conversation.pk),
        "messages": [accepted["message"], done["message"]],
        "pending_reply": None,
        "handoff": None,
    }
    assert ready["messages"][1]["text"] == "All done"
    await assert_next_frame_answers_a_barrier(second)
    await second.disconnect()


async def test_it_skips_deltas_already_in_the_text_a_joining_socket_got_with_ready(
    enqueued_replies: list[int],
):
    conversation = await create_conversation()
    first, _ = await connect(conversation)
    await first.send_json_to(message_frame())
    accepted, _started = await receive_until(first, "reply.started")
    reply_id = accepted["reply_id"]
    # A generation that has sent deltas 0 and 1, as a worker records them before sending each.
    await sync_to_async(progress.reply_text_append)(reply_id, ["Hel", "lo"])
    second, ready = await connect(conversation)
    layer = get_channel_layer()
    assert layer is not None
    group = events.conversation_group(conversation.pk)

    # Delta 1 raced the snapshot: it is in `ready` already, and arrives again through the group.
    for seq, text in [(1, "lo"), (2, " world")]:
        await layer.group_send(group, {"type": "reply.delta", "reply_id": reply_id, "seq": seq, "text": text})

    assert ready["pending_reply"] == {"reply_id": reply_id, "text": "Hello", "seq": 1}
    assert await second.receive_json_from(timeout=5) == {
        "type": "reply.delta",
        "reply_id": reply_id,
        "seq": 2,
        "text": " world",
    }
    # The socket that was there all along gets every delta.
    assert [frame["seq"] for frame in await receive_until(first, "reply.delta")] == [1]
    assert [frame["seq"] for frame in await receive_until(first, "reply.delta")] == [2]
    await first.disconnect()
    await second.disconnect()


async def test_it_passes_no_delta_that_arrives_after_its_replys_final_frame(enqueued_replies: list[int]):
    # A worker whose reply the sweeper failed may still flush a delta before its next heartbeat says
    # so: the customer, who has the reply.error, must not see the reply grow again.
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    await communicator.send_json_to(message_frame())
    accepted, _started = await receive_until(communicator, "reply.started")
    reply_id = accepted["reply_id"]
    failed = await database_sync_to_async(replies.reply_fail)(reply_id=reply_id, code="worker_lost")
    assert failed is not None
    [error] = await receive_until(communicator, "reply.error")
    layer = get_channel_layer()
    assert layer is not None

    await layer.group_send(
        events.conversation_group(conversation.pk),
        events.reply_delta_event(reply_id=reply_id, seq=5, text=" late"),
    )
    # A second final frame for it (one sent again once the channel layer was back) is dropped too.
    await layer.group_send(events.conversation_group(conversation.pk), error)

    # Events through the group arrive in order: this one comes next only if those two were dropped.
    marker = events.reply_delta_event(reply_id=reply_id + 1, seq=0, text="next reply")
    await layer.group_send(events.conversation_group(conversation.pk), marker)

    assert (error["code"], error["message"]["status"]) == ("worker_lost", "failed")
    assert await communicator.receive_json_from(timeout=5) == marker
    await communicator.disconnect()


async def test_it_sends_the_conversation_again_when_the_channel_layer_is_back_after_an_outage(
    enqueued_replies: list[int],
):
    # While Redis was away, what was sent to the group was lost (here: the reply's deltas 1 and 2 and
    # its final frame). Once the layer has re-joined, the socket gets the conversation as saved.
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    await communicator.send_json_to(message_frame())
    accepted, _started = await receive_until(communicator, "reply.started")
    reply_id = accepted["reply_id"]
    await sync_to_async(progress.reply_text_append)(reply_id, ["Hel", "lo"])
    layer = get_channel_layer()
    assert layer is not None
    group = events.conversation_group(conversation.pk)

    await layer.group_send(group, {"type": "layer.rejoined"})

    resync = await communicator.receive_json_from(timeout=5)
    assert resync["type"] == "ready"
    assert resync["pending_reply"] == {"reply_id": reply_id, "text": "Hello", "seq": 1}
    assert [message["id"] for message in resync["messages"]] == [accepted["message"]["id"], reply_id]
    # Deltas continue after the new snapshot, and one already in it is not passed on again.
    await layer.group_send(group, events.reply_delta_event(reply_id=reply_id, seq=1, text="lo"))
    await layer.group_send(group, events.reply_delta_event(reply_id=reply_id, seq=2, text="!"))
    assert await communicator.receive_json_from(timeout=5) == events.reply_delta_event(
        reply_id=reply_id, seq=2, text="!"
    )
    await communicator.disconnect()


async def test_it_passes_no_final_frame_for_a_reply_the_resynchronised_socket_has_as_finished(
    enqueued_replies: list[int],
):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    await communicator.send_json_to(message_frame())
    accepted, _started = await receive_until(communicator, "reply.started")
    reply_id = accepted["reply_id"]
    # The reply ended while the layer was away: its final frame was lost, the saved reply was not.
    await database_sync_to_async(replies.reply_finish)(
        reply_id=reply_id, text="Done.", outcome=replies.ReplyOutcome.COMPLETE
    )
    layer = get_channel_layer()
    assert layer is not None
    group = events.conversation_group(conversation.pk)

    await layer.group_send(group, {"type": "layer.rejoined"})
    resync = await communicator.receive_json_from(timeout=5)
    done = await database_sync_to_async(lambda: events.reply_done_event(Message.objects.get(pk=reply_id)))()
    await layer.group_send(group, done)  # the final frame, sent again
    marker = events.reply_delta_event(reply_id=reply_id + 1, seq=0, text="next reply")
    await layer.group_send(group, marker)

    assert resync["pending_reply"] is None
    assert [(message["id"], message["status"], message["text"]) for message in resync["messages"][1:]] == [
        (reply_id, "complete", "Done.")
    ]
    assert await communicator.receive_json_from(timeout=5) == marker
    await communicator.disconnect()


# --- cancel --------------------------------------------------------------------------------------


async def test_it_cancels_a_streaming_reply_keeping_its_text_and_closing_the_inference_stream(
    live_replies: ScriptedInferenceServer,
):
    live_replies.enqueue(Script(tokens=["One", " two", " three"], stall_after=2, stall_seconds=30))
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    await communicator.send_json_to(message_frame())
    accepted, _started = await receive_until(communicator, "reply.started")
    text = ""
    while text != "One two":
        [delta] = await receive_until(communicator, "reply.delta")
        text += delta["text"]

    cancelled_at = time.monotonic()
    await communicator.send_json_to({"type": "cancel", "reply_id": accepted["reply_id"]})
    done = await communicator.receive_json_from(timeout=5)
    await live_replies.wait_for_disconnects_async(1, timeout=3)

    reply = await get_message(accepted["reply_id"])
    assert done == {
        "type": "reply.done",
        "reply_id": reply.pk,
        "message": {
            "id": reply.pk,
            "role": "assistant",
            "text": "One two",
            "status": "cancelled",
            "attachments": [],
            "source": "model",
            "citations": [],
            "truncated": False,
            "error": None,
            "created_at": reply.created_at.isoformat(),
        },
    }
    assert (reply.text, reply.status, reply.error_code) == ("One two", "cancelled", "")
    assert reply.cancel_requested_at is not None
    [request] = live_replies.disconnects
    assert request.disconnected_at is not None
    assert request.disconnected_at - cancelled_at < 3
    assert not request.completed
    await communicator.disconnect()


async def test_it_cancels_a_reply_no_worker_has_started(enqueued_replies: list[int]):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    await communicator.send_json_to(message_frame())
    accepted, _started = await receive_until(communicator, "reply.started")

    await communicator.send_json_to({"type": "cancel", "reply_id": accepted["reply_id"]})
    done = await communicator.receive_json_from(timeout=5)

    reply = await get_message(accepted["reply_id"])
    assert done == {
        "type": "reply.done",
        "reply_id": reply.pk,
        "message": {
            "id": reply.pk,
            "role": "assistant",
            "text": "",
            "status": "cancelled",
            "attachments": [],
            "source": "model",
            "citations": [],
            "truncated": False,
            "error": None,
            "created_at": reply.created_at.isoformat(),
        },
    }
    assert reply.status == Message.Status.CANCELLED
    assert reply.completed_at is not None
    assert reply.generation_started_at is None
    # A worker that takes the job afterwards finds nothing to do.
    assert await database_sync_to_async(replies.reply_claim)(reply_id=reply.pk) is False
    await communicator.disconnect()


async def test_it_answers_cancel_of_a_finished_reply_with_the_reply_as_it_is():
    conversation = await create_conversation()
    question = await database_sync_to_async(MessageFactory)(conversation=conversation)
    reply = await database_sync_to_async(MessageFactory)(
        conversation=conversation, role="assistant", text="Done already.", reply_to=question
    )
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "cancel", "reply_id": reply.pk})
    done = await communicator.receive_json_from(timeout=5)

    assert done["type"] == "reply.done"
    assert (done["message"]["text"], done["message"]["status"]) == ("Done already.", "complete")
    reloaded = await get_message(reply.pk)
    assert (reloaded.status, reloaded.cancel_requested_at) == ("complete", None)
    await communicator.disconnect()


@pytest.mark.parametrize("whose", ["missing", "other_conversation", "customer_message"])
async def test_it_answers_cancel_of_an_unknown_reply_with_unknown_reply(whose: str):
    conversation = await create_conversation()
    other_reply = await database_sync_to_async(MessageFactory)(role="assistant", status="streaming", text="")
    own_message = await database_sync_to_async(MessageFactory)(conversation=conversation)
    reply_id = {
        "missing": 987_654_321,
        "other_conversation": other_reply.pk,
        "customer_message": own_message.pk,
    }[whose]
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "cancel", "reply_id": reply_id})

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "unknown_reply",
        "detail": "There is no such reply in this conversation.",
    }
    untouched = await get_message(other_reply.pk)
    assert (untouched.status, untouched.cancel_requested_at) == ("streaming", None)
    await communicator.disconnect()


async def test_it_refuses_a_cancel_frame_without_a_valid_reply_id():
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "cancel", "reply_id": "soon"})

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": "reply_id: A valid integer is required.",
    }
    await communicator.disconnect()


# --- feedback, satisfaction, handoff ----------------------------------------------------------------


async def test_it_saves_feedback_on_a_reply_and_lets_the_customer_change_it():
    conversation = await create_conversation()
    reply = await database_sync_to_async(MessageFactory)(
        conversation=conversation, role="assistant", text="Try turning it off and on."
    )
    communicator, _ = await connect(conversation)

    await communicator.send_json_to(
        {"type": "feedback", "message_id": reply.pk, "rating": -1, "comment": " Did not help "}
    )
    saved = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "feedback", "message_id": reply.pk, "rating": 1})
    changed = await communicator.receive_json_from(timeout=5)

    assert saved == {"type": "feedback.saved", "message_id": reply.pk, "rating": -1}
    assert changed == {"type": "feedback.saved", "message_id": reply.pk, "rating": 1}
    feedback = await database_sync_to_async(Feedback.objects.get)(message_id=reply.pk)
    assert (feedback.rating, feedback.comment) == (1, "")
    assert await count(Feedback) == 1
    await communicator.disconnect()


UNKNOWN_MESSAGE = "There is no such assistant reply in this conversation."


@pytest.mark.parametrize(
    ("frame", "code", "detail"),
    [
        ({"rating": 5}, "invalid_frame", 'rating: "5" is not a valid choice.'),
        ({"rating": 0}, "invalid_frame", 'rating: "0" is not a valid choice.'),
        ({"rating": None}, "invalid_frame", "rating: This field may not be null."),
        ({"message_id": 987_654_321}, "unknown_message", UNKNOWN_MESSAGE),
        ({"message_id": "customer"}, "unknown_message", UNKNOWN_MESSAGE),
    ],
)
async def test_it_refuses_invalid_feedback_and_saves_nothing(frame: dict[str, Any], code: str, detail: str):
    conversation = await create_conversation()
    reply = await database_sync_to_async(MessageFactory)(conversation=conversation, role="assistant")
    question = await database_sync_to_async(MessageFactory)(conversation=conversation)
    if frame.get("message_id") == "customer":
        frame = {**frame, "message_id": question.pk}
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "feedback", "message_id": reply.pk, "rating": 1, **frame})

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": code,
        "detail": detail,
    }
    assert await count(Feedback) == 0
    await communicator.disconnect()


async def test_it_saves_a_satisfaction_score_and_lets_the_customer_change_it():
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "csat", "score": 2, "comment": "Slow"})
    first = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "csat", "score": 5})
    second = await communicator.receive_json_from(timeout=5)

    assert first == {"type": "csat.saved", "score": 2}
    assert second == {"type": "csat.saved", "score": 5}
    rating = await database_sync_to_async(SatisfactionRating.objects.get)(conversation=conversation)
    assert (rating.score, rating.comment) == (5, "")
    assert await count(SatisfactionRating) == 1
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("score", "detail"),
    [
        (0, "score: Ensure this value is greater than or equal to 1."),
        (6, "score: Ensure this value is less than or equal to 5."),
        ("great", "score: A valid integer is required."),
    ],
)
async def test_it_refuses_an_invalid_satisfaction_score_and_saves_nothing(score: Any, detail: str):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "csat", "score": score})

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": detail,
    }
    assert await count(SatisfactionRating) == 0
    await communicator.disconnect()


async def test_it_hands_off_to_a_person_and_then_stops_ai_replies(enqueued_replies: list[int]):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "handoff", "reason": " I want a person "})
    started = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to(message_frame("Hello? Anyone?"))
    accepted = await communicator.receive_json_from(timeout=5)

    ticket = await database_sync_to_async(Ticket.objects.get)(conversation=conversation)
    notice = started.pop("message")
    # No team hours are set on the test database: the team is always in, and this is the only ticket.
    assert started == {
        "type": "handoff.started",
        "ticket_id": ticket.pk,
        "ticket": ticket.pk,
        "position": 1,
        "expected_wait_minutes": 5,
        "business_hours_open": True,
        "opens_at": None,
        "time_zone": "Asia/Shanghai",
    }
    assert (notice["role"], notice["text"]) == ("system", "A person will join this conversation shortly.")
    assert (ticket.status, ticket.reason) == ("open", "I want a person")
    assert (await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)).status == "handed_off"
    assert accepted["type"] == "message.accepted"
    assert accepted["reply_id"] is None
    assert accepted["message"]["text"] == "Hello? Anyone?"
    # No reply.started: the next frame answers the barrier.
    await assert_next_frame_answers_a_barrier(communicator)
    assert await message_rows(conversation) == [
        ("system", "A person will join this conversation shortly.", "complete"),
        ("customer", "Hello? Anyone?", "complete"),
    ]
    assert enqueued_replies == []
    await communicator.disconnect()


async def test_it_keeps_one_ticket_when_the_customer_asks_for_a_person_twice():
    conversation = await create_conversation(locale="zh-Hans")
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "handoff", "reason": "人工"})
    first = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "handoff"})
    second = await communicator.receive_json_from(timeout=5)

    assert first == second
    assert await count(Ticket, conversation=conversation) == 1
    assert await message_rows(conversation) == [("system", "已为您转接人工客服，请稍候。", "complete")]
    await communicator.disconnect()


# --- rate limit ----------------------------------------------------------------------------------


async def test_it_refuses_messages_over_the_rate_limit_and_saves_none_of_them(
    settings: Any, monkeypatch: pytest.MonkeyPatch, enqueued_replies: list[int]
):
    settings.WIDGET_MESSAGES_PER_MINUTE = 2
    # One fixed minute, so that the test cannot straddle two counting windows.
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=lambda: 1_800_000_000.0))
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    answers = []
    frames = [message_frame(f"Message {number}") for number in range(3)]
    for frame in frames:
        await communicator.send_json_to(frame)
        # Skip the reply events (started, and done for the reply a later message supersedes).
        answer = await communicator.receive_json_from(timeout=5)
        while answer["type"].startswith("reply."):
            answer = await communicator.receive_json_from(timeout=5)
        answers.append(answer)

    assert [answer["type"] for answer in answers] == ["message.accepted", "message.accepted", "error"]
    # When the customer may send again: the seconds left in the limit's one-minute window.
    retry_after = answers[2].pop("retry_after")
    assert isinstance(retry_after, int)
    assert 1 <= retry_after <= 60
    assert answers[2] == {
        "type": "error",
        "code": "rate_limited",
        "detail": "Too many messages; please wait a minute before sending more.",
        "client_id": frames[2]["client_id"],
    }
    assert [row for row in await message_rows(conversation) if row[0] == "customer"] == [
        ("customer", "Message 0", "complete"),
        ("customer", "Message 1", "complete"),
    ]
    assert len(enqueued_replies) == 2
    # The limit is per conversation: another conversation may still talk.
    other = await create_conversation()
    other_communicator, _ = await connect(other)
    await other_communicator.send_json_to(message_frame())
    assert (await other_communicator.receive_json_from(timeout=5))["type"] == "message.accepted"
    await communicator.disconnect()
    await other_communicator.disconnect()


async def test_it_does_not_count_a_resent_message_against_the_rate_limit(
    settings: Any, monkeypatch: pytest.MonkeyPatch, enqueued_replies: list[int]
):
    settings.WIDGET_MESSAGES_PER_MINUTE = 1
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=lambda: 1_800_000_000.0))
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    frame = message_frame("Only once")
    await communicator.send_json_to(frame)
    first = await receive_until(communicator, "message.accepted")

    # After a reconnect the widget re-sends what it has not seen accepted, with the same client_id.
    await communicator.send_json_to(frame)
    again = await receive_until(communicator, "message.accepted", "error")

    assert again[-1]["type"] == "message.accepted"
    assert again[-1]["message"]["id"] == first[-1]["message"]["id"]
    assert [row for row in await message_rows(conversation) if row[0] == "customer"] == [
        ("customer", "Only once", "complete")
    ]
    assert len(enqueued_replies) == 1
    await communicator.disconnect()


# Channels' hop before a handler: channels.testing runs it with no_op for close_old_connections.
CLOSE_OLD_CONNECTIONS = "no_op"


@pytest.fixture
def thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sync functions run through asgiref's sync_to_async, each a hop to a thread, by name."""
    hops: list[str] = []
    original = SyncToAsync.__call__

    async def counted(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(self.func, "__name__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return hops


async def test_it_counts_the_rate_limit_and_saves_a_message_in_one_hop_to_the_database_thread(
    thread_hops: list[str], enqueued_replies: list[int]
):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    thread_hops.clear()

    await communicator.send_json_to(message_frame())
    accepted, started = await receive_until(communicator, "reply.started")

    assert accepted["type"] == "message.accepted"
    assert started == {"type": "reply.started", "reply_id": accepted["reply_id"]}
    # Channels' own hop for a client frame (it closes stale connections), then the consumer's one.
    assert thread_hops == [CLOSE_OLD_CONNECTIONS, "_message_post"]
    assert enqueued_replies == [accepted["reply_id"]]
    await communicator.disconnect()


async def test_it_answers_a_message_resent_over_the_rate_limit_and_gives_its_hit_back(
    settings: Any, monkeypatch: pytest.MonkeyPatch, enqueued_replies: list[int]
):
    settings.WIDGET_MESSAGES_PER_MINUTE = 2
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=lambda: 1_800_000_000.0))
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    first, second = message_frame("First"), message_frame("Second")
    answers = []
    for frame in (first, first, second, second, message_frame("Third")):
        await communicator.send_json_to(frame)
        answers.append((await receive_until(communicator, "message.accepted", "error"))[-1])

    # The resends of First (under the limit) and of Second (at it) took no hit: Third is the third.
    assert [answer["type"] for answer in answers] == [
        "message.accepted",
        "message.accepted",
        "message.accepted",
        "message.accepted",
        "error",
    ]
    assert answers[1]["message"]["id"] == answers[0]["message"]["id"]
    assert answers[3]["message"]["id"] == answers[2]["message"]["id"]
    assert answers[4]["code"] == "rate_limited"
    assert [row[1] for row in await message_rows(conversation) if row[0] == "customer"] == [
        "First",
        "Second",
    ]
    assert len(enqueued_replies) == 2
    await communicator.disconnect()


async def test_it_passes_reply_events_on_without_a_hop_to_the_database_thread(thread_hops: list[str]):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    layer = get_channel_layer()
    assert layer is not None
    group = events.conversation_group(conversation.pk)
    delta = events.reply_delta_event(reply_id=7, seq=0, text="Hel")
    done = {"type": "reply.done", "reply_id": 7, "message": {"id": 7}}
    error = {"type": "reply.error", "reply_id": 8, "code": "inference_error", "detail": "Sorry."}
    thread_hops.clear()

    for event in (delta, done, error):
        await layer.group_send(group, event)
        assert await communicator.receive_json_from(timeout=5) == event

    assert thread_hops == []
    # An event whose handler reads the database keeps channels' hop before it.
    await layer.group_send(group, {"type": "layer.rejoined"})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"
    assert thread_hops == [CLOSE_OLD_CONNECTIONS, "_ready_frame"]
    await communicator.disconnect()


async def test_it_closes_a_socket_that_never_says_hello(settings: Any):
    settings.WIDGET_HELLO_TIMEOUT_SECONDS = 0.2
    conversation = await create_conversation()
    communicator = await open_socket(conversation)

    closed = await communicator.receive_output(timeout=3)

    assert closed == {"type": "websocket.close", "code": 4408}


async def test_it_keeps_a_socket_that_said_hello_in_time(settings: Any):
    settings.WIDGET_HELLO_TIMEOUT_SECONDS = 0.2
    conversation = await create_conversation()
    communicator, ready = await connect(conversation)
    assert ready["type"] == "ready"

    await asyncio.sleep(0.5)
    await communicator.send_json_to({"type": "csat", "score": 5, "comment": ""})

    assert await communicator.receive_json_from(timeout=5) == {"type": "csat.saved", "score": 5}
    await communicator.disconnect()


@pytest.mark.parametrize("path", ["/ws/other/", "/ws/conversations/not-a-uuid/", "/nothing"])
async def test_it_closes_a_websocket_on_an_unknown_path_with_4404_and_no_error_log(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    communicator = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost")])

    with caplog.at_level("WARNING"):
        connected, _ = await communicator.connect()
        closed = await communicator.receive_output(timeout=5)

    assert connected is True
    assert closed == {"type": "websocket.close", "code": 4404}
    assert [record for record in caplog.records if record.levelname in {"ERROR", "CRITICAL"}] == []
    await communicator.wait()


@pytest.mark.parametrize(
    ("fields", "code", "detail"),
    [
        ({"text": "x" * 4001}, "message_too_long", "A message can be at most 4000 characters."),
        # Past four times the limit the frame itself refuses it, before any other work.
        ({"text": "x" * 16001}, "message_too_long", "A message can be at most 4000 characters."),
        (
            {"attachments": [str(uuid.uuid4()) for _ in range(5)]},
            "too_many_attachments",
            "A message can carry at most 4 images.",
        ),
        (
            {"attachments": [str(uuid.uuid4()) for _ in range(17)]},
            "too_many_attachments",
            "A message can carry at most 4 images.",
        ),
        ({"text": 42}, "invalid_frame", "text: Not a valid string."),
        ({"text": ["a"]}, "invalid_frame", "text: Not a valid string."),
    ],
)
async def test_it_refuses_a_message_frame_with_its_documented_code_and_saves_nothing(
    fields: dict[str, Any], code: str, detail: str, enqueued_replies: list[int]
):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    frame = message_frame(**fields)

    await communicator.send_json_to(frame)
    error = await communicator.receive_json_from(timeout=5)

    expected = {"type": "error", "code": code, "detail": detail, "client_id": frame["client_id"]}
    if fields.get("client_id") == "not-a-uuid":
        del expected["client_id"]  # echoed only when it is a UUID
    assert error == expected
    await assert_next_frame_answers_a_barrier(communicator)
    assert await message_rows(conversation) == []
    assert enqueued_replies == []
    await communicator.disconnect()


@pytest.mark.parametrize("score", [3.0, "3", True, 4.5])
async def test_it_refuses_a_satisfaction_score_that_is_not_a_json_whole_number(score: Any):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "csat", "score": score})

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": "score: A valid integer is required.",
    }
    assert await count(SatisfactionRating) == 0
    await communicator.disconnect()


async def test_it_refuses_a_handoff_reason_that_is_not_a_string():
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "handoff", "reason": 12345})

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": "reason: Not a valid string.",
    }
    assert await count(Ticket) == 0
    await communicator.disconnect()


async def test_it_echoes_a_client_id_in_an_error_only_when_it_is_a_uuid(enqueued_replies: list[int]):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)

    await communicator.send_json_to({"type": "message", "client_id": "x" * 10_000, "text": "Hi"})
    refused = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to(message_frame(text=""))
    empty = await communicator.receive_json_from(timeout=5)

    assert refused == {
        "type": "error",
        "code": "invalid_frame",
        "detail": "client_id: Must be a valid UUID.",
    }
    assert (empty["code"], empty["client_id"]) == ("empty_message", empty["client_id"])
    assert uuid.UUID(empty["client_id"])
    assert await message_rows(conversation) == []
    await communicator.disconnect()


async def test_it_tells_every_socket_of_the_conversation_when_a_reply_is_cancelled_before_it_started(
    enqueued_replies: list[int],
):
    conversation = await create_conversation()
    canceller, _ = await connect(conversation)
    other_tab, _ = await connect(conversation)
    await canceller.send_json_to(message_frame())
    accepted, _started = await receive_until(canceller, "reply.started")

    await canceller.send_json_to({"type": "cancel", "reply_id": accepted["reply_id"]})

    [done] = await receive_until(canceller, "reply.done")
    assert (done["reply_id"], done["message"]["status"]) == (accepted["reply_id"], "cancelled")
    # The other tab is told too, and the canceller gets one final frame, not two.
    [other_done] = await receive_until(other_tab, "reply.done")
    assert other_done == done
    await assert_next_frame_answers_a_barrier(canceller)
    await canceller.disconnect()
    await other_tab.disconnect()


async def test_it_passes_a_delta_sent_twice_on_once(enqueued_replies: list[int]):
    conversation = await create_conversation()
    communicator, _ = await connect(conversation)
    await communicator.send_json_to(message_frame())
    accepted, _started = await receive_until(communicator, "reply.started")
    reply_id = accepted["reply_id"]
    layer = get_channel_layer()
    assert layer is not None
    group = events.conversation_group(conversation.pk)

    # A retried group_send after a connection dropped mid-command may deliver the same delta again.
    for seq, text in [(0, "Hel"), (0, "Hel"), (1, "lo")]:
        await layer.group_send(group, events.reply_delta_event(reply_id=reply_id, seq=seq, text=text))

    assert [frame["seq"] for frame in await receive_until(communicator, "reply.delta")] == [0]
    assert await communicator.receive_json_from(timeout=5) == events.reply_delta_event(
        reply_id=reply_id, seq=1, text="lo"
    )
    await communicator.disconnect()
