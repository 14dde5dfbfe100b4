"""The agents app's handoff rules and team schedule, registered with conversations when the app is ready.

Each rule reads `HandoffSettings` when it is consulted (one small row), so a change in admin applies
to the next message without a restart. A run ("two in a row") starts again after the conversation's
last resolved ticket: a customer handed back to the assistant is not handed off again for what came
before.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime

from agents import business_hours
from agents.business_hours import BusinessRules, OpeningRange
from agents.models import HandoffSettings, Holiday, WeeklyHours
from agents.phrases import asks_for_a_person
from conversations import handoff_rules
from conversations.handoff_rules import HandoffDecision, HandoffMoment, TeamAvailability
from conversations.models import Conversation, Feedback, Message, Ticket
from knowledge.models import Article

__all__ = [
    "SettingsSchedule",
    "business_rules_get",
    "knowledge_miss_rule",
    "phrase_rule",
    "register",
    "thumbs_down_rule",
]


def business_rules_get(handoff_settings: HandoffSettings | None = None) -> BusinessRules:
    """The saved weekly hours, holidays and time zone as the pure functions take them."""
    handoff_settings = handoff_settings or HandoffSettings.current()
    return BusinessRules(
        time_zone=handoff_settings.time_zone,
        ranges=tuple(
            OpeningRange(weekday=row.weekday, opens=row.opens, closes=row.closes)
            for row in WeeklyHours.objects.all()
        ),
        holidays=frozenset(Holiday.objects.values_list("date", flat=True)),
    )


def _run_start(conversation: Conversation) -> datetime | None:
    """When the current run of replies began: after the last resolved ticket, if any."""
    return (
        Ticket.objects.filter(conversation=conversation, resolved_at__isnull=False)
        .order_by("-resolved_at")
        .values_list("resolved_at", flat=True)
        .first()
    )


def phrase_rule(conversation: Conversation, message: Message) -> HandoffDecision | None:
    """A customer who writes that they want a person gets one instead of an AI reply."""
    if not HandoffSettings.current().phrase_trigger_enabled or not asks_for_a_person(message.text):
        return None
    return HandoffDecision(
        trigger=Ticket.Trigger.CUSTOMER_PHRASE, reason=f"Asked for a person: {message.text[:500]}"
    )


def knowledge_miss_rule(conversation: Conversation, reply: Message) -> HandoffDecision | None:
    """The knowledge base had nothing for the last N complete replies in a row."""
    handoff_settings = HandoffSettings.current()
    if not handoff_settings.knowledge_miss_trigger_enabled or not reply.is_unanswered:
        return None
    # With no published article there is no knowledge base to miss: every reply would count, and every
    # conversation of a platform not yet given one would go to a person after two messages.
    if not Article.objects.filter(status=Article.Status.PUBLISHED).exists():
        return None
    turns = handoff_settings.knowledge_miss_turns
    replies = Message.objects.filter(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.COMPLETE,
        internal=False,
        pk__lte=reply.pk,
    )
    run_start = _run_start(conversation)
    if run_start is not None:
        replies = replies.filter(created_at__gt=run_start)
    latest = list(replies.order_by("-id").values_list("is_unanswered", flat=True)[:turns])
    if len(latest) < turns or not all(latest):
        return None
    return HandoffDecision(
        trigger=Ticket.Trigger.KNOWLEDGE_MISS,
        reason=f"The knowledge base had nothing for {turns} replies in a row.",
    )


def thumbs_down_rule(conversation: Conversation, feedback: Feedback) -> HandoffDecision | None:
    """The customer's last N rated replies (in the conversation's order) were all rated down."""
    handoff_settings = HandoffSettings.current()
    if not handoff_settings.thumbs_down_trigger_enabled or feedback.rating != Feedback.Rating.DOWN:
        return None
    count = handoff_settings.thumbs_down_in_a_row
    ratings = Feedback.objects.filter(message__conversation=conversation)
    run_start = _run_start(conversation)
    if run_start is not None:
        ratings = ratings.filter(message__created_at__gt=run_start)
    latest = list(ratings.order_by("-message_id").values_list("rating", flat=True)[:count])
    if len(latest) < count or any(rating != Feedback.Rating.DOWN for rating in latest):
        return None
    return HandoffDecision(trigger=Ticket.Trigger.THUMBS_DOWN, reason=f"{count} thumbs-down in a row.")


_TRIGGER_SWITCHES: dict[str, str] = {
    Ticket.Trigger.CUSTOMER_PHRASE: "phrase_trigger_enabled",
    Ticket.Trigger.MODEL_TOOL: "model_tool_trigger_enabled",
    Ticket.Trigger.KNOWLEDGE_MISS: "knowledge_miss_trigger_enabled",
    Ticket.Trigger.THUMBS_DOWN: "thumbs_down_trigger_enabled",
}


class SettingsSchedule:
    """The team's hours from HandoffSettings, WeeklyHours and Holiday, read at each call."""

    def availability(self, at: datetime) -> TeamAvailability:
        handoff_settings = HandoffSettings.current()
        rules = business_rules_get(handoff_settings)
        open_now = business_hours.is_open(at, rules)
        opens_at = None if open_now else business_hours.next_opening(at, rules)
        return TeamAvailability(
            is_open=open_now,
            opens_at=opens_at.astimezone(zoneinfo.ZoneInfo(rules.time_zone)) if opens_at else None,
            time_zone=rules.time_zone,
            expected_handle_minutes=handoff_settings.expected_handle_minutes,
        )

    def business_seconds_between(self, start: datetime, end: datetime) -> int:
        return business_hours.business_seconds_between(start, end, business_rules_get())

    def trigger_enabled(self, trigger: str) -> bool:
        switch = _TRIGGER_SWITCHES.get(trigger)
        # The button (and anything else a person or the code asks for explicitly) is always on.
        return switch is None or bool(getattr(HandoffSettings.current(), switch))


def register() -> None:
    """Register the rules and the schedule with conversations (from AgentsConfig.ready)."""
    handoff_rules.handoff_rules_register(HandoffMoment.CUSTOMER_MESSAGE, phrase_rule)
    handoff_rules.handoff_rules_register(HandoffMoment.REPLY_FINISHED, knowledge_miss_rule)
    handoff_rules.handoff_rules_register(HandoffMoment.FEEDBACK, thumbs_down_rule)
    handoff_rules.team_schedule_register(SettingsSchedule())
