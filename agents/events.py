"""Every frame and channel-layer event of the agent side, and the groups they travel through.

Three kinds of group:

- the conversation's own group (`conversations.events.conversation_group`), which the customer's
  sockets join: `agent.joined`, `agent.message`, `agent.typing`, `agent.left` and
  `conversation.resolved` go there for the customer, and the console's sockets that opened the
  conversation join it too, to hear `customer.message`, `customer.typing` and the assistant's replies;
- the agents' group of one conversation (`agents_conversation_group`), which only staff sockets
  join: internal notes and ticket changes travel there and nowhere else, so no customer socket can
  receive one, whatever it asks;
- the queue group (`AGENTS_QUEUE_GROUP`), which every console socket joins: `queue.changed` says the
  waiting list changed, and each socket then reads its own lists and sends `queue.updated`.

Events are sent on commit and best-effort: what they announce is saved first, and a console that
missed one (Redis away, a reconnect) reads the same from the REST API or the `queue.updated` it gets
on connecting.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from agents import serializers
from conversations import events as conversations_events
from conversations.events import conversation_group
from conversations.models import Message, Ticket
from conversations.serializers import author_display_name, message_data

__all__ = [
    "AGENTS_QUEUE_GROUP",
    "TYPING_RELAY_INTERVAL_SECONDS",
    "TYPING_SHOWN_SECONDS",
    "agent_joined_event",
    "agent_left_event",
    "agent_message_event",
    "agent_typing_event",
    "agent_user_group",
    "agents_conversation_group",
    "claim_events_send_on_commit",
    "conversation_assigned_event",
    "conversation_events_send_on_commit",
    "conversation_message_event",
    "conversation_opened_frame",
    "conversation_resolved_event",
    "group_send_on_commit",
    "presence_changed_event",
    "presence_updated_frame",
    "queue_changed_event",
    "queue_changed_notify",
    "queue_updated_frame",
    "ticket_updated_event",
    "typing_frame",
]

logger = logging.getLogger(__name__)

# Every console socket joins it: conversations' name for it, since the handoff service there says
# a conversation joined the waiting list by sending `queue_changed_event()` to it.
AGENTS_QUEUE_GROUP = conversations_events.AGENTS_QUEUE_GROUP

# A typing frame is relayed at most once per this many seconds per socket and conversation; a client
# shows the indicator for TYPING_SHOWN_SECONDS after the last one it got, so a steady typist keeps it lit.
TYPING_RELAY_INTERVAL_SECONDS = 2.0
TYPING_SHOWN_SECONDS = 6


def agents_conversation_group(conversation_id: uuid.UUID | str) -> str:
    """The group of the console sockets that opened one conversation (never a customer's)."""
    return f"agents.conversation.{uuid.UUID(str(conversation_id)).hex}"


def agent_user_group(user_id: int) -> str:
    """The group of every console socket of one agent (auto-assignment and presence speak to it)."""
    return f"agents.user.{int(user_id)}"


# --- to the customer (through the conversation's group; the console's sockets hear them too) ------


def agent_joined_event(*, conversation_id: uuid.UUID, agent: Any) -> dict[str, Any]:
    """A person took the conversation: the widget shows their name."""
    return {
        "type": "agent.joined",
        "conversation": str(conversation_id),
        "agent": {"name": author_display_name(agent)},
    }


def agent_message_event(message: Message) -> dict[str, Any]:
    """A public agent message for the customer; an internal note is refused by the serializer."""
    data = serializers.customer_agent_message_data(message)
    return {
        "type": "agent.message",
        "conversation": str(message.conversation_id),
        "message": data,
        "agent_name": data["agent"]["name"] if data["agent"] else None,
    }


def agent_typing_event(
    *, conversation_id: uuid.UUID, agent: Any, sender: str, internal: bool = False
) -> dict[str, Any]:
    """The agent is typing; `sender` (a channel name) is stripped before any socket sends it on.

    `internal` (writing a note) is sent to the agents' group only, and says so to colleagues.
    """
    event: dict[str, Any] = {
        "type": "agent.typing",
        "conversation": str(conversation_id),
        "agent": {"name": author_display_name(agent)},
        "sender": sender,
    }
    if internal:
        event["internal"] = True
    return event


# Conversations' own: an admin resolve sends it too.
conversation_resolved_event = conversations_events.conversation_resolved_event


def agent_left_event(*, conversation_id: uuid.UUID, agent: Any, notice: Message | None) -> dict[str, Any]:
    """The agent handed the conversation back: the assistant answers again (the notice says so)."""
    return {
        "type": "agent.left",
        "conversation": str(conversation_id),
        "agent": {"name": author_display_name(agent)},
        "message": message_data(notice) if notice is not None else None,
    }


# --- to the console ---------------------------------------------------------------------------------


def queue_changed_event() -> dict[str, Any]:
    """The waiting list changed (a handoff, a claim, a resolve): each console socket reads it again."""
    return conversations_events.queue_changed_event()


def queue_updated_frame(
    *, conversations: list[dict[str, Any]], mine: list[dict[str, Any]], counts: dict[str, int]
) -> dict[str, Any]:
    """The waiting queue (oldest first), the agent's own conversations, and both counts."""
    return {"type": "queue.updated", "conversations": conversations, "mine": mine, "counts": counts}


def conversation_opened_frame(detail: dict[str, Any]) -> dict[str, Any]:
    """The answer to `open`: the conversation as GET /api/agent/conversations/<id> returns it."""
    return {"type": "conversation.opened", **detail}


def conversation_message_event(message: Message) -> dict[str, Any]:
    """A new message in an open conversation, in the console's shape (internal notes included)."""
    return {
        "type": "conversation.message",
        "conversation": str(message.conversation_id),
        "message": serializers.agent_message_data(message),
    }


def ticket_updated_event(*, conversation_id: uuid.UUID, ticket: Ticket) -> dict[str, Any]:
    """The conversation's ticket changed hands or state (claimed, resolved, handed back)."""
    return {
        "type": "ticket.updated",
        "conversation": str(conversation_id),
        "ticket": serializers.ticket_data(ticket),
    }


def conversation_assigned_event(*, conversation_id: uuid.UUID, ticket: Ticket) -> dict[str, Any]:
    """To the agent's own group: auto-assignment gave them this conversation."""
    return {
        "type": "conversation.assigned",
        "conversation": str(conversation_id),
        "ticket": serializers.ticket_data(ticket),
    }


def presence_changed_event() -> dict[str, Any]:
    """To the agent's own group: their presence changed on another socket; each reads it again."""
    return {"type": "presence.changed"}


def presence_updated_frame(*, accepting: bool, online_agents: int) -> dict[str, Any]:
    """Whether this agent takes auto-assigned conversations, and how many agents are online."""
    return {"type": "presence.updated", "accepting": accepting, "online_agents": online_agents}


def typing_frame(
    *, conversation_id: str, who: str, agent_name: str | None = None, internal: bool = False
) -> dict[str, Any]:
    """Someone is typing in an open conversation: `from` is "customer" or "agent" (a colleague)."""
    frame: dict[str, Any] = {"type": "typing", "conversation": conversation_id, "from": who}
    if agent_name is not None:
        frame["agent"] = {"name": agent_name}
    if internal:
        frame["internal"] = True
    return frame


# --- sending ---------------------------------------------------------------------------------------


def _group_send(group: str, event: dict[str, Any]) -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(group, event)
    except Exception as error:
        logger.warning("Sending %s to %s failed: %s", event["type"], group, error)
        return False
    return True


def group_send_on_commit(group: str, event: dict[str, Any]) -> None:
    """Send an event to a group once the transaction that caused it commits (best-effort)."""
    transaction.on_commit(lambda: _group_send(group, event))


def conversation_events_send_on_commit(
    conversation_id: uuid.UUID, *, customer: list[dict[str, Any]], agents: list[dict[str, Any]]
) -> None:
    """Events for the customer's group and for the agents' group of one conversation, on commit."""
    for event in customer:
        group_send_on_commit(conversation_group(conversation_id), event)
    for event in agents:
        group_send_on_commit(agents_conversation_group(conversation_id), event)


def claim_events_send_on_commit(*, ticket: Ticket, agent: Any) -> None:
    """What a claim says, by a person or by auto-assignment: the customer hears who joined, the
    conversation's agents get the ticket."""
    conversation_id = ticket.conversation_id
    conversation_events_send_on_commit(
        conversation_id,
        customer=[agent_joined_event(conversation_id=conversation_id, agent=agent)],
        agents=[ticket_updated_event(conversation_id=conversation_id, ticket=ticket)],
    )


def queue_changed_notify() -> None:
    """Tell every console socket, on commit, that the waiting list changed."""
    group_send_on_commit(AGENTS_QUEUE_GROUP, queue_changed_event())
