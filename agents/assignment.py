"""Auto-assignment: waiting tickets go to online, accepting agents under a per-agent cap.

Run after a ticket opens, after one is resolved or handed back (its agent has room again), and when an
agent comes online or starts accepting. Assigners are serialised on the HandoffSettings row (locked
for update), so two of them never both count an agent at cap − 1 and give them one each; the ticket
itself is taken with the claim's conditional UPDATE, so a person claiming it at the same moment and
an assigner can never both have it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents import events, selectors, services
from agents.models import HandoffSettings
from conversations.errors import ServiceError
from conversations.models import Ticket

__all__ = ["ASSIGNMENTS_PER_RUN", "auto_assign", "auto_assign_on_commit"]

logger = logging.getLogger(__name__)

# One run gives out at most this many tickets (each in its own short transaction); a longer queue is
# taken on by the next run (the next handoff, resolve or agent coming online).
ASSIGNMENTS_PER_RUN = 50


def _claim_announce(*, ticket: Ticket, agent: Any) -> None:
    """What a claim in the console says (agents.console.conversation_claim), and the assignee's frame."""
    conversation_id = ticket.conversation_id
    events.conversation_events_send_on_commit(
        conversation_id,
        customer=[events.agent_joined_event(conversation_id=conversation_id, agent=agent)],
        agents=[events.ticket_updated_event(conversation_id=conversation_id, ticket=ticket)],
    )
    events.group_send_on_commit(
        events.agent_user_group(agent.pk),
        events.conversation_assigned_event(conversation_id=conversation_id, ticket=ticket),
    )
    events.queue_changed_notify()


def _assign_next() -> Ticket | bool:
    """Give the oldest waiting ticket to the best placed agent: the ticket, False when nothing more can
    be given now (no ticket, no agent, auto-assignment off), True when a person took it meanwhile."""
    with transaction.atomic():
        handoff_settings = HandoffSettings.objects.select_for_update().filter(pk=1).first()
        if handoff_settings is None or not handoff_settings.auto_assign_enabled:
            return False
        ticket = selectors.ticket_oldest_waiting_get()
        if ticket is None:
            return False
        candidates = selectors.assignable_agents_list(
            now=timezone.now(), cap=handoff_settings.max_conversations_per_agent
        )
        if not candidates:
            return False
        agent = candidates[0].user
        try:
            claimed = services.ticket_claim(ticket=ticket, agent=agent)
        except ServiceError:
            return True  # claimed by a person (or resolved) since it was read: try the next one
        _claim_announce(ticket=claimed, agent=agent)
    return claimed


def auto_assign() -> list[Ticket]:
    """Assign waiting tickets, oldest first, while an agent has room; returns the tickets given out."""
    assigned: list[Ticket] = []
    for _ in range(ASSIGNMENTS_PER_RUN):
        outcome = _assign_next()
        if outcome is False:
            break
        if isinstance(outcome, Ticket):
            assigned.append(outcome)
    return assigned


def auto_assign_on_commit() -> None:
    """Run auto-assignment once the current transaction commits (a no-op while it is switched off)."""
    transaction.on_commit(auto_assign_safely)


def auto_assign_safely() -> None:
    """Auto-assignment from a listener: a failure is logged, the change that triggered it stands."""
    try:
        auto_assign()
    except Exception:
        logger.exception("Auto-assignment failed")
