"""The shapes the agent console reads: a message as an agent sees it, a ticket, a queue row, a transcript.

An agent's message is the customer's shape (`conversations.serializers.message_data`) plus what only
staff may see: whether it is an internal note, who wrote it, and the customer's rating of it. Only
these functions add those fields, and nothing customer-facing calls them.
"""

from __future__ import annotations

from typing import Any

from agents.models import CannedReply
from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from conversations.serializers import author_display_name, message_data

__all__ = [
    "agent_data",
    "agent_message_data",
    "canned_reply_data",
    "conversation_detail_data",
    "customer_agent_message_data",
    "queue_item_data",
    "ticket_data",
]


def agent_data(user: Any) -> dict[str, Any] | None:
    """An agent as the console shows one: id, username and display name (None for nobody)."""
    if user is None:
        return None
    return {"id": user.pk, "username": user.get_username(), "name": author_display_name(user)}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_data(ticket: Ticket | None) -> dict[str, Any] | None:
    """A ticket with its timers (None while not known: never claimed, not answered, not resolved)."""
    if ticket is None:
        return None
    return {
        "id": ticket.pk,
        "status": ticket.status,
        "reason": ticket.reason,
        "trigger": ticket.trigger,
        "assignee": agent_data(ticket.assignee),
        "created_at": _iso(ticket.created_at),
        "claimed_at": _iso(ticket.claimed_at),
        "first_response_at": _iso(ticket.first_response_at),
        "first_response_seconds": ticket.first_response_seconds,
        "resolved_at": _iso(ticket.resolved_at),
        "resolution_seconds": ticket.resolution_seconds,
    }


def _feedback_data(message: Message) -> dict[str, Any] | None:
    try:
        feedback: Feedback = message.feedback
    except Feedback.DoesNotExist:
        return None
    return {"rating": feedback.rating, "comment": feedback.comment}


def agent_message_data(message: Message) -> dict[str, Any]:
    """A message as the console shows it: internal notes, authors and ratings included.

    Attachments, authors and feedback should be loaded by the caller (selectors do).
    """
    data = message_data(message)
    data["internal"] = message.internal
    data["author"] = agent_data(message.author) if message.author_id is not None else None
    data["feedback"] = _feedback_data(message) if message.role == Message.Role.ASSISTANT else None
    data["conversation"] = str(message.conversation_id)
    return data


def customer_agent_message_data(message: Message) -> dict[str, Any]:
    """A public agent message as the customer's widget shows it: the contract's shape and the name.

    Refuses an internal note outright: it must never be built into anything a customer receives.
    """
    if message.internal:
        raise ValueError(f"Message {message.pk} is an internal note; it is never sent to the customer.")
    # message_data names the agent (`"agent": {"name"}`) for every agent message.
    return message_data(message)


def queue_item_data(
    conversation: Conversation, *, ticket: Ticket, last_message: Message | None
) -> dict[str, Any]:
    """One row of a queue: the conversation, since when it waits, its last message and its ticket."""
    return {
        "id": str(conversation.pk),
        "status": conversation.status,
        "locale": conversation.locale,
        "waiting_since": _iso(ticket.created_at),
        "last_message": agent_message_data(last_message) if last_message is not None else None,
        "ticket": ticket_data(ticket),
    }


def conversation_detail_data(
    conversation: Conversation,
    *,
    messages: list[Message],
    tickets: list[Ticket],
    csat: SatisfactionRating | None,
) -> dict[str, Any]:
    """A whole conversation for the console: every message (internal notes too), tickets and ratings."""
    current = next((ticket for ticket in tickets if ticket.status != Ticket.Status.RESOLVED), None)
    return {
        "conversation": {
            "id": str(conversation.pk),
            "status": conversation.status,
            "locale": conversation.locale,
            "channel": conversation.channel,
            "metadata": conversation.metadata,
            "created_at": _iso(conversation.created_at),
            "last_message_at": _iso(conversation.last_message_at),
            "waiting_since": _iso(current.created_at) if current is not None else None,
            "csat": (
                {"score": csat.score, "comment": csat.comment, "created_at": _iso(csat.created_at)}
                if csat is not None
                else None
            ),
        },
        "ticket": ticket_data(current or (tickets[0] if tickets else None)),
        "tickets": [ticket_data(ticket) for ticket in tickets],
        "messages": [agent_message_data(message) for message in messages],
    }


def canned_reply_data(reply: CannedReply) -> dict[str, Any]:
    """A canned reply as GET /api/agent/canned-replies lists it (locale "" fits any conversation)."""
    return {
        "id": reply.pk,
        "shortcode": reply.shortcode,
        "locale": reply.locale,
        "title": reply.title,
        "text": reply.text,
    }
