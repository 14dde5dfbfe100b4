"""Claiming a ticket (never two agents at once, over real PostgreSQL) and its business-hours timers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from agents import services as agent_services
from agents.demo import handoff_demo_load
from conversations import services
from conversations.errors import ServiceError
from conversations.models import Message, Ticket
from tests import factories

ConversationFactory: Any = factories.ConversationFactory

pytestmark = pytest.mark.django_db

SHANGHAI = ZoneInfo("Asia/Shanghai")


def agent_create(username: str, first_name: str = "", last_name: str = "") -> Any:
    return get_user_model().objects.create_user(
        username=username, password="unused-password", first_name=first_name, last_name=last_name
    )


def test_an_agent_claims_an_open_ticket() -> None:
    ticket = services.handoff_request(conversation=ConversationFactory())
    agent = agent_create("li")

    claimed = agent_services.ticket_claim(ticket=ticket, agent=agent)

    assert (claimed.status, claimed.assignee_id) == (Ticket.Status.ASSIGNED, agent.pk)
    assert claimed.claimed_at is not None


def test_the_second_agent_is_told_who_has_it_and_nothing_changes() -> None:
    ticket = services.handoff_request(conversation=ConversationFactory())
    first, second = agent_create("wang", "Fang", "Wang"), agent_create("zhao")
    claimed = agent_services.ticket_claim(ticket=ticket, agent=first)

    with pytest.raises(agent_services.TicketAlreadyClaimed) as refused:
        agent_services.ticket_claim(ticket=ticket, agent=second)

    assert refused.value.code == "already_claimed"
    assert str(refused.value) == "Fang Wang has this conversation."
    assert refused.value.holder == first
    ticket.refresh_from_db()
    assert (ticket.assignee_id, ticket.claimed_at) == (first.pk, claimed.claimed_at)


def test_claiming_ones_own_ticket_again_changes_nothing() -> None:
    ticket = services.handoff_request(conversation=ConversationFactory())
    agent = agent_create("li")
    first = agent_services.ticket_claim(ticket=ticket, agent=agent)

    again = agent_services.ticket_claim(ticket=ticket, agent=agent)

    assert (again.assignee_id, again.claimed_at) == (agent.pk, first.claimed_at)


def test_a_resolved_ticket_cannot_be_claimed() -> None:
    ticket = services.handoff_request(conversation=ConversationFactory())
    services.ticket_resolve(ticket=ticket)

    with pytest.raises(ServiceError) as refused:
        agent_services.ticket_claim(ticket=ticket, agent=agent_create("li"))

    assert refused.value.code == "ticket_resolved"
    ticket.refresh_from_db()
    assert ticket.assignee_id is None


def claim_race(ticket: Ticket, agents: list[Any]) -> tuple[list[int | None], list[str], list[BaseException]]:
    """Two agents claim the same ticket at the same moment, each on its own database connection."""
    barrier = threading.Barrier(len(agents))
    won: list[int | None] = []
    lost: list[str] = []
    errors: list[BaseException] = []

    def claim(agent: Any) -> None:
        try:
            barrier.wait(timeout=10)
            won.append(agent_services.ticket_claim(ticket=ticket, agent=agent).assignee_id)
        except agent_services.TicketAlreadyClaimed as error:
            lost.append(str(error))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    return won, lost, errors


@pytest.mark.django_db(transaction=True)
def test_two_agents_claiming_at_once_one_wins_and_the_other_learns_who() -> None:
    for attempt in range(5):
        ticket = services.handoff_request(conversation=ConversationFactory())
        agents = [agent_create(f"agent-{attempt}-a", "An"), agent_create(f"agent-{attempt}-b", "Bo")]

        won, lost, errors = claim_race(ticket, agents)

        assert errors == []
        assert len(won) == 1
        winner = next(agent for agent in agents if agent.pk == won[0])
        assert lost == [f"{winner.first_name} has this conversation."]
        ticket.refresh_from_db()
        assert ticket.assignee_id == winner.pk


# --- timers -----------------------------------------------------------------------------------------


def agent_message(ticket: Ticket, agent: Any, *, internal: bool = False) -> Message:
    return Message.objects.create(
        conversation_id=ticket.conversation_id,
        role=Message.Role.AGENT,
        source=Message.Source.AGENT,
        text="Hello, I am here to help.",
        author=agent,
        internal=internal,
    )


def test_the_first_response_counts_business_hours_only(frozen_now: Callable[[datetime], None]) -> None:
    handoff_demo_load()
    # Friday 20:30 Beijing time: half an hour before closing; answered on Saturday at 09:10.
    frozen_now(datetime(2026, 12, 4, 20, 30, tzinfo=SHANGHAI))
    ticket = services.handoff_request(conversation=ConversationFactory())
    agent = agent_create("li")
    frozen_now(datetime(2026, 12, 5, 9, 10, tzinfo=SHANGHAI))
    reply = agent_message(ticket, agent)

    assert agent_services.ticket_first_response_record(ticket=ticket, message=reply) is True

    ticket.refresh_from_db()
    assert ticket.first_response_seconds == 40 * 60
    assert ticket.first_response_at == datetime(2026, 12, 5, 9, 10, tzinfo=SHANGHAI)


def test_only_the_first_public_message_is_the_first_response(frozen_now: Callable[[datetime], None]) -> None:
    frozen_now(datetime(2026, 12, 4, 10, 0, tzinfo=SHANGHAI))
    ticket = services.handoff_request(conversation=ConversationFactory())
    agent = agent_create("li")
    frozen_now(datetime(2026, 12, 4, 10, 1, tzinfo=SHANGHAI))
    note = agent_message(ticket, agent, internal=True)
    frozen_now(datetime(2026, 12, 4, 10, 2, tzinfo=SHANGHAI))
    first = agent_message(ticket, agent)
    frozen_now(datetime(2026, 12, 4, 10, 5, tzinfo=SHANGHAI))
    later = agent_message(ticket, agent)

    assert agent_services.ticket_first_response_record(ticket=ticket, message=note) is False
    assert agent_services.ticket_first_response_record(ticket=ticket, message=first) is True
    assert agent_services.ticket_first_response_record(ticket=ticket, message=later) is False

    ticket.refresh_from_db()
    # Without saved hours the team is always open: wall-clock seconds.
    assert ticket.first_response_seconds == 120


def test_resolving_records_the_resolution_time_in_business_hours(
    frozen_now: Callable[[datetime], None],
) -> None:
    handoff_demo_load()
    frozen_now(datetime(2026, 12, 4, 20, 0, tzinfo=SHANGHAI))
    conversation = ConversationFactory()
    ticket = services.handoff_request(conversation=conversation)
    frozen_now(datetime(2026, 12, 5, 10, 0, tzinfo=SHANGHAI))

    assert agent_services.ticket_resolve(ticket=ticket) is True

    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED
    # 20:00–21:00 on Friday and 09:00–10:00 on Saturday.
    assert ticket.resolution_seconds == 2 * 3600
    conversation.refresh_from_db()
    assert conversation.status == conversation.Status.OPEN


def test_a_ticket_resolved_by_conversations_service_has_its_time_already(
    frozen_now: Callable[[datetime], None],
) -> None:
    frozen_now(datetime(2026, 12, 4, 10, 0, tzinfo=SHANGHAI))
    ticket = services.handoff_request(conversation=ConversationFactory())
    frozen_now(datetime(2026, 12, 4, 10, 30, tzinfo=SHANGHAI))
    services.ticket_resolve(ticket=ticket)

    assert agent_services.ticket_resolution_record(ticket=ticket) is False

    ticket.refresh_from_db()
    assert ticket.resolution_seconds == 1800


def test_a_ticket_resolved_without_a_time_gets_it_filled_in_once(
    frozen_now: Callable[[datetime], None],
) -> None:
    frozen_now(datetime(2026, 12, 4, 10, 0, tzinfo=SHANGHAI))
    ticket = services.handoff_request(conversation=ConversationFactory())
    frozen_now(datetime(2026, 12, 4, 10, 30, tzinfo=SHANGHAI))
    services.ticket_resolve(ticket=ticket)
    # As a ticket resolved before resolution times were recorded.
    Ticket.objects.filter(pk=ticket.pk).update(resolution_seconds=None)

    assert agent_services.ticket_resolution_record(ticket=ticket) is True
    assert agent_services.ticket_resolution_record(ticket=ticket) is False

    ticket.refresh_from_db()
    assert ticket.resolution_seconds == 1800


def test_an_unresolved_ticket_has_no_resolution_time() -> None:
    ticket = services.handoff_request(conversation=ConversationFactory())

    assert agent_services.ticket_resolution_record(ticket=ticket) is False

    ticket.refresh_from_db()
    assert ticket.resolution_seconds is None
