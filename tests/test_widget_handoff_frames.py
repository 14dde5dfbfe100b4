"""What a reloaded widget is told of a handoff: ready's `handoff`, and agents named in the history."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents import console
from conversations.consumers import _ready_frame
from conversations.models import Conversation, Message
from tests.factories import ConversationFactory, MessageFactory, handed_off, make_user

pytestmark = pytest.mark.django_db


def test_it_says_no_handoff_in_ready_without_a_ticket() -> None:
    conversation: Any = ConversationFactory()

    assert _ready_frame(conversation)["handoff"] is None


def test_it_puts_the_waiting_ticket_in_ready_with_its_queue_position() -> None:
    handed_off()
    conversation = handed_off()
    ticket = conversation.tickets.get()

    handoff = _ready_frame(conversation)["handoff"]

    assert handoff == {
        "ticket": ticket.pk,
        "status": "open",
        "position": 2,
        "expected_wait_minutes": 10,
        "business_hours_open": True,
        "opens_at": None,
        "time_zone": "Asia/Shanghai",
        "agent": None,
    }


def test_it_names_the_agent_who_claimed_the_ticket_in_ready() -> None:
    conversation = handed_off()
    ticket = conversation.tickets.get()
    console.conversation_claim(conversation=conversation, agent=make_user(first_name="Mei", last_name="Lin"))

    handoff = _ready_frame(conversation)["handoff"]

    assert (handoff["ticket"], handoff["status"], handoff["position"]) == (ticket.pk, "assigned", 0)
    assert handoff["agent"] == {"name": "Mei Lin"}


def test_it_says_no_handoff_in_ready_once_the_ticket_is_resolved() -> None:
    conversation = handed_off()
    person = make_user()
    console.conversation_claim(conversation=conversation, agent=person)
    console.conversation_resolve(conversation=conversation, agent=person)

    assert _ready_frame(conversation)["handoff"] is None


def test_it_names_agents_in_the_history_and_keeps_internal_notes_out() -> None:
    conversation: Any = handed_off()  # the factory keeps the customer's token on it
    person = make_user(username="wang")
    console.conversation_claim(conversation=conversation, agent=person)
    console.agent_message_post(conversation=conversation, agent=person, text="Looking now.", internal=False)
    console.agent_message_post(conversation=conversation, agent=person, text="VIP, refund", internal=True)

    ready = _ready_frame(conversation)
    history = (
        Client()
        .get(
            f"/api/widget/conversations/{conversation.pk}/messages",
            HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
        )
        .json()["messages"]
    )

    for messages in (ready["messages"], history):
        agent_messages = [message for message in messages if message["role"] == "agent"]
        assert [(message["text"], message["agent"]) for message in agent_messages] == [
            ("Looking now.", {"name": "wang"})
        ]
        assert "VIP, refund" not in str(messages)
        # Only agent messages carry the key: the other roles keep the contract's shape.
        assert [message for message in messages if message["role"] != "agent" and "agent" in message] == []


def test_it_reads_the_history_with_agent_names_in_the_same_queries_however_many_agents_wrote() -> None:
    def queries_for_ready(conversation: Conversation) -> int:
        with CaptureQueriesContext(connection) as queries:
            _ready_frame(conversation)
        return len(queries)

    # One agent message against five by five agents: names are read with the history, whatever the count.
    short = handed_off()
    console.conversation_claim(conversation=short, agent=make_user(username="one"))
    MessageFactory(
        conversation=short, role=Message.Role.AGENT, author=make_user(username="a-short"), text="Hi"
    )
    long = handed_off()
    console.conversation_claim(conversation=long, agent=make_user(username="two"))
    for number in range(5):
        MessageFactory(
            conversation=long, role=Message.Role.AGENT, author=make_user(username=f"a{number}"), text="Hi"
        )

    assert queries_for_ready(long) == queries_for_ready(short)
