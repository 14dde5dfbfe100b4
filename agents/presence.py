"""Agents' presence: the console's socket keeps `AgentPresence.online_until` in the future while open.

A socket pushes it PRESENCE_HORIZON_SECONDS ahead on connecting and every PRESENCE_HEARTBEAT_SECONDS,
and clears it when the agent's last socket in this process closes. A browser or server that dies
without closing stops counting within the horizon, with nobody logging the agent out; an agent with
sockets in two server processes is marked again by the other's next heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents import selectors
from agents.models import AgentPresence
from conversations import handoff_rules

__all__ = [
    "PRESENCE_HEARTBEAT_SECONDS",
    "PRESENCE_HORIZON_SECONDS",
    "PresenceState",
    "presence_mark_offline",
    "presence_mark_online",
    "presence_state_get",
]

PRESENCE_HEARTBEAT_SECONDS = 20
PRESENCE_HORIZON_SECONDS = 60


@dataclass(frozen=True)
class PresenceState:
    """What presence.updated says to one agent."""

    accepting: bool
    online_agents: int


def _available(presence: AgentPresence, now: datetime) -> bool:
    return presence.accepting and presence.online_until is not None and presence.online_until > now


def presence_mark_online(*, user: Any, accepting: bool | None = None) -> PresenceState:
    """Mark the agent online for the horizon (and set `accepting` when given).

    An agent who was not available before (offline, or not accepting) and is now gets waiting tickets
    by auto-assignment, on commit.
    """
    now = timezone.now()
    with transaction.atomic():
        presence, _ = AgentPresence.objects.select_for_update().get_or_create(user=user)
        was_available = _available(presence, now)
        presence.online_until = now + timedelta(seconds=PRESENCE_HORIZON_SECONDS)
        if accepting is not None:
            presence.accepting = accepting
        presence.save(update_fields=["online_until", "accepting", "updated_at"])
        if _available(presence, now) and not was_available:
            handoff_rules.auto_assign_request_on_commit()
    return PresenceState(accepting=presence.accepting, online_agents=selectors.online_agents_count(now=now))


def presence_mark_offline(*, user: Any) -> None:
    """The agent's last console socket closed: they are offered no more conversations."""
    AgentPresence.objects.filter(user=user).update(online_until=None, updated_at=timezone.now())


def presence_state_get(*, user: Any) -> PresenceState:
    """The agent's presence as presence.updated says it (accepting by default before any row)."""
    presence = selectors.agent_presence_get(user=user)
    return PresenceState(
        accepting=presence.accepting if presence is not None else True,
        online_agents=selectors.online_agents_count(now=timezone.now()),
    )
