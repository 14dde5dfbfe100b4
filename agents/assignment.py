"""Auto-assignment: waiting tickets go to online, accepting agents under a per-agent cap.

Run by the `agents.tasks.auto_assign` task, queued on commit by
`handoff_rules.auto_assign_request_on_commit` after a ticket opens, after one is resolved or handed
back (its agent has room again), when an agent comes online or starts accepting, and when
auto-assignment is switched on. Assigners are serialised on the HandoffSettings row (locked for
update), so two of them never both count an agent at cap − 1 and give them one each; the ticket
itself is taken with the claim's conditional UPDATE, so a person claiming it at the same moment and
an assigner can never both have it.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from agents import events, selectors, services
from agents.models import HandoffSettings
from conversations.errors import ServiceError
from conversations.models import Ticket

__all__ = ["ASSIGNMENTS_PER_RUN", "auto_assign"]

# One run gives out at most this many tickets (each in its own short transaction); a longer queue is
# taken on by the next run (the next handoff, resolve or agent coming online).
ASSIGNMENTS_PER_RUN = 50


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
        events.claim_events_send_on_commit(ticket=claimed, agent=agent)
        events.group_send_on_commit(
            events.agent_user_group(agent.pk),
            events.conversation_assigned_event(conversation_id=claimed.conversation_id, ticket=claimed),
        )
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
    if assigned:
        # Once for the run: every console socket reads its lists again on each queue.changed.
        events.queue_changed_notify()
    return assigned
