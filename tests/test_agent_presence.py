"""Presence on /ws/agent/: online while a console is open, the accepting switch, and auto-assignment."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.utils import timezone

from agents import presence
from agents.models import AgentPresence, HandoffSettings
from conversations.models import Ticket
from tests import factories
from tests.test_agent_socket import (
    agent_socket,
    assert_agent_got_nothing_more,
    customer_socket,
    handed_off,
    make_agent,
    receive_type,
)

pytestmark = pytest.mark.django_db(transaction=True)

ConversationFactory: Any = factories.ConversationFactory


@database_sync_to_async
def presence_of(user: User) -> AgentPresence | None:
    return AgentPresence.objects.filter(user=user).first()


@database_sync_to_async
def auto_assignment(*, cap: int = 5) -> None:
    HandoffSettings(pk=1, auto_assign_enabled=True, max_conversations_per_agent=cap).save()


@database_sync_to_async
def ticket_of(conversation: Any) -> Ticket:
    return Ticket.objects.select_related("assignee").get(conversation=conversation)


async def console(session: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    communicator = await agent_socket(session)
    queue = await communicator.receive_json_from(timeout=5)
    state = await communicator.receive_json_from(timeout=5)
    return communicator, queue, state


async def test_it_marks_the_agent_online_and_says_so_on_connect() -> None:
    user, session = await make_agent()
    before = timezone.now()

    communicator, queue, state = await console(session)

    assert queue["type"] == "queue.updated"
    assert state == {"type": "presence.updated", "accepting": True, "online_agents": 1}
    row = await presence_of(user)
    assert row is not None
    assert row.accepting is True
    assert row.online_until is not None
    assert before + timedelta(seconds=59) < row.online_until <= timezone.now() + timedelta(seconds=60)
    await communicator.disconnect()


async def test_it_counts_every_online_agent() -> None:
    _, first_session = await make_agent()
    _, second_session = await make_agent("Supervisor")
    first, _, _ = await console(first_session)

    second, _, state = await console(second_session)

    assert state["online_agents"] == 2
    await first.disconnect()
    await second.disconnect()


async def test_the_accepting_switch_is_saved_and_shown_on_the_agents_other_console() -> None:
    user, session = await make_agent()
    first, _, _ = await console(session)
    second, _, _ = await console(session)

    await first.send_json_to({"type": "presence", "accepting": False})

    assert await first.receive_json_from(timeout=5) == {
        "type": "presence.updated",
        "accepting": False,
        "online_agents": 1,
    }
    assert await receive_type(second, "presence.updated") == {
        "type": "presence.updated",
        "accepting": False,
        "online_agents": 1,
    }
    row = await presence_of(user)
    assert row is not None
    assert row.accepting is False
    await assert_agent_got_nothing_more(first)
    await first.disconnect()
    await second.disconnect()


async def test_it_refuses_a_presence_frame_without_a_boolean_and_changes_nothing() -> None:
    user, session = await make_agent()
    communicator, _, _ = await console(session)

    await communicator.send_json_to({"type": "presence", "accepting": "no"})

    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "invalid_frame",
        "detail": '"accepting" must be true or false.',
    }
    row = await presence_of(user)
    assert row is not None
    assert row.accepting is True
    await communicator.disconnect()


async def test_the_agent_stays_online_until_their_last_console_closes() -> None:
    user, session = await make_agent()
    first, _, _ = await console(session)
    second, _, _ = await console(session)

    await first.disconnect()
    still = await presence_of(user)
    await second.disconnect()
    gone = await presence_of(user)

    assert still is not None
    assert still.online_until is not None
    assert gone is not None
    assert gone.online_until is None


async def test_the_heartbeat_keeps_the_agent_online_and_reports_a_new_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(presence, "PRESENCE_HEARTBEAT_SECONDS", 0.3)
    user, session = await make_agent()
    _, colleague_session = await make_agent()
    communicator, _, _ = await console(session)
    first_until = (await presence_of(user)).online_until
    colleague, _, _ = await console(colleague_session)

    state = await receive_type(communicator, "presence.updated")

    assert state == {"type": "presence.updated", "accepting": True, "online_agents": 2}
    later = await presence_of(user)
    assert later is not None
    assert later.online_until is not None
    assert first_until is not None
    assert later.online_until > first_until
    await colleague.disconnect()
    await communicator.disconnect()


async def test_an_agent_connecting_is_assigned_the_waiting_conversation_and_the_customer_sees_them_join(
    settings: Any,
) -> None:
    # As the embedded default runs it: on auto-assignment's own thread, not the socket's.
    settings.CELERY_TASK_ALWAYS_EAGER = True
    await auto_assignment()
    conversation = await handed_off()
    customer, _ = await customer_socket(conversation)
    user, session = await make_agent(first_name="Lin")

    communicator = await agent_socket(session)
    assigned = await receive_type(communicator, "conversation.assigned")
    joined = await receive_type(customer, "agent.joined")

    ticket = await ticket_of(conversation)
    assert (ticket.status, ticket.assignee_id) == (Ticket.Status.ASSIGNED, user.pk)
    assert (assigned["conversation"], assigned["ticket"]["id"]) == (str(conversation.pk), ticket.pk)
    assert assigned["ticket"]["assignee"]["id"] == user.pk
    assert joined == {"type": "agent.joined", "conversation": str(conversation.pk), "agent": {"name": "Lin"}}
    mine = await receive_type(communicator, "queue.updated")
    assert [item["id"] for item in mine["mine"]] == [str(conversation.pk)]
    await customer.disconnect()
    await communicator.disconnect()


async def test_a_new_handoff_goes_to_the_connected_agent(auto_assignment_runs_here: list[str]) -> None:
    await auto_assignment()
    user, session = await make_agent()
    communicator, _, _ = await console(session)

    conversation = await handed_off()
    assigned = await receive_type(communicator, "conversation.assigned")

    assert assigned["conversation"] == str(conversation.pk)
    assert (await ticket_of(conversation)).assignee_id == user.pk
    await communicator.disconnect()


async def test_a_customer_assigned_at_once_hears_handoff_started_with_the_ticket_as_assigned(
    auto_assignment_runs_here: list[str],
) -> None:
    await auto_assignment()
    user, session = await make_agent(first_name="Lin")
    communicator, _, _ = await console(session)
    conversation = await database_sync_to_async(ConversationFactory)()
    customer, _ = await customer_socket(conversation)

    await customer.send_json_to({"type": "handoff", "reason": "I want a person"})
    started = await receive_type(customer, "handoff.started")

    ticket = await ticket_of(conversation)
    assert (ticket.status, ticket.assignee_id) == (Ticket.Status.ASSIGNED, user.pk)
    # Built from the ticket as saved once the assignment queued on the handoff's commit had run.
    assert (started["ticket"], started["position"], started["expected_wait_minutes"]) == (ticket.pk, 0, 0)
    # One queued when the agent came online (nothing waited then), one on the handoff's commit.
    assert auto_assignment_runs_here == ["agents.tasks.auto_assign", "agents.tasks.auto_assign"]
    await customer.disconnect()
    await communicator.disconnect()


async def test_an_away_agent_is_assigned_nothing() -> None:
    await auto_assignment()
    _, session = await make_agent()
    communicator, _, _ = await console(session)
    await communicator.send_json_to({"type": "presence", "accepting": False})
    await receive_type(communicator, "presence.updated")

    conversation = await handed_off()
    await receive_type(communicator, "queue.updated")

    assert (await ticket_of(conversation)).assignee_id is None
    await assert_agent_got_nothing_more(communicator)
    await communicator.disconnect()
