"""Reads for the agent console: the queues, a whole conversation, and who may act on one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from agents.models import AgentPresence, CannedReply
from agents.permissions import AGENT_GROUPS
from conversations.models import Attachment, Conversation, Message, SatisfactionRating, Ticket

# One selector for both apps: the console reads the unresolved ticket as the customer's socket does.
from conversations.selectors import ticket_unresolved_get

__all__ = [
    "QUEUES",
    "ConversationDetail",
    "QueueItem",
    "agent_presence_get",
    "assignable_agents_list",
    "canned_replies_list",
    "conversation_detail_get",
    "conversation_get",
    "message_for_agents_get",
    "online_agents_count",
    "queue_counts_get",
    "queue_list",
    "ticket_latest_get",
    "ticket_oldest_waiting_get",
    "ticket_unresolved_get",
]

# waiting: handed off, nobody has it yet; mine: held by the asking agent; all: every unresolved ticket.
QUEUES = ("waiting", "mine", "all")


@dataclass(frozen=True)
class QueueItem:
    """A conversation in a queue, with the unresolved ticket that put it there and its last message."""

    conversation: Conversation
    ticket: Ticket
    last_message: Message | None


@dataclass(frozen=True)
class ConversationDetail:
    conversation: Conversation
    messages: list[Message]
    tickets: list[Ticket]
    csat: SatisfactionRating | None


def _messages_for_agents() -> QuerySet[Message]:
    """Messages with what the console shows beside each: images in order, author, the customer's rating."""
    return Message.objects.select_related("author", "feedback").prefetch_related(
        Prefetch("attachments", queryset=Attachment.objects.order_by("position"))
    )


def _unresolved_tickets(*, queue: str, user: Any) -> QuerySet[Ticket]:
    tickets = Ticket.objects.exclude(status=Ticket.Status.RESOLVED).select_related("conversation", "assignee")
    if queue == "waiting":
        tickets = tickets.filter(assignee__isnull=True)
    elif queue == "mine":
        tickets = tickets.filter(assignee=user)
    return tickets


def queue_list(*, queue: str, user: Any) -> list[QueueItem]:
    """A queue's conversations, the longest waiting first (three queries however long the queue is)."""
    if queue not in QUEUES:
        raise ValueError(f"Unknown queue {queue!r}")
    # The preview is the latest message that says something: system notices only repeat the status.
    last_message_id = (
        Message.objects.filter(conversation_id=OuterRef("conversation_id"))
        .exclude(role=Message.Role.SYSTEM)
        .order_by("-created_at", "-id")
        .values("id")[:1]
    )
    tickets = list(
        _unresolved_tickets(queue=queue, user=user)
        .annotate(last_message_id=Subquery(last_message_id))
        .order_by("created_at", "id")
    )
    message_ids = [ticket.last_message_id for ticket in tickets if ticket.last_message_id is not None]
    messages = {message.pk: message for message in _messages_for_agents().filter(pk__in=message_ids)}
    return [
        QueueItem(
            conversation=ticket.conversation,
            ticket=ticket,
            last_message=messages.get(ticket.last_message_id),
        )
        for ticket in tickets
    ]


def queue_counts_get(*, user: Any) -> dict[str, int]:
    """How many conversations wait for anyone, and how many the agent holds (for the page title)."""
    return {
        "waiting": _unresolved_tickets(queue="waiting", user=user).count(),
        "mine": _unresolved_tickets(queue="mine", user=user).count(),
    }


def conversation_get(*, conversation_id: uuid.UUID) -> Conversation | None:
    """The conversation with this id, or None."""
    return Conversation.objects.filter(pk=conversation_id).first()


def conversation_detail_get(*, conversation: Conversation) -> ConversationDetail:
    """Everything the console shows of a conversation: messages (internal notes too), tickets, CSAT."""
    messages = list(_messages_for_agents().filter(conversation=conversation).order_by("created_at", "id"))
    tickets = list(
        Ticket.objects.select_related("assignee").filter(conversation=conversation).order_by("-created_at")
    )
    csat = SatisfactionRating.objects.filter(conversation=conversation).first()
    return ConversationDetail(conversation=conversation, messages=messages, tickets=tickets, csat=csat)


def ticket_latest_get(*, conversation_id: uuid.UUID) -> Ticket | None:
    """The conversation's ticket the console shows: the unresolved one, else the latest."""
    return (
        Ticket.objects.select_related("assignee")
        .filter(conversation_id=conversation_id)
        .order_by(
            Case(When(status=Ticket.Status.RESOLVED, then=Value(1)), default=Value(0)), "-created_at", "-pk"
        )
        .first()
    )


def message_for_agents_get(*, message_id: int) -> Message | None:
    """One message with what the console shows beside it (for frames that name a message by id)."""
    return _messages_for_agents().filter(pk=message_id).first()


# --- canned replies, presence and auto-assignment ---------------------------------------------------


def canned_replies_list() -> list[CannedReply]:
    """The active canned replies, by shortcode (the any-language one before the translations)."""
    return list(CannedReply.objects.filter(is_active=True).order_by("shortcode", "locale", "id"))


def agent_presence_get(*, user: Any) -> AgentPresence | None:
    """The agent's presence row, or None before their first connection to the console."""
    return AgentPresence.objects.filter(user=user).first()


def _online_presence(*, now: datetime) -> QuerySet[AgentPresence]:
    # Someone taken out of the agent groups (or deactivated) is not offered conversations, socket or not.
    return AgentPresence.objects.filter(
        online_until__gt=now, user__is_active=True, user__groups__name__in=AGENT_GROUPS
    ).distinct()


def online_agents_count(*, now: datetime) -> int:
    """How many agents have the console open now (accepting or not)."""
    return _online_presence(now=now).count()


def ticket_oldest_waiting_get() -> Ticket | None:
    """The ticket that has waited longest for anyone (open, unassigned), as the waiting queue's first."""
    return (
        Ticket.objects.filter(status=Ticket.Status.OPEN, assignee__isnull=True)
        .select_related("conversation")
        .order_by("created_at", "id")
        .first()
    )


def assignable_agents_list(*, now: datetime, cap: int) -> list[AgentPresence]:
    """Online accepting agents below `cap` unresolved tickets: the fewest first, then who was given one
    least recently (never first), then the oldest account; each row's `load` is its ticket count."""
    unresolved = (
        Ticket.objects.filter(assignee_id=OuterRef("user_id"))
        .exclude(status=Ticket.Status.RESOLVED)
        .order_by()
        .values("assignee_id")
        .annotate(total=Count("id"))
        .values("total")
    )
    last_claimed = (
        Ticket.objects.filter(assignee_id=OuterRef("user_id"), claimed_at__isnull=False)
        .order_by("-claimed_at")
        .values("claimed_at")[:1]
    )
    return list(
        _online_presence(now=now)
        .filter(accepting=True)
        .select_related("user")
        .annotate(
            load=Coalesce(Subquery(unresolved, output_field=IntegerField()), Value(0)),
            last_claimed_at=Subquery(last_claimed),
        )
        .filter(Q(load__lt=cap))
        .order_by("load", F("last_claimed_at").asc(nulls_first=True), "user_id")
    )
