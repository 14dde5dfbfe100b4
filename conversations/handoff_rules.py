"""When a conversation goes to a person by itself, and what the customer is told when it does.

The rules belong to the agents app (its settings, its phrase detector, its business hours), but
the moments they watch belong here: a customer message saved, a reply finished, a rating given.
So this module keeps a registry, as `replies.reply_generator_register` does for generation: the
agents app registers its rules and its team schedule from `AgentsConfig.ready`, and conversations
consults them without importing agents. Nothing registered: no automatic handoff, a team that is
always open, and the default handle time.

It also opens the ticket itself (`handoff_open`), so that the reply lifecycle can hand off after a
reply is saved without importing the services that import it.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import zoneinfo
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from celery import current_app
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from conversations import events
from conversations.models import Conversation, Message, Ticket

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_ASSIGN_TASK",
    "HandoffDecision",
    "HandoffMoment",
    "HandoffOpened",
    "HandoffStatus",
    "TeamAvailability",
    "TeamSchedule",
    "auto_assign_request_on_commit",
    "group_send_on_commit",
    "handoff_open",
    "handoff_rules_clear",
    "handoff_rules_consult",
    "handoff_rules_register",
    "handoff_started_payload",
    "handoff_status_get",
    "handoff_trigger_enabled",
    "reply_finished_handoff",
    "team_back_sentence",
    "team_schedule_get",
    "team_schedule_register",
]

# How many recent first responses the expected wait is the mean of.
RECENT_FIRST_RESPONSES = 20
DEFAULT_HANDLE_MINUTES = 5


class HandoffMoment(enum.Enum):
    """When rules are consulted; each kind of rule receives the conversation and the row concerned."""

    # A customer message was saved (the rule gets the Message); a handoff replaces the AI reply.
    CUSTOMER_MESSAGE = "customer_message"
    # An assistant reply was saved complete (the rule gets the reply Message).
    REPLY_FINISHED = "reply_finished"
    # The customer rated a reply (the rule gets the Feedback).
    FEEDBACK = "feedback"


@dataclass(frozen=True)
class HandoffDecision:
    """A rule's verdict: hand off, with this trigger (a Ticket.Trigger value) and reason for the agents."""

    trigger: str
    reason: str


HandoffRule = Callable[[Conversation, Any], HandoffDecision | None]


@dataclass(frozen=True)
class TeamAvailability:
    """Whether people are answering now, and if not when they are back (None: no opening known)."""

    is_open: bool
    opens_at: datetime | None
    time_zone: str
    expected_handle_minutes: int


class TeamSchedule(Protocol):
    """The team's hours, as the agents app knows them."""

    def availability(self, at: datetime) -> TeamAvailability: ...

    def business_seconds_between(self, start: datetime, end: datetime) -> int: ...

    def trigger_enabled(self, trigger: str) -> bool: ...


class _AlwaysOpen:
    """No agents app: open around the clock, every trigger on, wall-clock seconds."""

    def availability(self, at: datetime) -> TeamAvailability:
        return TeamAvailability(
            is_open=True,
            opens_at=None,
            time_zone=settings.TIME_ZONE,
            expected_handle_minutes=DEFAULT_HANDLE_MINUTES,
        )

    def business_seconds_between(self, start: datetime, end: datetime) -> int:
        return max(0, int((end - start).total_seconds()))

    def trigger_enabled(self, trigger: str) -> bool:
        return True


_rules: dict[HandoffMoment, list[HandoffRule]] = {moment: [] for moment in HandoffMoment}
_schedule: TeamSchedule = _AlwaysOpen()


def handoff_rules_register(moment: HandoffMoment, rule: HandoffRule) -> None:
    """Add a rule consulted at `moment` (registering the same rule twice keeps one)."""
    if rule not in _rules[moment]:
        _rules[moment].append(rule)


def handoff_rules_clear() -> None:
    """Forget every registered rule and the schedule (for tests that register their own)."""
    global _schedule
    for rules in _rules.values():
        rules.clear()
    _schedule = _AlwaysOpen()


def handoff_rules_consult(
    moment: HandoffMoment, conversation: Conversation, subject: Any
) -> HandoffDecision | None:
    """The first registered rule's decision to hand off at this moment, or None.

    A rule that crashes is logged and skipped: a bug in a rule must not lose the customer's message.
    """
    for rule in list(_rules[moment]):
        try:
            decision = rule(conversation, subject)
        except Exception:
            logger.exception("Handoff rule %r failed at %s", rule, moment.value)
            continue
        if decision is not None:
            return decision
    return None


def team_schedule_register(schedule: TeamSchedule) -> None:
    """Set the team's hours (the agents app's, registered when it is ready)."""
    global _schedule
    _schedule = schedule


def team_schedule_get() -> TeamSchedule:
    """The registered team schedule (always open without one)."""
    return _schedule


def handoff_trigger_enabled(trigger: str) -> bool:
    """Whether a trigger is switched on (inference asks before it offers the model the handoff tool)."""
    try:
        return _schedule.trigger_enabled(trigger)
    except Exception:
        logger.exception("Reading whether handoff trigger %s is enabled failed", trigger)
        return False


# --- auto-assignment ---------------------------------------------------------------------------------

# The agents app's task, queued by name as OCR is: this app does not import agents, and a worker
# knows the task by this name. Without the agents app nothing answers to it: no auto-assignment.
AUTO_ASSIGN_TASK = "agents.tasks.auto_assign"

# The embedded default runs Celery tasks eagerly, in the caller: auto-assignment there runs on this
# thread instead, one run at a time (the runs queue on the settings row's lock anyway), so that a
# socket connecting or a resolve does not wait for up to ASSIGNMENTS_PER_RUN transactions.
_assignment_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auto-assign")
_assignment_lock = threading.Lock()
# A run is queued on the thread and has not started: a further request is answered by that run.
_assignment_queued = False


def auto_assign_request_on_commit() -> None:
    """Queue one auto-assignment run once the current transaction commits (a ticket opened or was
    resolved, an agent became available, auto-assignment was switched on)."""
    transaction.on_commit(_auto_assign_enqueue)


def _auto_assign_enqueue() -> None:
    global _assignment_queued
    if settings.CELERY_TASK_ALWAYS_EAGER:
        with _assignment_lock:
            if _assignment_queued:
                return
            _assignment_queued = True
        _assignment_thread.submit(_auto_assign_in_thread)
        return
    try:
        current_app.send_task(AUTO_ASSIGN_TASK)
    except Exception:
        # What triggered it is saved; the next ticket, resolve or agent coming online runs it again.
        logger.exception("Auto-assignment could not be queued")


def _auto_assign_in_thread() -> None:
    global _assignment_queued
    with _assignment_lock:
        # From now on a change this run may not see queues the next one.
        _assignment_queued = False
    try:
        task = current_app.tasks.get(AUTO_ASSIGN_TASK)
        if task is not None:
            task.run()
    except Exception:
        logger.exception("Auto-assignment failed")
    finally:
        close_old_connections()


# --- what the customer is told ----------------------------------------------------------------------


@dataclass(frozen=True)
class HandoffStatus:
    """Where a handed-off customer stands: queue position, expected wait, and whether anyone is in."""

    ticket_id: int
    # 1 for the next customer to be taken; 0 once a person has the ticket (or it is resolved).
    position: int
    # position × the recent mean first response (or the settings' fallback); None outside hours.
    expected_wait_minutes: int | None
    business_hours_open: bool
    opens_at: datetime | None
    time_zone: str


def _recent_mean_first_response_minutes(fallback: int) -> float:
    recent = [
        seconds
        for seconds in Ticket.objects.filter(first_response_seconds__isnull=False)
        .order_by("-first_response_at")
        .values_list("first_response_seconds", flat=True)[:RECENT_FIRST_RESPONSES]
        if seconds is not None
    ]
    if not recent:
        return float(fallback)
    return sum(recent) / len(recent) / 60


def handoff_status_get(*, ticket: Ticket, at: datetime | None = None) -> HandoffStatus:
    """The ticket's place in the queue and the expected wait (two small queries)."""
    availability = _schedule.availability(at or timezone.now())
    waiting = ticket.status == Ticket.Status.OPEN and ticket.assignee_id is None
    position = 0
    if waiting:
        position = 1 + (
            Ticket.objects.filter(
                status=Ticket.Status.OPEN, assignee__isnull=True, created_at__lt=ticket.created_at
            ).count()
        )
    expected_wait_minutes: int | None = None
    if availability.is_open:
        # An assigned ticket (position 0) waits for nobody: no need to measure the team's pace.
        expected_wait_minutes = (
            max(
                1,
                math.ceil(
                    position * _recent_mean_first_response_minutes(availability.expected_handle_minutes)
                ),
            )
            if position
            else 0
        )
    return HandoffStatus(
        ticket_id=ticket.pk,
        position=position,
        expected_wait_minutes=expected_wait_minutes,
        business_hours_open=availability.is_open,
        opens_at=availability.opens_at,
        time_zone=availability.time_zone,
    )


_ZONE_NAMES = {
    "Asia/Shanghai": ("Beijing time", "北京时间"),
    "Asia/Chongqing": ("Beijing time", "北京时间"),
    "Asia/Hong_Kong": ("Hong Kong time", "香港时间"),
    "Asia/Taipei": ("Taipei time", "台北时间"),
    "UTC": ("UTC", "UTC"),
}
_ENGLISH_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_CHINESE_WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


def team_back_sentence(*, opens_at: datetime | None, now: datetime, time_zone: str, locale: str) -> str:
    """The system message saying when the team is back, in the conversation's language."""
    zone = zoneinfo.ZoneInfo(time_zone)
    english_zone, chinese_zone = _ZONE_NAMES.get(time_zone, (time_zone, time_zone))
    chinese = locale == Conversation.Locale.ZH_HANS
    if opens_at is None:
        if chinese:
            return "人工客服暂未上线，您可以先留言，我们上线后会尽快回复。"
        return (
            "Our team is away for now. Leave your message here and a person will answer when they are back."
        )
    local_open, local_now = opens_at.astimezone(zone), now.astimezone(zone)
    days_ahead = (local_open.date() - local_now.date()).days
    clock = f"{local_open:%H:%M}"
    if chinese:
        day = {0: "今天", 1: "明天", 2: "后天"}.get(days_ahead)
        if day is None:
            day = (
                _CHINESE_WEEKDAYS[local_open.weekday()]
                if days_ahead < 7
                else f"{local_open.month}月{local_open.day}日"
            )
        return f"人工客服将于 {day} {clock}（{chinese_zone}）上线，您可以先留言，我们上线后会尽快回复。"
    if days_ahead == 0:
        when = f"at {clock} today"
    elif days_ahead == 1:
        when = f"at {clock} tomorrow"
    elif days_ahead < 7:
        when = f"on {_ENGLISH_WEEKDAYS[local_open.weekday()]} at {clock}"
    else:
        when = f"on {local_open.day} {local_open:%B} at {clock}"
    return (
        f"Our team is back {when} ({english_zone}). Leave your message here and a person will answer it then."
    )


def _handoff_sentence(*, conversation: Conversation, status: HandoffStatus, now: datetime) -> str:
    if not status.business_hours_open:
        return team_back_sentence(
            opens_at=status.opens_at, now=now, time_zone=status.time_zone, locale=conversation.locale
        )
    # The widget says the same sentence live (handoffStarted in static/widget/chat/messages.js).
    if conversation.locale == Conversation.Locale.ZH_HANS:
        return "已为您转接人工客服，请稍候。"
    return "A person will join this conversation shortly."


def handoff_started_payload(*, ticket: Ticket, notice: Message | None = None) -> dict[str, Any]:
    """The handoff.started frame for this ticket now (reads the database: call it off the event loop).

    Without `notice`, the system message the handoff saved is looked up (the latest since the ticket).
    """
    if notice is None:
        notice = (
            Message.objects.filter(
                conversation_id=ticket.conversation_id,
                role=Message.Role.SYSTEM,
                created_at__gte=ticket.created_at,
            )
            .order_by("id")
            .prefetch_related("attachments")
            .first()
        )
    return events.handoff_started_frame(
        ticket_id=ticket.pk, status=handoff_status_get(ticket=ticket), notice=notice
    )


# --- opening the ticket ---------------------------------------------------------------------------------


def _group_send(group: str, event: dict[str, Any]) -> None:
    """Best-effort, as every event is: what it announces is saved first."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, event)
    except Exception as error:
        logger.warning("Sending %s to %s failed: %s", event["type"], group, error)


def group_send_on_commit(group: str, event: dict[str, Any]) -> None:
    """Send an event to a group once the current transaction commits (best-effort)."""
    transaction.on_commit(lambda: _group_send(group, event))


@dataclass(frozen=True)
class HandoffOpened:
    ticket: Ticket
    # False when the conversation already had an unresolved ticket (nothing new was written).
    created: bool
    notice: Message | None


def handoff_open(
    *,
    conversation: Conversation,
    reason: str,
    trigger: str,
    announce_to_customer: bool,
) -> HandoffOpened:
    """Open the conversation's ticket (or find the unresolved one) and stop the AI answering it.

    The caller holds the conversation's row lock (select_for_update) inside a transaction and has
    stopped the replies in progress; with the lock and the unique constraint, a conversation never
    gets two unresolved tickets. On commit the agents' queue hears of a new ticket, and, with
    `announce_to_customer`, the customer's sockets get handoff.started (a socket that asked with the
    button is answered by its consumer instead).
    """
    now = timezone.now()
    ticket = conversation.tickets.exclude(status=Ticket.Status.RESOLVED).first()
    notice = None
    created = ticket is None
    if ticket is None:
        ticket = Ticket.objects.create(
            conversation=conversation, reason=reason.strip()[:2000], trigger=trigger
        )
        status = handoff_status_get(ticket=ticket, at=now)
        notice = Message.objects.create(
            conversation=conversation,
            role=Message.Role.SYSTEM,
            source=Message.Source.SYSTEM,
            text=_handoff_sentence(conversation=conversation, status=status, now=now),
        )
        conversation_id = conversation.pk
        transaction.on_commit(lambda: _group_send(events.AGENTS_QUEUE_GROUP, events.queue_changed_event()))
        if announce_to_customer:
            frame = events.handoff_started_frame(ticket_id=ticket.pk, status=status, notice=notice)
            transaction.on_commit(lambda: _group_send(events.conversation_group(conversation_id), frame))
        # Queued after the customer's handoff.started is sent: an agent it assigns joins after it.
        auto_assign_request_on_commit()
    if conversation.status != Conversation.Status.HANDED_OFF:
        conversation.status = Conversation.Status.HANDED_OFF
        conversation.save(update_fields=["status", "updated_at"])
    return HandoffOpened(ticket=ticket, created=created, notice=notice)


def reply_finished_handoff(*, reply: Message) -> Ticket | None:
    """Consult the reply-finished rules for a reply just saved; hand off if one says so.

    Called by `replies.reply_finish`. Only a complete reply of a conversation the AI still answers is
    judged, and not while a newer reply streams (the customer wrote again: that reply is judged when
    it finishes, with the run of misses it extends).
    """
    if reply.role != Message.Role.ASSISTANT or reply.status != Message.Status.COMPLETE:
        return None
    if not _rules[HandoffMoment.REPLY_FINISHED]:
        return None
    try:
        return _reply_finished_handoff(reply=reply)
    except Exception:
        # The reply is saved; its generator must still send reply.done.
        logger.exception("Handoff rules after reply %s failed", reply.pk)
        return None


def _reply_finished_handoff(*, reply: Message) -> Ticket | None:
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=reply.conversation_id)
        if conversation.status != Conversation.Status.OPEN:
            return None
        if conversation.messages.filter(
            role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, pk__gt=reply.pk
        ).exists():
            return None
        decision = handoff_rules_consult(HandoffMoment.REPLY_FINISHED, conversation, reply)
        if decision is None:
            return None
        opened = handoff_open(
            conversation=conversation,
            reason=decision.reason,
            trigger=decision.trigger,
            announce_to_customer=True,
        )
    return opened.ticket
