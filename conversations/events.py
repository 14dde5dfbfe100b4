"""Every frame and channel-layer event a customer's socket receives, built in one place.

Group events (`reply.*`) go through the conversation's group to every socket on it; the others are
a socket's answers to its own frames. Each is the contract's shape (README, "Websocket").
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from conversations.models import Message, Ticket
from conversations.progress import ReplyText
from conversations.serializers import author_display_name, message_data

if TYPE_CHECKING:
    from conversations.handoff_rules import HandoffStatus

# The group every agent console socket joins (the agents app's AGENTS_QUEUE_GROUP): conversations
# cannot import agents, so it spells the name itself to say the waiting list changed.
AGENTS_QUEUE_GROUP = "agents-queue"


def conversation_group(conversation_id: uuid.UUID | str) -> str:
    """The group every socket of one conversation joins."""
    return f"conversation.{uuid.UUID(str(conversation_id)).hex}"


def ready_frame(
    *,
    conversation_id: uuid.UUID,
    messages: list[Message],
    pending: Message | None,
    progress: ReplyText | None,
    handoff_ticket: Ticket | None = None,
    handoff_status: HandoffStatus | None = None,
) -> dict[str, Any]:
    """The answer to `hello`: the saved history, the reply still in progress with its text so far, and
    the handoff under way (null without an unresolved ticket), so a reloaded widget waits or shows
    the agent as it did before."""
    return {
        "type": "ready",
        "conversation": str(conversation_id),
        "messages": [message_data(message) for message in messages],
        "pending_reply": pending_reply_data(pending=pending, progress=progress),
        "handoff": (
            handoff_data(ticket=handoff_ticket, status=handoff_status)
            if handoff_ticket is not None and handoff_status is not None
            else None
        ),
    }


def pending_reply_data(*, pending: Message | None, progress: ReplyText | None) -> dict[str, Any] | None:
    """The reply still streaming with its text so far (the last delta it includes is `seq`; -1 before
    the first), or None: later deltas with a higher seq follow it."""
    if pending is None:
        return None
    progress = progress or ReplyText(text="", seq=-1)
    return {"reply_id": pending.pk, "text": progress.text, "seq": progress.seq}


def handoff_data(*, ticket: Ticket, status: HandoffStatus) -> dict[str, Any]:
    """An unresolved ticket as the customer sees it: handoff.started's fields, its state, its agent."""
    return {
        "ticket": ticket.pk,
        "status": ticket.status,
        "position": status.position,
        "expected_wait_minutes": status.expected_wait_minutes,
        "business_hours_open": status.business_hours_open,
        "opens_at": status.opens_at.isoformat() if status.opens_at is not None else None,
        "time_zone": status.time_zone,
        # The assignee's name only (the console's agent data has ids and usernames; not for customers).
        "agent": {"name": author_display_name(ticket.assignee)} if ticket.assignee is not None else None,
    }


def message_accepted_frame(*, client_id: uuid.UUID, message: Message, reply_id: int | None) -> dict[str, Any]:
    return {
        "type": "message.accepted",
        "client_id": str(client_id),
        "message": message_data(message),
        "reply_id": reply_id,
    }


def reply_started_frame(reply_id: int) -> dict[str, Any]:
    return {"type": "reply.started", "reply_id": reply_id}


def reply_delta_event(*, reply_id: int, seq: int, text: str) -> dict[str, Any]:
    return {"type": "reply.delta", "reply_id": reply_id, "seq": seq, "text": text}


def tool_started_event(*, reply_id: int, call_id: str, name: str, summary: str) -> dict[str, Any]:
    """A business tool the reply called is running: `summary` says what, in the conversation's language."""
    return {
        "type": "tool.started",
        "reply_id": reply_id,
        "call_id": call_id,
        "name": name,
        "summary": summary,
    }


def tool_finished_event(*, reply_id: int, call_id: str, outcome: str) -> dict[str, Any]:
    """The tool call is over: "ok", "error" or "timeout" (DESIGN.md, Business tools)."""
    return {"type": "tool.finished", "reply_id": reply_id, "call_id": call_id, "outcome": outcome}


def reply_done_event(reply: Message) -> dict[str, Any]:
    return {"type": "reply.done", "reply_id": reply.pk, "message": message_data(reply)}


def reply_error_event(reply: Message, *, code: str, detail: str) -> dict[str, Any]:
    return {
        "type": "reply.error",
        "reply_id": reply.pk,
        "code": code,
        "detail": detail,
        "message": message_data(reply),
    }


def error_frame(
    *, code: str, detail: str, client_id: str | None = None, retry_after: int | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if client_id is not None:
        frame["client_id"] = client_id
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def feedback_saved_frame(*, message_id: int, rating: int) -> dict[str, Any]:
    return {"type": "feedback.saved", "message_id": message_id, "rating": rating}


def csat_saved_frame(*, score: int) -> dict[str, Any]:
    return {"type": "csat.saved", "score": score}


def handoff_started_frame(
    *, ticket_id: int, status: HandoffStatus | None = None, notice: Message | None = None
) -> dict[str, Any]:
    """A conversation went to a person: the ticket, the queue position and expected wait, and whether
    the team is in (if not, `opens_at` says when it is back and the notice says so in words).

    `ticket_id` is the first shape's name, kept for clients written against it; `ticket` is the
    contract's. Without a status only the ticket is known (the shape before queue positions).
    """
    frame: dict[str, Any] = {"type": "handoff.started", "ticket_id": ticket_id}
    if status is None:
        return frame
    frame.update(
        {
            "ticket": ticket_id,
            "position": status.position,
            "expected_wait_minutes": status.expected_wait_minutes,
            "business_hours_open": status.business_hours_open,
            "opens_at": status.opens_at.isoformat() if status.opens_at is not None else None,
            "time_zone": status.time_zone,
            # The system message the handoff saved (the same sentence a reload shows in the history).
            "message": message_data(notice) if notice is not None else None,
        }
    )
    return frame


def conversation_resolved_event(*, conversation_id: uuid.UUID, notice: Message | None) -> dict[str, Any]:
    """The conversation's ticket was resolved (console or admin): the widget shows the notice and asks
    for a CSAT rating."""
    return {
        "type": "conversation.resolved",
        "conversation": str(conversation_id),
        "message": message_data(notice) if notice is not None else None,
        "csat_requested": True,
    }


def conversation_closed_event(*, conversation_id: uuid.UUID, notice: Message) -> dict[str, Any]:
    """Staff closed the conversation (its tickets resolved with it): the widget shows the notice and
    ends any waiting; the consoles that have it open show the ticket resolved."""
    return {
        "type": "conversation.closed",
        "conversation": str(conversation_id),
        "message": message_data(notice),
    }


def queue_changed_event() -> dict[str, Any]:
    """To AGENTS_QUEUE_GROUP: the waiting list changed (the agents app's queue.changed)."""
    return {"type": "queue.changed"}
