"""Reads for the agent console: the queues, a whole conversation, and who may act on one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from conversations.models import Attachment, Conversation, Message, SatisfactionRating, Ticket

__all__ = [
    "QUEUES",
    "ConversationDetail",
    "QueueItem",
    "conversation_detail_get",
    "conversation_get",
    "message_for_agents_get",
    "queue_counts_get",
    "queue_list",
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


def ticket_unresolved_get(*, conversation: Conversation) -> Ticket | None:
    """The conversation's ticket that is not resolved yet (there is at most one), with its assignee."""
    return (
        Ticket.objects.select_related("assignee")
        .filter(conversation=conversation)
        .exclude(status=Ticket.Status.RESOLVED)
        .first()
    )


def conversation_detail_get(*, conversation: Conversation) -> ConversationDetail:
    """Everything the console shows of a conversation: messages (internal notes too), tickets, CSAT."""
    messages = list(_messages_for_agents().filter(conversation=conversation).order_by("created_at", "id"))
    tickets = list(
        Ticket.objects.select_related("assignee").filter(conversation=conversation).order_by("-created_at")
    )
    csat = SatisfactionRating.objects.filter(conversation=conversation).first()
    return ConversationDetail(conversation=conversation, messages=messages, tickets=tickets, csat=csat)


def message_for_agents_get(*, message_id: int) -> Message | None:
    """One message with what the console shows beside it (for frames that name a message by id)."""
    return _messages_for_agents().filter(pk=message_id).first()
