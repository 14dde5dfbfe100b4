"""Agent assist over `/ws/agent/` (the README's "Agent assist"), driven by the independent client in
`client.py` against daphne. Written from DESIGN.md and the README only, not from the code.

The scripted inference server answers every chat-completions request in order: the customer's first
"Hello" takes its default script, and once a person holds the conversation the assistant no longer
answers (README: `reply_id` is null when a person has taken over), so the next script queued is the
draft's.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.contract.client import AgentClient, Frame, WidgetClient, agent_open, matching, of_type
from tests.contract.conftest import PASSWORD, Server, staff_user_create
from tests.scripted_inference import Script

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Where is my order 1042? It has not arrived."
DRAFT_TOKENS = ["Your order 1042", " left our warehouse", " on Monday[1]", " and arrives", " on Friday[2]."]
DRAFT_TEXT = "Your order 1042 left our warehouse on Monday and arrives on Friday."
# Words of the draft that appear in nothing else the test sends or the assistant says.
DRAFT_WORDS = "left our warehouse"
SOURCE_NUMBER = re.compile(r"\s*\[\d+\]")
# How long a socket is watched for frames that must never come.
QUIET_SECONDS = 1.5


@pytest.fixture
def users(transactional_db: None) -> dict[str, User]:
    """Two agents and a supervisor, created before the test's event loop runs."""
    return {
        "lin": staff_user_create("lin", "Lin", "Wei"),
        "sam": staff_user_create("sam", "Sam", "Ng"),
        "ada": staff_user_create("ada", "Ada", "Chen", group="Supervisor"),
    }


async def logged_in_agent(server: Server, username: str) -> AgentClient:
    agent = AgentClient(server.url)
    response = await agent.login(username, PASSWORD)
    assert response.status_code == 200, response.text
    return agent


async def console(server: Server, username: str) -> AgentClient:
    """A signed-in agent with the console's socket open and its first queue received."""
    agent = await logged_in_agent(server, username)
    await agent.connect()
    await agent.socket.wait_for(of_type("queue.updated"))
    return agent


async def customer_handed_off(server: Server) -> WidgetClient:
    """A customer who said hello, got the assistant's answer, then pressed "talk to a person"."""
    customer = WidgetClient(server.url)
    assert (await customer.create_conversation()).status_code == 201
    await customer.connect()
    client_id = await customer.say("Hello")
    await customer.socket.wait_for(of_type("message.accepted", client_id=client_id))
    await customer.socket.wait_for(of_type("reply.done"))
    await customer.socket.send({"type": "handoff", "reason": "I need a person for order 1042"})
    await customer.socket.wait_for(of_type("handoff.started"))
    return customer


async def customer_writes(customer: WidgetClient, text: str) -> Frame:
    """The customer writes to a person who holds the conversation; the `message.accepted` frame."""
    mark = customer.socket.mark()
    client_id = await customer.say(text)
    accepted = await customer.socket.wait_for(of_type("message.accepted", client_id=client_id), after=mark)
    assert accepted["reply_id"] is None, "the assistant answered although a person holds the conversation"
    return accepted


async def claimed_conversation(server: Server, agent: AgentClient) -> WidgetClient:
    """A handed-off conversation that `agent` claimed, open on their console, with the customer's question
    written after the claim."""
    customer = await customer_handed_off(server)
    claim = await agent.claim(customer.conversation_id)
    assert claim.status_code == 200, claim.text
    await customer.socket.wait_for(of_type("agent.joined"))
    await agent_open(agent, customer.conversation_id)
    mark = agent.socket.mark()
    await customer_writes(customer, QUESTION)
    # As an agent does: the question is on the console before they ask for a draft.
    await agent.socket.wait_for(
        lambda frame: frame.get("type") == "conversation.message" and QUESTION in json.dumps(frame),
        after=mark,
    )
    return customer


def of_conversation(frame_type: str, conversation_id: str, **fields: Any) -> Any:
    """A predicate: a frame of this type about this conversation (its id compared as text)."""
    plain = of_type(frame_type, **fields)
    return lambda frame: plain(frame) and str(frame.get("conversation")) == conversation_id


def assist_frames(frames: list[Frame]) -> list[Frame]:
    return matching(frames, lambda frame: str(frame.get("type", "")).startswith("assist."))


async def request_draft(agent: AgentClient, conversation_id: str) -> int:
    """Send `assist.request`; the socket's mark from just before it."""
    mark = agent.socket.mark()
    await agent.socket.send({"type": "assist.request", "conversation": conversation_id})
    return mark


async def refusal(server: Server, agent: AgentClient, conversation_id: str) -> Frame:
    """Ask for a draft that must be refused; the `assist.error`, checked to start nothing."""
    requests_before = len(server.inference.chat_requests)
    mark = await request_draft(agent, conversation_id)
    error = await agent.socket.wait_for(of_type("assist.error"), after=mark)
    assert set(error) >= {"conversation", "draft_id", "code", "detail"}, error
    assert str(error["conversation"]) == conversation_id
    assert error["draft_id"] is None
    assert isinstance(error["detail"], str)
    assert error["detail"]
    await asyncio.sleep(QUIET_SECONDS)
    assert [frame["type"] for frame in assist_frames(agent.socket.frames[mark:])] == ["assist.error"]
    assert len(server.inference.chat_requests) == requests_before, "a refused draft called the model"
    return error


def deltas_of(frames: list[Frame], draft_id: Any) -> list[Frame]:
    return matching(frames, of_type("assist.delta", draft_id=draft_id))


async def test_it_streams_a_draft_to_the_console_that_asked_and_nowhere_else(
    server: Server, users: dict[str, User]
) -> None:
    lin = await console(server, "lin")
    lin_elsewhere = await console(server, "lin")
    sam = await console(server, "sam")
    customer: WidgetClient | None = None
    try:
        customer = await claimed_conversation(server, lin)
        conversation_id = customer.conversation_id
        await agent_open(lin_elsewhere, conversation_id)
        await agent_open(sam, conversation_id)

        history_before = (await customer.history()).json()["messages"]
        detail_before = (await lin.conversation(conversation_id)).json()
        question = [m for m in history_before if m["role"] == "customer" and m["text"] == QUESTION]
        assert len(question) == 1, history_before
        customer_mark, elsewhere_mark, sam_mark = (
            customer.socket.mark(),
            lin_elsewhere.socket.mark(),
            sam.socket.mark(),
        )
        requests_before = len(server.inference.chat_requests)

        server.inference.enqueue(Script(tokens=DRAFT_TOKENS))
        mark = await request_draft(lin, conversation_id)
        started = await lin.socket.wait_for(of_conversation("assist.started", conversation_id), after=mark)
        assert set(started) >= {"conversation", "draft_id", "based_on_message"}
        assert started["draft_id"] is not None
        assert started["based_on_message"] == question[0]["id"]

        done = await lin.socket.wait_for(
            of_type("assist.done", draft_id=started["draft_id"]), after=mark, within=30
        )
        assert str(done["conversation"]) == conversation_id
        assert done["text"] == DRAFT_TEXT
        assert done["stale"] is False
        assert done["cancelled"] is False

        # Deltas: numbered from 0 without gaps, all before the done, and together the draft.
        frames = assist_frames(lin.socket.frames[mark:])
        deltas = deltas_of(frames, started["draft_id"])
        assert deltas, frames
        assert [delta["seq"] for delta in deltas] == list(range(len(deltas)))
        assert all(str(delta["conversation"]) == conversation_id for delta in deltas)
        assert frames[0] is started
        assert frames[-1] is done
        assert SOURCE_NUMBER.sub("", "".join(delta["text"] for delta in deltas)) == DRAFT_TEXT
        assert len(server.inference.chat_requests) == requests_before + 1

        # Only the console that asked: not lin's other console, not sam's, not the customer.
        await asyncio.sleep(QUIET_SECONDS)
        for other in (lin_elsewhere.socket.frames[elsewhere_mark:], sam.socket.frames[sam_mark:]):
            assert assist_frames(other) == []
            assert DRAFT_WORDS not in json.dumps(other, ensure_ascii=False)
        customer_frames = customer.socket.frames[customer_mark:]
        assert assist_frames(customer_frames) == []
        assert DRAFT_WORDS not in json.dumps(customer_frames, ensure_ascii=False)

        # Nothing saved: the widget's history and the agent's conversation are as they were.
        assert (await customer.history()).json()["messages"] == history_before
        assert (await lin.conversation(conversation_id)).json() == detail_before
    finally:
        if customer is not None:
            await customer.close()
        for agent in (lin, lin_elsewhere, sam):
            await agent.close()


async def test_it_lets_a_supervisor_draft_on_a_conversation_an_agent_holds(
    server: Server, users: dict[str, User]
) -> None:
    """README: "only the agent holding the ticket, or a supervisor, drafts"."""
    lin = await console(server, "lin")
    ada = await console(server, "ada")
    customer: WidgetClient | None = None
    try:
        customer = await claimed_conversation(server, lin)
        await agent_open(ada, customer.conversation_id)
        server.inference.enqueue(Script(tokens=DRAFT_TOKENS))
        mark = await request_draft(ada, customer.conversation_id)
        started = await ada.socket.wait_for(of_type("assist.started"), after=mark)
        done = await ada.socket.wait_for(
            of_type("assist.done", draft_id=started["draft_id"]), after=mark, within=30
        )
        assert done["text"] == DRAFT_TEXT
        assert done["cancelled"] is False
        assert assist_frames(lin.socket.frames) == []
    finally:
        if customer is not None:
            await customer.close()
        await lin.close()
        await ada.close()


async def test_it_refuses_a_draft_with_a_null_draft_id(server: Server, users: dict[str, User]) -> None:
    lin = await console(server, "lin")
    sam = await logged_in_agent(server, "sam")
    customer: WidgetClient | None = None
    try:
        customer = await customer_handed_off(server)
        conversation_id = customer.conversation_id
        await customer_writes(customer, QUESTION)
        history_before = (await customer.history()).json()["messages"]

        # Not opened on this console ("open it first").
        assert (await refusal(server, lin, conversation_id))["code"] == "not_open"

        # Open, but nobody has claimed it.
        await agent_open(lin, conversation_id)
        assert (await refusal(server, lin, conversation_id))["code"] == "not_claimed"

        # Another agent holds it.
        assert (await sam.claim(conversation_id)).status_code == 200
        await customer.socket.wait_for(of_type("agent.joined"))
        assert (await refusal(server, lin, conversation_id))["code"] == "claimed_by_other"

        assert assist_frames(customer.socket.frames) == []
        assert (await customer.history()).json()["messages"] == history_before
    finally:
        if customer is not None:
            await customer.close()
        await lin.close()
        await sam.close()


async def test_it_refuses_a_draft_for_a_conversation_without_a_ticket(
    server: Server, users: dict[str, User]
) -> None:
    lin = await console(server, "lin")
    customer = WidgetClient(server.url)
    try:
        assert (await customer.create_conversation()).status_code == 201
        await customer.connect()
        client_id = await customer.say("Hello")
        await customer.socket.wait_for(of_type("message.accepted", client_id=client_id))
        await customer.socket.wait_for(of_type("reply.done"))
        await agent_open(lin, customer.conversation_id)
        assert (await refusal(server, lin, customer.conversation_id))["code"] == "no_ticket"
    finally:
        await customer.close()
        await lin.close()


async def test_it_says_there_is_nothing_to_answer_before_the_customer_writes(
    server: Server, users: dict[str, User]
) -> None:
    """README: `nothing_to_answer` (the customer has not written yet), one of the draft's own failures."""
    lin = await console(server, "lin")
    customer = WidgetClient(server.url)
    try:
        assert (await customer.create_conversation()).status_code == 201
        await customer.connect()
        await customer.socket.send({"type": "handoff", "reason": "Talk to a person"})
        await customer.socket.wait_for(of_type("handoff.started"))
        assert (await lin.claim(customer.conversation_id)).status_code == 200
        await agent_open(lin, customer.conversation_id)
        requests_before = len(server.inference.chat_requests)

        mark = await request_draft(lin, customer.conversation_id)
        error = await lin.socket.wait_for(of_type("assist.error"), after=mark)
        assert error["code"] == "nothing_to_answer"
        assert str(error["conversation"]) == customer.conversation_id
        assert len(server.inference.chat_requests) == requests_before
    finally:
        await customer.close()
        await lin.close()


async def test_it_stops_a_draft_when_the_agent_cancels_it(server: Server, users: dict[str, User]) -> None:
    lin = await console(server, "lin")
    customer: WidgetClient | None = None
    try:
        customer = await claimed_conversation(server, lin)
        conversation_id = customer.conversation_id
        history_before = (await customer.history()).json()["messages"]
        server.inference.enqueue(Script(tokens=DRAFT_TOKENS, stall_after=1, stall_seconds=30))

        mark = await request_draft(lin, conversation_id)
        started = await lin.socket.wait_for(of_type("assist.started"), after=mark)
        draft_id = started["draft_id"]
        await lin.socket.wait_for(of_type("assist.delta", draft_id=draft_id, seq=0), after=mark)
        await lin.socket.send(
            {"type": "assist.cancel", "conversation": conversation_id, "draft_id": draft_id}
        )

        done = await lin.socket.wait_for(of_type("assist.done", draft_id=draft_id), after=mark)
        assert str(done["conversation"]) == conversation_id
        assert done["cancelled"] is True
        # "the model's stream is closed"
        await server.inference.wait_for_disconnects_async(1, timeout=10)

        await asyncio.sleep(QUIET_SECONDS)
        frames = assist_frames(lin.socket.frames[mark:])
        assert frames[-1] is done, frames
        assert len(matching(frames, of_type("assist.done"))) == 1
        assert (await customer.history()).json()["messages"] == history_before
    finally:
        if customer is not None:
            await customer.close()
        await lin.close()


async def test_it_marks_a_draft_stale_when_the_customer_writes_while_it_streams(
    server: Server, users: dict[str, User]
) -> None:
    lin = await console(server, "lin")
    customer: WidgetClient | None = None
    try:
        customer = await claimed_conversation(server, lin)
        conversation_id = customer.conversation_id
        server.inference.enqueue(Script(tokens=DRAFT_TOKENS, stall_after=1, stall_seconds=1.5))

        mark = await request_draft(lin, conversation_id)
        started = await lin.socket.wait_for(of_type("assist.started"), after=mark)
        draft_id = started["draft_id"]
        await lin.socket.wait_for(of_type("assist.delta", draft_id=draft_id, seq=0), after=mark)
        # Nothing newer than the message the draft answers has been written yet.
        assert matching(lin.socket.frames[mark:], of_type("assist.stale")) == []

        written_mark = lin.socket.mark()
        await customer_writes(customer, "Actually the order number is 1043, sorry.")
        stale = await lin.socket.wait_for(of_type("assist.stale", draft_id=draft_id), after=written_mark)
        assert str(stale["conversation"]) == conversation_id
        done = await lin.socket.wait_for(of_type("assist.done", draft_id=draft_id), after=mark, within=30)
        assert done["stale"] is True
        assert done["cancelled"] is False
        assert done["text"] == DRAFT_TEXT
        frames = assist_frames(lin.socket.frames[mark:])
        assert frames.index(stale) < frames.index(done)
        deltas = deltas_of(frames, draft_id)
        assert [delta["seq"] for delta in deltas] == list(range(len(deltas)))
    finally:
        if customer is not None:
            await customer.close()
        await lin.close()


async def test_it_does_not_mark_a_draft_stale_for_the_message_it_answers(
    server: Server, users: dict[str, User]
) -> None:
    """An agent who asks for a draft the moment the customer's message is saved gets a draft based on
    that message; it is not newer than the draft, so the draft is not stale (README: `assist.stale`
    arrives "when the customer writes while the draft streams")."""
    lin = await console(server, "lin")
    customer = await customer_handed_off(server)
    try:
        conversation_id = customer.conversation_id
        assert (await lin.claim(conversation_id)).status_code == 200
        await agent_open(lin, conversation_id)
        server.inference.enqueue(Script(tokens=DRAFT_TOKENS, first_token_delay=1.0))

        accepted = await customer_writes(customer, QUESTION)
        mark = await request_draft(lin, conversation_id)
        started = await lin.socket.wait_for(of_type("assist.started"), after=mark)
        assert started["based_on_message"] == accepted["message"]["id"]
        done = await lin.socket.wait_for(
            of_type("assist.done", draft_id=started["draft_id"]), after=mark, within=30
        )
        stale_frames = matching(lin.socket.frames[mark:], of_type("assist.stale"))
        assert stale_frames == [], (
            f"assist.stale for the very message the draft answers ({started['based_on_message']}); "
            f"assist.done then said stale={done['stale']}"
        )
        assert done["stale"] is False
        assert done["text"] == DRAFT_TEXT
    finally:
        await customer.close()
        await lin.close()


async def test_it_says_the_model_is_unavailable_when_the_inference_server_is_down(
    server: Server, users: dict[str, User]
) -> None:
    lin = await console(server, "lin")
    customer: WidgetClient | None = None
    try:
        customer = await claimed_conversation(server, lin)
        history_before = (await customer.history()).json()["messages"]
        # Every request from now on is refused, retries included.
        server.inference.default = Script(status=503, error_message="The model is loading")

        mark = await request_draft(lin, customer.conversation_id)
        error = await lin.socket.wait_for(of_type("assist.error"), after=mark, within=60)
        assert error["code"] == "inference_unavailable"
        assert str(error["conversation"]) == customer.conversation_id
        assert isinstance(error["detail"], str)
        assert error["detail"]
        # A failure of the draft itself, not a refusal: it names the draft that started.
        started = await lin.socket.wait_for(of_type("assist.started"), after=mark, within=0)
        assert started["draft_id"] is not None
        assert error["draft_id"] == started["draft_id"]
        assert matching(lin.socket.frames[mark:], of_type("assist.done")) == []
        assert (await customer.history()).json()["messages"] == history_before
    finally:
        if customer is not None:
            await customer.close()
        await lin.close()


async def test_it_stops_the_streaming_draft_when_the_console_asks_for_a_new_one(
    server: Server, users: dict[str, User]
) -> None:
    """README: "One draft per conversation per console: a new request stops the one streaming"."""
    lin = await console(server, "lin")
    customer: WidgetClient | None = None
    try:
        customer = await claimed_conversation(server, lin)
        conversation_id = customer.conversation_id
        server.inference.enqueue(
            Script(tokens=["First draft", " goes on"], stall_after=1, stall_seconds=30),
            Script(tokens=DRAFT_TOKENS),
        )

        mark = await request_draft(lin, conversation_id)
        first = await lin.socket.wait_for(of_type("assist.started"), after=mark)
        await lin.socket.wait_for(of_type("assist.delta", draft_id=first["draft_id"], seq=0), after=mark)

        second_mark = await request_draft(lin, conversation_id)
        second = await lin.socket.wait_for(of_type("assist.started"), after=second_mark)
        assert second["draft_id"] != first["draft_id"]
        done = await lin.socket.wait_for(
            of_type("assist.done", draft_id=second["draft_id"]), after=second_mark, within=30
        )
        assert done["text"] == DRAFT_TEXT
        await server.inference.wait_for_disconnects_async(1, timeout=10)
        # Nothing more of the first draft after the second started, except how it ended.
        later_of_first = matching(
            lin.socket.frames[second_mark:],
            lambda frame: frame.get("draft_id") == first["draft_id"] and frame.get("type") != "assist.done",
        )
        assert later_of_first == []
    finally:
        if customer is not None:
            await customer.close()
        await lin.close()


async def test_it_stops_the_drafts_of_a_console_that_closes(server: Server, users: dict[str, User]) -> None:
    """README: "Closing the console stops its drafts" (the model's stream is closed)."""
    lin = await console(server, "lin")
    customer: WidgetClient | None = None
    try:
        customer = await claimed_conversation(server, lin)
        server.inference.enqueue(Script(tokens=DRAFT_TOKENS, stall_after=1, stall_seconds=30))
        mark = await request_draft(lin, customer.conversation_id)
        started = await lin.socket.wait_for(of_type("assist.started"), after=mark)
        await lin.socket.wait_for(of_type("assist.delta", draft_id=started["draft_id"], seq=0), after=mark)
        await lin.socket.close()
        await server.inference.wait_for_disconnects_async(1, timeout=10)
    finally:
        if customer is not None:
            await customer.close()
        await lin.close()
