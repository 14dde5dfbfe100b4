"""The agent console's websocket and the customer's side of it, through the real Redis channel layer."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client

from conversations import progress, services
from conversations.events import AGENTS_QUEUE_GROUP
from conversations.models import Conversation, Message, Ticket
from cs_platform.asgi import application
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

_counter = iter(range(10**6))


@database_sync_to_async
def make_agent(group: str | None = "Agent", **fields: Any) -> tuple[User, str]:
    """A user in `group` and the session cookie of a browser logged in as them."""
    user = User.objects.create_user(
        username=f"socket-agent{next(_counter)}", password="a-long-test-password", **fields
    )
    if group is not None:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    return user, client.cookies[settings.SESSION_COOKIE_NAME].value


@database_sync_to_async
def handed_off(reason: str = "Wants a person") -> Conversation:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="My parcel never arrived.")
    services.handoff_request(conversation=conversation, reason=reason)
    conversation.refresh_from_db()
    return conversation


@database_sync_to_async
def agent_post(session: str, path: str, body: Any = None) -> Any:
    """A console write as the browser makes it: session cookie and CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.cookies[settings.SESSION_COOKIE_NAME] = session
    token = client.get("/api/agent/session").json()["csrf_token"]
    return client.post(path, json.dumps(body or {}), content_type="application/json", HTTP_X_CSRFTOKEN=token)


@database_sync_to_async
def widget_history(conversation: Conversation) -> list[dict[str, Any]]:
    response = Client().get(
        f"/api/widget/conversations/{conversation.pk}/messages",
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",  # type: ignore[attr-defined]
    )
    assert response.status_code == 200
    return list(response.json()["messages"])


async def agent_socket(session: str | None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost")]
    if session is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/agent/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def connected_agent(session: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    """A console socket and the queue.updated it got on connecting (its presence.updated read past)."""
    communicator = await agent_socket(session)
    queue = await communicator.receive_json_from(timeout=5)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "presence.updated"
    return communicator, queue


async def customer_socket(conversation: Conversation) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": conversation.token})  # type: ignore[attr-defined]
    return communicator, await communicator.receive_json_from(timeout=5)


async def open_conversation(
    communicator: WebsocketCommunicator, conversation: Conversation
) -> dict[str, Any]:
    await communicator.send_json_to({"type": "open", "conversation": str(conversation.pk)})
    return await receive_type(communicator, "conversation.opened")


async def receive_type(communicator: WebsocketCommunicator, frame_type: str) -> dict[str, Any]:
    """The next frame of this type, skipping others (queue refreshes arrive whenever anything changes)."""
    while True:
        frame = await communicator.receive_json_from(timeout=5)
        if frame["type"] == frame_type:
            return frame


async def assert_customer_got_nothing_more(communicator: WebsocketCommunicator) -> None:
    """Nothing reached the customer since the last frame read: the answer to a fresh frame comes next."""
    await communicator.send_json_to({"type": "barrier"})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "unknown_type",
        "detail": "Unknown frame type 'barrier'.",
    }


async def assert_agent_got_nothing_more(communicator: WebsocketCommunicator) -> None:
    await communicator.send_json_to({"type": "barrier"})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "unknown_type",
        "detail": "Unknown frame type 'barrier'.",
    }


# --- who may connect --------------------------------------------------------------------------------


async def test_it_closes_a_socket_without_a_session_with_4401():
    communicator = await agent_socket(None)

    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def test_it_closes_the_socket_of_staff_outside_the_agent_groups_with_4403():
    _, session = await make_agent(group=None, is_staff=True)
    communicator = await agent_socket(session)

    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}
    await communicator.disconnect()


# --- the queue ----------------------------------------------------------------------------------------


async def test_it_sends_the_waiting_queue_on_connect():
    first = await handed_off(reason="First")
    second = await handed_off(reason="Second")
    _, session = await make_agent()

    communicator, frame = await connected_agent(session)

    assert frame["type"] == "queue.updated"
    assert [row["id"] for row in frame["conversations"]] == [str(first.pk), str(second.pk)]
    assert [row["ticket"]["reason"] for row in frame["conversations"]] == ["First", "Second"]
    assert frame["mine"] == []
    assert frame["counts"] == {"waiting": 2, "mine": 0}
    await communicator.disconnect()


async def test_it_updates_every_agents_queue_when_a_customer_asks_for_a_person():
    _, session = await make_agent()
    agent, first = await connected_agent(session)
    conversation = await database_sync_to_async(ConversationFactory)()
    customer, _ = await customer_socket(conversation)

    await customer.send_json_to({"type": "handoff", "reason": "I want a human"})
    updated = await receive_type(agent, "queue.updated")

    assert first["conversations"] == []
    assert [row["id"] for row in updated["conversations"]] == [str(conversation.pk)]
    assert updated["conversations"][0]["ticket"]["reason"] == "I want a human"
    await customer.disconnect()
    await agent.disconnect()


async def test_it_takes_a_claimed_conversation_off_the_other_agents_queue():
    conversation = await handed_off()
    _, my_session = await make_agent()
    _, their_session = await make_agent()
    mine, _ = await connected_agent(my_session)
    theirs, before = await connected_agent(their_session)

    response = await agent_post(my_session, f"/api/agent/conversations/{conversation.pk}/claim")
    their_update = await receive_type(theirs, "queue.updated")
    my_update = await receive_type(mine, "queue.updated")

    assert response.status_code == 200
    assert [row["id"] for row in before["conversations"]] == [str(conversation.pk)]
    assert their_update["conversations"] == []
    assert their_update["counts"] == {"waiting": 0, "mine": 0}
    assert [row["id"] for row in my_update["mine"]] == [str(conversation.pk)]
    assert my_update["counts"] == {"waiting": 0, "mine": 1}
    await mine.disconnect()
    await theirs.disconnect()


async def test_it_updates_the_queue_when_a_waiting_customer_writes_again():
    conversation = await handed_off()
    _, session = await make_agent()
    agent, before = await connected_agent(session)
    customer, _ = await customer_socket(conversation)

    await customer.send_json_to({"type": "message", "client_id": str(uuid.uuid4()), "text": "Hello? Anyone?"})
    updated = await receive_type(agent, "queue.updated")

    assert before["conversations"][0]["last_message"]["text"] == "My parcel never arrived."
    assert [row["id"] for row in updated["conversations"]] == [str(conversation.pk)]
    assert updated["conversations"][0]["last_message"]["text"] == "Hello? Anyone?"
    await customer.disconnect()
    await agent.disconnect()


async def test_it_sends_the_queue_again_when_asked():
    await handed_off()
    _, session = await make_agent()
    communicator, first = await connected_agent(session)

    await communicator.send_json_to({"type": "queue"})
    again = await communicator.receive_json_from(timeout=5)

    assert again == first
    await communicator.disconnect()


# --- an open conversation ---------------------------------------------------------------------------------


async def test_it_sends_the_whole_conversation_when_an_agent_opens_it():
    conversation = await handed_off()
    _, session = await make_agent()
    communicator, _ = await connected_agent(session)

    opened = await open_conversation(communicator, conversation)

    assert opened["conversation"]["id"] == str(conversation.pk)
    assert opened["messages"][0]["text"] == "My parcel never arrived."
    assert opened["ticket"]["reason"] == "Wants a person"
    await communicator.disconnect()


async def test_it_sends_the_reply_still_streaming_with_its_text_so_far_when_an_agent_opens_it():
    conversation = await database_sync_to_async(ConversationFactory)()
    question = await database_sync_to_async(MessageFactory)(conversation=conversation, text="Where is it?")
    reply = await database_sync_to_async(MessageFactory)(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        text="",
        reply_to=question,
    )
    # A generation that has sent deltas 0 and 1, as a worker records them before sending each.
    await database_sync_to_async(progress.reply_text_append)(reply.pk, ["Hel", "lo"])
    _, session = await make_agent(group="Supervisor")
    communicator, _ = await connected_agent(session)

    opened = await open_conversation(communicator, conversation)

    assert opened["pending_reply"] == {"reply_id": reply.pk, "text": "Hello", "seq": 1}
    assert [message["id"] for message in opened["messages"]] == [question.pk, reply.pk]
    await communicator.disconnect()


async def test_it_sends_no_pending_reply_when_no_reply_is_streaming():
    conversation = await handed_off()
    _, session = await make_agent()
    communicator, _ = await connected_agent(session)

    opened = await open_conversation(communicator, conversation)

    assert opened["pending_reply"] is None
    await communicator.disconnect()


async def test_it_refuses_to_open_an_unknown_or_malformed_conversation_and_stays_open():
    _, session = await make_agent()
    communicator, _ = await connected_agent(session)

    await communicator.send_json_to({"type": "open", "conversation": str(uuid.uuid4())})
    unknown = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to({"type": "open", "conversation": 12})
    malformed = await communicator.receive_json_from(timeout=5)

    assert unknown == {"type": "error", "code": "not_found", "detail": "There is no such conversation."}
    assert malformed == {
        "type": "error",
        "code": "invalid_frame",
        "detail": '"conversation" must be a conversation id (a UUID).',
    }
    await assert_agent_got_nothing_more(communicator)
    await communicator.disconnect()


async def test_it_shows_the_agent_the_customers_live_messages():
    conversation = await handed_off()
    _, session = await make_agent()
    agent, _ = await connected_agent(session)
    await open_conversation(agent, conversation)
    customer, _ = await customer_socket(conversation)

    await customer.send_json_to({"type": "message", "client_id": str(uuid.uuid4()), "text": "Any news?"})
    accepted = await customer.receive_json_from(timeout=5)
    frame = await receive_type(agent, "conversation.message")

    assert accepted["type"] == "message.accepted"
    assert frame["conversation"] == str(conversation.pk)
    assert frame["message"]["id"] == accepted["message"]["id"]
    assert frame["message"]["role"] == "customer"
    assert frame["message"]["text"] == "Any news?"
    assert frame["message"]["internal"] is False
    # The customer's own socket says nothing more than message.accepted (the AI is paused: no reply).
    await assert_customer_got_nothing_more(customer)
    await customer.disconnect()
    await agent.disconnect()


async def test_it_shows_a_message_and_an_internal_note_to_agents_and_only_the_message_to_the_customer():
    conversation = await handed_off()
    _, session = await make_agent(first_name="Mei", last_name="Lin")
    _, colleague_session = await make_agent()
    claimed = await agent_post(session, f"/api/agent/conversations/{conversation.pk}/claim")
    colleague, _ = await connected_agent(colleague_session)
    await open_conversation(colleague, conversation)
    customer, ready = await customer_socket(conversation)

    note = await agent_post(
        session,
        f"/api/agent/conversations/{conversation.pk}/messages",
        {"text": "Secret: refund approved", "internal": True},
    )
    public = await agent_post(
        session, f"/api/agent/conversations/{conversation.pk}/messages", {"text": "Good news soon"}
    )
    note_frame = await receive_type(colleague, "conversation.message")
    public_frame = await receive_type(colleague, "conversation.message")
    customer_frame = await customer.receive_json_from(timeout=5)

    assert claimed.status_code == 200
    assert (note_frame["message"]["id"], note_frame["message"]["internal"]) == (note.json()["id"], True)
    assert note_frame["message"]["author"]["name"] == "Mei Lin"
    assert (public_frame["message"]["id"], public_frame["message"]["internal"]) == (
        public.json()["id"],
        False,
    )
    # The note went first, but the first frame the customer gets is the public message.
    customer_message = customer_frame
    assert customer_message["type"] == "agent.message"
    assert customer_message["message"]["id"] == public.json()["id"]
    assert customer_message["message"]["agent"] == {"name": "Mei Lin"}
    await assert_customer_got_nothing_more(customer)
    # Nor is the note in anything the customer can read again: the ready frame and the history API.
    await customer.disconnect()
    customer, ready = await customer_socket(conversation)
    history = await widget_history(conversation)
    for messages in (ready["messages"], history):
        assert "Secret: refund approved" not in [message["text"] for message in messages]
        assert note.json()["id"] not in [message["id"] for message in messages]
        assert public.json()["id"] in [message["id"] for message in messages]
    await customer.disconnect()
    await colleague.disconnect()


async def test_it_tells_the_customer_when_the_conversation_is_resolved_and_takes_the_rating():
    conversation = await handed_off()
    _, session = await make_agent()
    await agent_post(session, f"/api/agent/conversations/{conversation.pk}/claim")
    agent, _ = await connected_agent(session)
    await open_conversation(agent, conversation)
    customer, _ = await customer_socket(conversation)

    resolved = await agent_post(session, f"/api/agent/conversations/{conversation.pk}/resolve")
    frame = await customer.receive_json_from(timeout=5)
    await customer.send_json_to({"type": "csat", "score": 5, "comment": "Great"})
    saved = await customer.receive_json_from(timeout=5)
    ticket_frame = await receive_type(agent, "ticket.updated")

    assert resolved.status_code == 200
    assert frame["type"] == "conversation.resolved"
    assert frame["csat_requested"] is True
    assert frame["message"]["role"] == "system"
    assert saved == {"type": "csat.saved", "score": 5}
    assert ticket_frame["ticket"]["status"] == "resolved"
    await customer.disconnect()
    await agent.disconnect()


# --- typing -----------------------------------------------------------------------------------------------


async def test_it_relays_typing_both_ways_once_per_interval():
    conversation = await handed_off()
    _, session = await make_agent(first_name="Mei", last_name="Lin")
    await agent_post(session, f"/api/agent/conversations/{conversation.pk}/claim")
    agent, _ = await connected_agent(session)
    await open_conversation(agent, conversation)
    # Connected after the claim: its agent.joined went before this socket joined the group.
    customer, _ = await customer_socket(conversation)

    await agent.send_json_to({"type": "typing", "conversation": str(conversation.pk)})
    await agent.send_json_to({"type": "typing", "conversation": str(conversation.pk)})
    await customer.send_json_to({"type": "typing"})
    await customer.send_json_to({"type": "typing"})

    agent_typing = await customer.receive_json_from(timeout=5)
    customer_typing = await receive_type(agent, "typing")
    assert agent_typing == {
        "type": "agent.typing",
        "conversation": str(conversation.pk),
        "agent": {"name": "Mei Lin"},
    }
    assert customer_typing == {"type": "typing", "conversation": str(conversation.pk), "from": "customer"}
    # The second frame each way fell inside the interval: nothing more was relayed.
    await assert_customer_got_nothing_more(customer)
    await assert_agent_got_nothing_more(agent)
    await customer.disconnect()
    await agent.disconnect()


async def test_it_refuses_typing_to_the_customer_from_an_agent_who_has_not_claimed():
    conversation = await handed_off()
    _, session = await make_agent()
    agent, _ = await connected_agent(session)
    customer, _ = await customer_socket(conversation)

    await agent.send_json_to({"type": "typing", "conversation": str(conversation.pk)})
    not_open = await agent.receive_json_from(timeout=5)
    await open_conversation(agent, conversation)
    await agent.send_json_to({"type": "typing", "conversation": str(conversation.pk)})
    not_claimed = await agent.receive_json_from(timeout=5)

    assert not_open["code"] == "not_open"
    assert not_claimed == {
        "type": "error",
        "code": "not_claimed",
        "detail": "Claim this conversation before typing to the customer.",
    }
    await assert_customer_got_nothing_more(customer)
    await customer.disconnect()
    await agent.disconnect()


async def test_it_shows_typing_on_an_internal_note_to_colleagues_only():
    conversation = await handed_off()
    _, session = await make_agent(first_name="Mei", last_name="Lin")
    _, colleague_session = await make_agent()
    agent, _ = await connected_agent(session)
    colleague, _ = await connected_agent(colleague_session)
    await open_conversation(agent, conversation)
    await open_conversation(colleague, conversation)
    customer, _ = await customer_socket(conversation)

    await agent.send_json_to({"type": "typing", "conversation": str(conversation.pk), "internal": True})
    seen = await receive_type(colleague, "typing")

    assert seen == {
        "type": "typing",
        "conversation": str(conversation.pk),
        "from": "agent",
        "agent": {"name": "Mei Lin"},
        "internal": True,
    }
    await assert_customer_got_nothing_more(customer)
    await assert_agent_got_nothing_more(agent)
    await asyncio.gather(customer.disconnect(), agent.disconnect(), colleague.disconnect())


async def test_it_answers_unknown_and_malformed_frames_and_stays_open():
    _, session = await make_agent()
    communicator, _ = await connected_agent(session)

    await communicator.send_to(text_data="not json")
    invalid_json = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to(["a", "list"])
    invalid_frame = await communicator.receive_json_from(timeout=5)

    assert invalid_json == {"type": "error", "code": "invalid_json", "detail": "The frame is not valid JSON."}
    assert invalid_frame == {
        "type": "error",
        "code": "invalid_frame",
        "detail": 'A frame is a JSON object with a "type".',
    }
    await assert_agent_got_nothing_more(communicator)
    await communicator.disconnect()


async def test_it_counts_the_ticket_only_once_in_the_database_after_claim_and_resolve():
    conversation = await handed_off()
    _, session = await make_agent()

    await agent_post(session, f"/api/agent/conversations/{conversation.pk}/claim")
    await agent_post(session, f"/api/agent/conversations/{conversation.pk}/resolve")

    tickets = await database_sync_to_async(
        lambda: list(Ticket.objects.filter(conversation=conversation).values_list("status", flat=True))
    )()
    notices = await database_sync_to_async(
        lambda: Message.objects.filter(conversation=conversation, role=Message.Role.SYSTEM).count()
    )()
    assert tickets == ["resolved"]
    # The handoff's notice and the hand-back's.
    assert notices == 2


# --- the assistant, seen from the console ------------------------------------------------------------


async def test_it_streams_the_assistants_reply_to_an_agent_watching_the_conversation(
    live_replies: ScriptedInferenceServer,
):
    live_replies.enqueue(Script(tokens=["Hel", "lo"], token_delay=0.05))
    conversation = await database_sync_to_async(ConversationFactory)()
    _, session = await make_agent(group="Supervisor")
    agent, _ = await connected_agent(session)
    await open_conversation(agent, conversation)
    customer, _ = await customer_socket(conversation)

    await customer.send_json_to({"type": "message", "client_id": str(uuid.uuid4()), "text": "Where is it?"})
    accepted = await customer.receive_json_from(timeout=5)
    frames = [await receive_type(agent, "conversation.message")]
    while True:
        frame = await agent.receive_json_from(timeout=10)
        frames.append(frame)
        if frame["type"] == "conversation.message":
            break

    reply_id = accepted["reply_id"]
    deltas = [frame for frame in frames if frame["type"] == "reply.delta"]
    assert frames[0]["message"]["text"] == "Where is it?"
    assert "".join(delta["text"] for delta in deltas) == "Hello"
    assert {(delta["conversation"], delta["reply_id"]) for delta in deltas} == {
        (str(conversation.pk), reply_id)
    }
    assert [delta["seq"] for delta in deltas] == list(range(len(deltas)))
    assert frames[-1]["message"]["id"] == reply_id
    assert (frames[-1]["message"]["role"], frames[-1]["message"]["text"]) == ("assistant", "Hello")
    await customer.disconnect()
    await agent.disconnect()


async def test_it_keeps_internal_notes_out_of_the_assistants_prompt_after_a_hand_back(
    live_replies: ScriptedInferenceServer,
):
    live_replies.enqueue(Script(tokens=["Sure", "."]))
    conversation = await handed_off()
    _, session = await make_agent()
    await agent_post(session, f"/api/agent/conversations/{conversation.pk}/claim")
    await agent_post(
        session,
        f"/api/agent/conversations/{conversation.pk}/messages",
        {"text": "Internal: customer flagged for abuse", "internal": True},
    )
    await agent_post(
        session, f"/api/agent/conversations/{conversation.pk}/messages", {"text": "Refund sent."}
    )
    handed_back = await agent_post(session, f"/api/agent/conversations/{conversation.pk}/handback")
    customer, ready = await customer_socket(conversation)

    await customer.send_json_to(
        {"type": "message", "client_id": str(uuid.uuid4()), "text": "Thanks, and the invoice?"}
    )
    while (await customer.receive_json_from(timeout=10))["type"] != "reply.done":
        pass

    assert handed_back.status_code == 200
    assert "Internal: customer flagged for abuse" not in [message["text"] for message in ready["messages"]]
    prompt = json.dumps(live_replies.chat_requests[-1].json["messages"], ensure_ascii=False)
    assert "Refund sent." in prompt
    assert "Internal: customer flagged for abuse" not in prompt
    await customer.disconnect()


async def test_it_sends_the_queue_and_open_conversations_again_after_the_channel_layer_came_back():
    conversation = await handed_off()
    _, session = await make_agent()
    agent, before = await connected_agent(session)
    await open_conversation(agent, conversation)

    # What the resilient layer hands each of its channels once Redis answers again.
    await get_channel_layer().group_send(AGENTS_QUEUE_GROUP, {"type": "layer.rejoined"})
    queue = await agent.receive_json_from(timeout=5)
    opened = await agent.receive_json_from(timeout=5)

    assert queue == before
    assert opened["type"] == "conversation.opened"
    assert opened["conversation"]["id"] == str(conversation.pk)
    await agent.disconnect()


async def test_it_sends_the_customer_nothing_of_internal_notes_through_a_whole_handoff():
    conversation = await handed_off()
    _, session = await make_agent(first_name="Mei", last_name="Lin")
    customer, _ = await customer_socket(conversation)
    agent, _ = await connected_agent(session)
    base = f"/api/agent/conversations/{conversation.pk}"

    await agent_post(session, f"{base}/claim")
    await agent_post(session, f"{base}/messages", {"text": "NOTE-ONE checked the courier", "internal": True})
    await open_conversation(agent, conversation)
    await agent.send_json_to({"type": "typing", "conversation": str(conversation.pk), "internal": True})
    await agent_post(session, f"{base}/messages", {"text": "Your parcel is on its way."})
    await agent_post(session, f"{base}/messages", {"text": "NOTE-TWO refund if late", "internal": True})
    await agent_post(session, f"{base}/resolve")
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] != "conversation.resolved":
        frames.append(await customer.receive_json_from(timeout=5))
    await assert_customer_got_nothing_more(customer)
    await customer.disconnect()
    customer, ready = await customer_socket(conversation)
    history = await widget_history(conversation)

    assert [frame["type"] for frame in frames] == ["agent.joined", "agent.message", "conversation.resolved"]
    customer_facing = json.dumps([frames, ready, history], ensure_ascii=False)
    assert "NOTE-ONE" not in customer_facing
    assert "NOTE-TWO" not in customer_facing
    assert '"internal"' not in customer_facing
    assert "Your parcel is on its way." in json.dumps(history)
    await customer.disconnect()
    await agent.disconnect()


@pytest.mark.parametrize("action", ["resolve", "close"])
async def test_a_console_and_the_customer_hear_of_a_resolve_or_close_made_in_admin(action: str) -> None:
    conversation = await handed_off()
    _, session = await make_agent()
    console, _ = await connected_agent(session)
    await open_conversation(console, conversation)
    customer, _ = await customer_socket(conversation)

    @database_sync_to_async
    def act() -> None:
        if action == "resolve":
            services.ticket_resolve(ticket=Ticket.objects.get(conversation=conversation))
        else:
            services.conversation_close(conversation=conversation)

    await act()

    notice = await receive_type(console, "conversation.message")
    ticket = await receive_type(console, "ticket.updated")
    assert notice["message"]["role"] == "system"
    assert ticket["conversation"] == str(conversation.pk)
    assert ticket["ticket"]["status"] == "resolved"
    assert ticket["ticket"]["resolved_at"] is not None
    frame = await receive_type(customer, f"conversation.{action}d")
    assert frame["message"]["role"] == "system"
    if action == "close":
        assert frame["message"]["text"] == "This conversation was closed."
    await console.disconnect()
    await customer.disconnect()
