"""What an agent does in the console: claim, write (publicly or as an internal note), resolve, hand back.

Each saves first and announces on commit: the customer's group gets what the customer may see (never
an internal note), the agents' group of the conversation gets the console's view, and the queue
group hears that the waiting list changed. The ticket rules themselves (the claim by conditional
update, the timers) are `agents.services`'; this module adds who may act and what each act says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from agents import events, selectors, services
from agents.permissions import user_is_supervisor
from conversations import services as conversation_services
from conversations.errors import ServiceError
from conversations.models import Conversation, Message, Ticket
from conversations.serializers import author_display_name

__all__ = [
    "ActionRefused",
    "ClaimOutcome",
    "agent_message_post",
    "conversation_act_check",
    "conversation_claim",
    "conversation_hand_back",
    "conversation_resolve",
]


class ActionRefused(ServiceError):
    """The agent may not do this now (conflict with the conversation's state or another agent)."""


@dataclass(frozen=True)
class ClaimOutcome:
    ticket: Ticket
    # False when the agent already held it: nothing was announced again.
    claimed_here: bool


def _ticket_for(conversation: Conversation) -> Ticket:
    ticket = selectors.ticket_unresolved_get(conversation=conversation)
    if ticket is None:
        raise ActionRefused(
            "no_ticket", "This conversation is not waiting for a person (it has no open ticket)."
        )
    return ticket


def _ensure_may_act(*, ticket: Ticket, agent: Any) -> None:
    """Only the agent holding the ticket acts in its conversation; supervisors and managers may too."""
    if ticket.assignee_id == agent.pk or user_is_supervisor(agent):
        return
    if ticket.assignee_id is None:
        raise ActionRefused("not_claimed", "Claim this conversation before answering or resolving it.")
    raise ActionRefused(
        "claimed_by_other",
        f"{author_display_name(ticket.assignee)} has this conversation.",
    )


def conversation_act_check(*, conversation: Conversation, agent: Any) -> Ticket:
    """The open ticket, if `agent` may act in the conversation now (answer it, draft with AI); else
    ActionRefused: `no_ticket`, `not_claimed` or `claimed_by_other`."""
    ticket = _ticket_for(conversation)
    _ensure_may_act(ticket=ticket, agent=agent)
    return ticket


def conversation_claim(*, conversation: Conversation, agent: Any) -> ClaimOutcome:
    """Claim the conversation's open ticket; the first claim tells the customer who joined.

    Raises ActionRefused(`no_ticket`) without an open ticket, and `already_claimed` (naming who has it)
    when another agent got there first.
    """
    ticket = _ticket_for(conversation)
    if ticket.assignee_id == agent.pk:
        return ClaimOutcome(ticket=ticket, claimed_here=False)
    with transaction.atomic():
        # Raises TicketAlreadyClaimed (already_claimed, naming who has it) when another agent won.
        ticket = services.ticket_claim(ticket=ticket, agent=agent)
        events.claim_events_send_on_commit(ticket=ticket, agent=agent)
        events.queue_changed_notify()
    return ClaimOutcome(ticket=ticket, claimed_here=True)


def agent_message_post(*, conversation: Conversation, agent: Any, text: str, internal: bool) -> Message:
    """Save an agent's message: a public one reaches the customer, an internal note only colleagues.

    A public message needs the conversation's open ticket held by the agent (or a supervisor); the
    first one records the ticket's first response. A note may be left on any conversation.
    """
    text = text.strip()
    if not text:
        raise ServiceError("empty_message", "A message needs text.")
    limit = conversation_services.message_max_chars()
    if len(text) > limit:
        raise ServiceError("message_too_long", f"A message can be at most {limit} characters.")
    ticket = None
    if not internal:
        ticket = _ticket_for(conversation)
        _ensure_may_act(ticket=ticket, agent=agent)
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        message = Message.objects.create(
            conversation=conversation,
            role=Message.Role.AGENT,
            source=Message.Source.AGENT,
            status=Message.Status.COMPLETE,
            text=text,
            author=agent,
            internal=internal,
        )
        agents_events: list[dict[str, Any]] = []
        if ticket is not None:
            conversation.last_message_at = message.created_at
            conversation.save(update_fields=["last_message_at", "updated_at"])
            if services.ticket_first_response_record(ticket=ticket, message=message):
                # The console shows the first response time: it hears it here rather than refetching.
                ticket.refresh_from_db()
                agents_events.append(
                    events.ticket_updated_event(conversation_id=conversation.pk, ticket=ticket)
                )
        message = selectors.message_for_agents_get(message_id=message.pk) or message
        events.conversation_events_send_on_commit(
            conversation.pk,
            customer=[] if internal else [events.agent_message_event(message)],
            agents=[events.conversation_message_event(message), *agents_events],
        )
    return message


def _notice_after(conversation: Conversation, *, after_id: int | None) -> Message | None:
    """The system notice a status change just wrote (the services write one and return a bool)."""
    notices = Message.objects.filter(conversation=conversation, role=Message.Role.SYSTEM)
    if after_id is not None:
        notices = notices.filter(pk__gt=after_id)
    return notices.order_by("-id").first()


def _ticket_close(*, conversation: Conversation, agent: Any) -> tuple[Ticket, Message | None]:
    ticket = _ticket_for(conversation)
    _ensure_may_act(ticket=ticket, agent=agent)
    last_id = (
        Message.objects.filter(conversation=conversation).order_by("-id").values_list("pk", flat=True).first()
    )
    # Resolves the ticket (timers included) and, with no ticket left open, gives the conversation back
    # to the assistant: a customer who writes again is answered rather than left in a closed room.
    services.ticket_resolve(ticket=ticket)
    ticket.refresh_from_db()
    return ticket, _notice_after(conversation, after_id=last_id)


def conversation_resolve(*, conversation: Conversation, agent: Any) -> Ticket:
    """Resolve the conversation's ticket; the customer is told and asked for a satisfaction rating."""
    with transaction.atomic():
        ticket, notice = _ticket_close(conversation=conversation, agent=agent)
        events.conversation_events_send_on_commit(
            conversation.pk,
            customer=[events.conversation_resolved_event(conversation_id=conversation.pk, notice=notice)],
            agents=[events.ticket_updated_event(conversation_id=conversation.pk, ticket=ticket)],
        )
        events.queue_changed_notify()
    return ticket


def conversation_hand_back(*, conversation: Conversation, agent: Any) -> Ticket:
    """Give the conversation back to the assistant, which answers the customer's next message again."""
    with transaction.atomic():
        ticket, notice = _ticket_close(conversation=conversation, agent=agent)
        events.conversation_events_send_on_commit(
            conversation.pk,
            customer=[events.agent_left_event(conversation_id=conversation.pk, agent=agent, notice=notice)],
            agents=[events.ticket_updated_event(conversation_id=conversation.pk, ticket=ticket)],
        )
        events.queue_changed_notify()
    return ticket
