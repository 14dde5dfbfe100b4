"""Ticket rules for people: the claim by conditional update, and the first-response and resolution timers.

Timers count business hours only (the team's weekly hours, holidays and time zone: HandoffSettings),
so a ticket opened on Friday night and answered on Monday morning waited minutes, not days.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.models import CannedReply
from conversations import handoff_rules
from conversations import services as conversation_services
from conversations.errors import ServiceError
from conversations.models import Message, Ticket
from conversations.serializers import author_display_name

__all__ = [
    "TicketAlreadyClaimed",
    "canned_reply_save",
    "ticket_claim",
    "ticket_first_response_record",
    "ticket_resolution_record",
    "ticket_resolve",
]


def _display_name(user: Any) -> str:
    return author_display_name(user) if user is not None else "Someone"


class TicketAlreadyClaimed(ServiceError):
    """Another agent claimed the ticket first; the message names who has it."""

    def __init__(self, holder: Any) -> None:
        self.holder = holder
        super().__init__("already_claimed", f"{_display_name(holder)} has this conversation.")


def ticket_claim(*, ticket: Ticket, agent: Any) -> Ticket:
    """Take an open ticket (open → assigned, with its assignee and claimed_at) in one conditional UPDATE.

    Of two agents claiming at once exactly one UPDATE matches the row; the other raises
    TicketAlreadyClaimed naming the winner. Claiming one's own ticket again returns it unchanged; a
    resolved ticket is refused with `ticket_resolved`.
    """
    now = timezone.now()
    claimed = Ticket.objects.filter(pk=ticket.pk, status=Ticket.Status.OPEN, assignee__isnull=True).update(
        status=Ticket.Status.ASSIGNED, assignee=agent, claimed_at=now, updated_at=now
    )
    current = Ticket.objects.select_related("assignee", "conversation").get(pk=ticket.pk)
    if claimed or current.assignee_id == agent.pk:
        return current
    if current.status == Ticket.Status.RESOLVED:
        raise ServiceError("ticket_resolved", "This conversation's ticket is already resolved.")
    raise TicketAlreadyClaimed(current.assignee)


def ticket_first_response_record(*, ticket: Ticket, message: Message) -> bool:
    """Record the ticket's first response if this agent message is it (public, the first one).

    Call it when an agent's public message is saved. The time waited counts business hours only;
    a conditional UPDATE keeps the first one even when two agents answer at once. Returns whether
    this message was recorded.
    """
    if message.internal or message.role != Message.Role.AGENT or message.created_at < ticket.created_at:
        return False
    seconds = handoff_rules.team_schedule_get().business_seconds_between(
        ticket.created_at, message.created_at
    )
    return bool(
        Ticket.objects.filter(pk=ticket.pk, first_response_at__isnull=True).update(
            first_response_at=message.created_at, first_response_seconds=seconds, updated_at=timezone.now()
        )
    )


def ticket_resolution_record(*, ticket: Ticket) -> bool:
    """Fill in a resolved ticket's resolution time (business hours from opening to resolving), once."""
    ticket = Ticket.objects.get(pk=ticket.pk)
    if ticket.resolved_at is None or ticket.resolution_seconds is not None:
        return False
    seconds = handoff_rules.team_schedule_get().business_seconds_between(
        ticket.created_at, ticket.resolved_at
    )
    return bool(
        Ticket.objects.filter(
            pk=ticket.pk, resolution_seconds__isnull=True, resolved_at__isnull=False
        ).update(resolution_seconds=seconds)
    )


def ticket_resolve(*, ticket: Ticket) -> bool:
    """Resolve the ticket (conversations' service: the assistant answers again, its timer recorded).

    The caller (the console) tells the customer and the queues itself, as a resolve or a hand back.
    """
    with transaction.atomic():
        changed = conversation_services.ticket_resolve(ticket=ticket, announce=False)
        # A ticket resolved before the service recorded resolution times gets one now.
        ticket_resolution_record(ticket=ticket)
    return changed


def canned_reply_save(*, shortcode: str, locale: str, title: str, text: str, is_active: bool = True) -> bool:
    """Save the canned reply of this shortcode and locale, validated as admin does; returns whether
    it was new (an existing one gets this title and text)."""
    reply = CannedReply.objects.filter(shortcode=shortcode, locale=locale).first()
    created = reply is None
    if reply is None:
        reply = CannedReply(shortcode=shortcode, locale=locale)
    reply.title, reply.text, reply.is_active = title, text, is_active
    reply.full_clean(validate_unique=False)
    reply.save()
    return created
