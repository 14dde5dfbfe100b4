"""Agent assist: an AI draft of the agent's next message over /ws/agent/, through the real Redis channel
layer and a scripted inference server; grounded as replies are, for the asking socket only, never saved."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from agents import assist, consumers, tasks
from conversations import services
from conversations.events import conversation_group
from conversations.models import Conversation, Message
from inference.models import AssistantProfile
from inference.prompts import (
    DRAFT_FOLLOW_UP_TURN,
    DRAFT_INSTRUCTIONS,
    DRAFT_NOTHING_FOUND,
    DRAFT_SOURCES_RULES,
)
from knowledge.retrieval import FaqMatch
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer
from tests.test_agent_socket import (
    agent_post,
    assert_agent_got_nothing_more,
    assert_customer_got_nothing_more,
    connected_agent,
    customer_socket,
    handed_off,
    make_agent,
    open_conversation,
    receive_type,
)
from tests.test_grounding import KnowledgeStub, source

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def knowledge(monkeypatch: pytest.MonkeyPatch) -> KnowledgeStub:
    return KnowledgeStub().install(monkeypatch)


@pytest.fixture
def drafts_here(settings: Any, scripted_inference: ScriptedInferenceServer) -> ScriptedInferenceServer:
    """Drafts run in this process, on the test's event loop, against the scripted server."""
    settings.REPLY_GENERATION_IN_PROCESS = True
    settings.AGENT_ASSIST_ENABLED = True
    return scripted_inference


async def claimed_console(conversation: Conversation) -> tuple[WebsocketCommunicator, str]:
    """A console socket of the agent who claimed `conversation`, with it open; and their session."""
    _, session = await make_agent(first_name="Lin", last_name="Wei")
    response = await agent_post(session, f"/api/agent/conversations/{conversation.pk}/claim")
    assert response.status_code == 200
    console, _ = await connected_agent(session)
    await open_conversation(console, conversation)
    return console, session


async def request_draft(console: WebsocketCommunicator, conversation: Conversation) -> dict[str, Any]:
    await console.send_json_to({"type": "assist.request", "conversation": str(conversation.pk)})
    return await receive_type(console, "assist.started")


async def draft_frames(console: WebsocketCommunicator, until: str = "assist.done") -> list[dict[str, Any]]:
    """The assist.* frames up to and including the first of type `until` (or an assist.error)."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = await console.receive_json_from(timeout=10)
        if not frame["type"].startswith("assist."):
            continue
        frames.append(frame)
        if frame["type"] in (until, "assist.error"):
            return frames


@database_sync_to_async
def customer_message_id(conversation: Conversation) -> int:
    return Message.objects.filter(conversation=conversation, role=Message.Role.CUSTOMER).latest("id").pk


@database_sync_to_async
def messages_with(conversation: Conversation, text: str) -> int:
    return Message.objects.filter(conversation=conversation, text__contains=text).count()


async def test_it_streams_a_grounded_draft_to_the_asking_socket_only(
    drafts_here: ScriptedInferenceServer, knowledge: KnowledgeStub
) -> None:
    knowledge.sources = [source(1, title="Refunds", text="Refunds reach your card in 5–7 working days.")]
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)
    # A colleague watching the same conversation, and the customer.
    _, colleague_session = await make_agent(group="Supervisor")
    colleague, _ = await connected_agent(colleague_session)
    await open_conversation(colleague, conversation)
    customer, _ = await customer_socket(conversation)
    drafts_here.enqueue(Script(tokens=["Your refund ", "reaches your card ", "in 5–7 working days [1]", "."]))

    started = await request_draft(console, conversation)
    frames = await draft_frames(console)

    assert started["conversation"] == str(conversation.pk)
    assert started["based_on_message"] == await customer_message_id(conversation)
    deltas = [frame for frame in frames if frame["type"] == "assist.delta"]
    assert [frame["seq"] for frame in deltas] == list(range(len(deltas)))
    assert {frame["draft_id"] for frame in frames} == {started["draft_id"]}
    done = frames[-1]
    assert done["type"] == "assist.done"
    # The agent's own words to send: no source numbers, in the deltas as in the whole.
    assert done["text"] == "Your refund reaches your card in 5–7 working days."
    assert "".join(frame["text"] for frame in deltas) == done["text"]
    assert done["stale"] is False
    assert done["cancelled"] is False
    # Grounded as a reply is: the sources in the system message, the draft's own rules, the customer's
    # words in the user turn.
    body = drafts_here.chat_requests[-1].json
    system = body["messages"][0]
    assert system["role"] == "system"
    assert DRAFT_INSTRUCTIONS in system["content"]
    assert DRAFT_SOURCES_RULES in system["content"]
    assert "Refunds reach your card in 5–7 working days." in system["content"]
    assert body["messages"][-1] == {"role": "user", "content": "My parcel never arrived."}
    assert knowledge.queries == [("My parcel never arrived.", "en")]
    # Nobody else heard of it, and nothing was saved.
    await assert_agent_got_nothing_more(colleague)
    await assert_customer_got_nothing_more(customer)
    assert await messages_with(conversation, "working days") == 0
    for communicator in (console, colleague, customer):
        await communicator.disconnect()


async def test_it_drafts_after_the_agents_own_message_with_a_turn_that_asks_for_the_next_one(
    drafts_here: ScriptedInferenceServer,
) -> None:
    conversation = await handed_off()
    console, session = await claimed_console(conversation)
    posted = await agent_post(
        session,
        f"/api/agent/conversations/{conversation.pk}/messages",
        {"text": "Let me check that for you."},
    )
    assert posted.status_code == 201
    drafts_here.enqueue(Script(tokens=["It was sent on Monday."]))

    await request_draft(console, conversation)
    frames = await draft_frames(console)

    assert frames[-1]["text"] == "It was sent on Monday."
    messages = drafts_here.chat_requests[-1].json["messages"]
    # Nothing found: the draft is told not to invent anything.
    assert DRAFT_NOTHING_FOUND in messages[0]["content"]
    assert messages[-2] == {
        "role": "assistant",
        "content": "[A human agent wrote:] Let me check that for you.",
    }
    assert messages[-1]["role"] == "user"
    assert "Draft the agent's next message" in messages[-1]["content"]
    await console.disconnect()


async def test_it_drafts_an_faq_entrys_answer_without_the_model(
    drafts_here: ScriptedInferenceServer, knowledge: KnowledgeStub
) -> None:
    knowledge.faq = FaqMatch(
        entry_id=1, question="Where is my parcel?", answer="Track it under Orders.", locale="en", score=0.95
    )
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)

    await request_draft(console, conversation)
    frames = await draft_frames(console)

    assert [frame["type"] for frame in frames] == ["assist.delta", "assist.done"]
    assert frames[-1]["text"] == "Track it under Orders."
    assert drafts_here.chat_requests == []
    await console.disconnect()


async def test_it_says_the_knowledge_base_has_nothing_in_a_language_the_model_does_not_write(
    drafts_here: ScriptedInferenceServer,
) -> None:
    await database_sync_to_async(factories.AssistantProfileFactory)(
        is_active=True,
        model_answer_locales=["en"],
        language_policy=AssistantProfile.LanguagePolicy.MATCH_CUSTOMER,
    )
    conversation = await handed_off()
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(locale="zh-Hans")
    console, _ = await claimed_console(conversation)

    await request_draft(console, conversation)
    frames = await draft_frames(console)

    assert frames[-1]["type"] == "assist.error"
    assert frames[-1]["code"] == "nothing_found"
    assert drafts_here.chat_requests == []
    await console.disconnect()


@pytest.mark.parametrize("who", ["nobody", "colleague"])
async def test_it_drafts_only_for_whoever_may_answer(drafts_here: ScriptedInferenceServer, who: str) -> None:
    conversation = await handed_off()
    if who == "colleague":
        _, holder = await make_agent(first_name="Sam", last_name="Taylor")
        assert (
            await agent_post(holder, f"/api/agent/conversations/{conversation.pk}/claim")
        ).status_code == 200
    _, session = await make_agent()
    console, _ = await connected_agent(session)
    await open_conversation(console, conversation)

    await console.send_json_to({"type": "assist.request", "conversation": str(conversation.pk)})
    refused = await receive_type(console, "assist.error")

    assert refused["conversation"] == str(conversation.pk)
    assert refused["draft_id"] is None
    if who == "nobody":
        assert refused["code"] == "not_claimed"
    else:
        assert refused["code"] == "claimed_by_other"
        assert refused["detail"] == "Sam Taylor has this conversation."
    assert drafts_here.chat_requests == []
    await console.disconnect()


async def test_it_refuses_a_draft_of_a_conversation_not_open_or_when_switched_off(
    drafts_here: ScriptedInferenceServer, settings: Any
) -> None:
    conversation = await handed_off()
    console, session = await claimed_console(conversation)
    other, _ = await connected_agent(session)

    await other.send_json_to({"type": "assist.request", "conversation": str(conversation.pk)})
    assert (await receive_type(other, "assist.error"))["code"] == "not_open"
    await other.send_json_to({"type": "assist.request", "conversation": "not-a-uuid"})
    assert (await receive_type(other, "error"))["code"] == "invalid_frame"
    settings.AGENT_ASSIST_ENABLED = False
    await console.send_json_to({"type": "assist.request", "conversation": str(conversation.pk)})
    assert (await receive_type(console, "assist.error"))["code"] == "assist_disabled"

    assert drafts_here.chat_requests == []
    await console.disconnect()
    await other.disconnect()


async def test_it_marks_a_draft_stale_when_the_customer_writes_meanwhile(
    drafts_here: ScriptedInferenceServer,
) -> None:
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)
    customer, _ = await customer_socket(conversation)
    drafts_here.enqueue(Script(tokens=["We are ", "looking into it."], stall_after=1, stall_seconds=1.0))

    started = await request_draft(console, conversation)
    first = await receive_type(console, "assist.delta")
    await customer.send_json_to({"type": "message", "client_id": str(uuid.uuid4()), "text": "Hello? Anyone?"})
    stale = await receive_type(console, "assist.stale")
    done = await receive_type(console, "assist.done")

    # The space is held back with the delta's end (it may come before a source number).
    assert first["text"] == "We are"
    assert stale == {
        "type": "assist.stale",
        "conversation": str(conversation.pk),
        "draft_id": started["draft_id"],
    }
    assert done["text"] == "We are looking into it."
    assert done["stale"] is True
    await console.disconnect()
    await customer.disconnect()


async def test_it_stops_a_draft_the_agent_cancels_and_closes_the_models_stream(
    drafts_here: ScriptedInferenceServer,
) -> None:
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)
    drafts_here.enqueue(Script(tokens=["Let me ", "never finish."], stall_after=1, stall_seconds=30))

    started = await request_draft(console, conversation)
    await receive_type(console, "assist.delta")
    await console.send_json_to(
        {"type": "assist.cancel", "conversation": str(conversation.pk), "draft_id": started["draft_id"]}
    )
    done = await receive_type(console, "assist.done")

    assert done == {
        "type": "assist.done",
        "conversation": str(conversation.pk),
        "draft_id": started["draft_id"],
        "cancelled": True,
    }
    # The generation saw the flag and closed its stream: the server stops generating.
    await asyncio.to_thread(drafts_here.wait_for_disconnects, 1, 5.0)
    # What it still had in flight reaches nobody.
    await assert_agent_got_nothing_more(console)
    await console.disconnect()


async def test_it_stops_the_draft_when_the_console_closes(drafts_here: ScriptedInferenceServer) -> None:
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)
    drafts_here.enqueue(Script(tokens=["Let me ", "never finish."], stall_after=1, stall_seconds=30))

    await request_draft(console, conversation)
    await receive_type(console, "assist.delta")
    await console.disconnect()

    await asyncio.to_thread(drafts_here.wait_for_disconnects, 1, 5.0)


async def test_it_tells_the_agent_when_the_model_is_down(
    drafts_here: ScriptedInferenceServer, settings: Any
) -> None:
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)
    drafts_here.enqueue(Script(status=503), Script(status=503))

    started = await request_draft(console, conversation)
    error = (await draft_frames(console))[-1]

    assert error["type"] == "assist.error"
    assert error["draft_id"] == started["draft_id"]
    assert error["code"] == "inference_unavailable"
    assert error["detail"] == assist.ASSIST_ERROR_DETAILS["inference_unavailable"]
    await console.disconnect()


async def test_it_ends_a_draft_no_worker_takes(
    settings: Any, monkeypatch: pytest.MonkeyPatch, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.REPLY_GENERATION_IN_PROCESS = False
    settings.INFERENCE_FIRST_TOKEN_TIMEOUT = 0.5
    monkeypatch.setattr(consumers, "DRAFT_WATCH_GRACE_SECONDS", 0.2)
    queued: list[dict[str, Any]] = []
    # Queued on a broker no worker reads.
    monkeypatch.setattr(tasks.assist_draft, "apply_async", lambda **options: queued.append(options))
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)

    started = await request_draft(console, conversation)
    error = await receive_type(console, "assist.error")

    assert queued[0]["kwargs"]["draft_id"] == started["draft_id"]
    # A worker that takes it later drafts for nobody: the task expires.
    assert queued[0]["expires"] == 0.5
    assert error["draft_id"] == started["draft_id"]
    assert error["code"] == "assist_unavailable"
    await console.disconnect()


async def test_it_tells_the_agent_when_the_draft_cannot_be_queued(
    settings: Any, monkeypatch: pytest.MonkeyPatch, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.REPLY_GENERATION_IN_PROCESS = False

    def broker_down(**options: Any) -> None:
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(tasks.assist_draft, "apply_async", broker_down)
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)

    started = await request_draft(console, conversation)
    error = await receive_type(console, "assist.error")

    assert error["draft_id"] == started["draft_id"]
    assert error["code"] == "assist_unavailable"
    await console.disconnect()


async def test_the_worker_task_streams_the_draft_to_the_socket_named(
    scripted_inference: ScriptedInferenceServer,
) -> None:
    """The Celery task as a worker runs it: on the reply runtime, sending to a channel over Redis."""
    conversation = await handed_off()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    scripted_inference.enqueue(Script(tokens=["Sorry ", "about that."]))
    based_on = await customer_message_id(conversation)

    await asyncio.to_thread(
        tasks.assist_draft,
        conversation_id=str(conversation.pk),
        draft_id="draft-1",
        channel_name=channel,
        based_on_message=based_on,
    )
    frames = [await asyncio.wait_for(layer.receive(channel), 5)]
    while frames[-1]["type"] == "assist.delta":
        frames.append(await asyncio.wait_for(layer.receive(channel), 5))

    assert frames[-1]["type"] == "assist.done"
    assert "".join(frame["text"] for frame in frames[:-1]) == "Sorry about that."
    assert frames[-1]["text"] == "Sorry about that."
    assert frames[-1]["draft_id"] == "draft-1"
    assert frames[-1]["stale"] is False


async def test_only_a_customer_message_newer_than_the_one_answered_makes_a_draft_stale(
    drafts_here: ScriptedInferenceServer,
) -> None:
    conversation = await handed_off()
    console, _ = await claimed_console(conversation)
    drafts_here.enqueue(Script(tokens=["One moment", " please."], stall_after=1, stall_seconds=2.0))
    started = await request_draft(console, conversation)
    answered = started["based_on_message"]
    layer = get_channel_layer()

    async def customer_message_event(message_id: int) -> None:
        await layer.group_send(
            conversation_group(conversation.pk),
            {
                "type": "customer.message",
                "conversation": str(conversation.pk),
                "message": {"id": message_id, "role": "customer", "text": "…"},
            },
        )

    # The live copy of the message the draft answers, arriving after the request: not newer.
    await customer_message_event(answered)
    same = await receive_type(console, "conversation.message")
    assert same["message"]["id"] == answered
    await customer_message_event(answered + 1)
    stale = await receive_type(console, "assist.stale")

    assert stale["draft_id"] == started["draft_id"]
    await console.disconnect()


@pytest.mark.parametrize(
    ("tokens", "streamed"),
    [
        (["Refunds take 5", "–7 days [", "1", "]."], "Refunds take 5–7 days."),
        (["退款需要 5–7 个工作日", "【2", "，3】", "。"], "退款需要 5–7 个工作日。"),
        (["See the ", "[Returns] page", " [4", "]"], "See the [Returns] page"),
        # Cut off before it closed: no marker after all, so it is shown as it came.
        (["Ends with [", "7"], "Ends with [7"),
        (["Not a marker [", "x]"], "Not a marker [x]"),
    ],
)
def test_it_takes_source_numbers_out_of_the_streamed_draft_token_by_token(
    tokens: list[str], streamed: str
) -> None:
    markers = assist.MarkerFilter()
    shown = [markers.feed(token) for token in tokens]

    assert "".join(shown) + markers.flush() == streamed


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("Refunds take 5–7 days [1].", "Refunds take 5–7 days."),
        ("See [1, 2] and 【3】 for details.", "See and for details."),
        ("退款需要 5–7 个工作日【1】。", "退款需要 5–7 个工作日。"),
        ("  Nothing to strip.\n", "Nothing to strip."),
    ],
)
def test_it_takes_source_numbers_out_of_a_draft(text: str, cleaned: str) -> None:
    assert assist.draft_text_clean(text) == cleaned


async def test_it_drafts_an_answer_to_the_question_not_to_the_request_for_a_person(
    drafts_here: ScriptedInferenceServer, knowledge: KnowledgeStub
) -> None:
    @database_sync_to_async
    def asked_then_wanted_a_person() -> Conversation:
        conversation: Any = factories.ConversationFactory()
        factories.MessageFactory(conversation=conversation, text="How do I return an item?")
        factories.MessageFactory(
            conversation=conversation, role=Message.Role.ASSISTANT, text="Open My orders and tap Return."
        )
        factories.MessageFactory(conversation=conversation, text="I want to talk to a real person please")
        services.handoff_request(conversation=conversation, reason="Asked for a person")
        return conversation

    conversation = await asked_then_wanted_a_person()
    console, _ = await claimed_console(conversation)
    drafts_here.enqueue(Script(tokens=["You can return it from My orders."]))

    started = await request_draft(console, conversation)
    frames = await draft_frames(console)

    assert frames[-1]["type"] == "assist.done"
    # The draft answers the newest message all the same (it is what makes a later one "newer").
    assert started["based_on_message"] == await customer_message_id(conversation)
    # The request for a person is no question: the question before it is looked up and answered.
    assert knowledge.queries == [("How do I return an item?", "en")]
    messages = drafts_here.chat_requests[-1].json["messages"]
    assert "real person" not in str(messages)
    assert messages[-1]["content"] == DRAFT_FOLLOW_UP_TURN
    await console.disconnect()


async def test_it_has_nothing_to_draft_when_the_customer_only_asked_for_a_person(
    drafts_here: ScriptedInferenceServer,
) -> None:
    @database_sync_to_async
    def only_wanted_a_person() -> Conversation:
        conversation: Any = factories.ConversationFactory()
        factories.MessageFactory(conversation=conversation, text="转人工")
        services.handoff_request(conversation=conversation, reason="Asked for a person")
        return conversation

    conversation = await only_wanted_a_person()
    console, _ = await claimed_console(conversation)

    await request_draft(console, conversation)
    error = (await draft_frames(console))[-1]

    assert (error["type"], error["code"]) == ("assist.error", "nothing_to_answer")
    assert drafts_here.chat_requests == []
    await console.disconnect()
