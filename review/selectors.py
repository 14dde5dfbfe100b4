"""Reads of the review queue, for its admin pages and for the reports (review_queue_open)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta

from django.db.models import Count, QuerySet
from django.utils import timezone

from conversations.models import Message
from review.models import ReviewItem

__all__ = [
    "customer_message_before",
    "last_assistant_reply",
    "review_question_text",
    "review_queue_open_count",
    "review_verdict_counts",
]


def last_assistant_reply(
    *, conversation_id: uuid.UUID | str, before: datetime | None = None
) -> Message | None:
    """The conversation's last assistant reply (by `before`, if given): what a CSAT most likely judges."""
    replies = Message.objects.filter(conversation_id=conversation_id, role=Message.Role.ASSISTANT)
    if before is not None:
        replies = replies.filter(created_at__lte=before)
    return replies.order_by("-created_at", "-id").first()


def customer_message_before(*, reply: Message) -> Message | None:
    """The customer's message a reply answers: its `reply_to`, else the last customer message before it."""
    if reply.reply_to_id is not None:
        return Message.objects.filter(pk=reply.reply_to_id).first()
    return (
        Message.objects.filter(
            conversation_id=reply.conversation_id,
            role=Message.Role.CUSTOMER,
            created_at__lte=reply.created_at,
        )
        .exclude(pk=reply.pk)
        .order_by("-created_at", "-id")
        .first()
    )


def _as_bound(value: date | datetime, *, end: bool) -> datetime:
    """A datetime as it is; a date as the start of that day in TIME_ZONE (of the next day for an end)."""
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value)
    day = value + timedelta(days=1) if end else value
    return timezone.make_aware(datetime.combine(day, time.min))


def _items_of_conversations_created(
    *, created_from: date | datetime | None, created_to: date | datetime | None
) -> QuerySet[ReviewItem]:
    items = ReviewItem.objects.all()
    if created_from is not None:
        items = items.filter(conversation__created_at__gte=_as_bound(created_from, end=False))
    if created_to is not None:
        items = items.filter(conversation__created_at__lt=_as_bound(created_to, end=True))
    return items


def review_queue_open_count(
    *, created_from: date | datetime | None = None, created_to: date | datetime | None = None
) -> int:
    """How many review items still have no verdict, of conversations created in the period.

    The period counts by the conversation's creation, like every figure of the reports summary.
    `created_from` is inclusive and `created_to` exclusive as datetimes; given as dates, both are
    inclusive whole days in TIME_ZONE (the summary's `start` and `end`). None leaves that side open.
    """
    return (
        _items_of_conversations_created(created_from=created_from, created_to=created_to)
        .filter(verdict="")
        .count()
    )


def review_verdict_counts(
    *, created_from: date | datetime | None = None, created_to: date | datetime | None = None
) -> dict[str, int]:
    """Review items by verdict ("" for open ones, every verdict present), of conversations created then.

    The same period rules as `review_queue_open_count`.
    """
    counts: dict[str, int] = {"": 0, **dict.fromkeys(ReviewItem.Verdict.values, 0)}
    rows = (
        _items_of_conversations_created(created_from=created_from, created_to=created_to)
        .values("verdict")
        .annotate(count=Count("id"))
    )
    for row in rows:
        counts[row["verdict"]] = row["count"]
    return counts


def review_question_text(*, item: ReviewItem) -> str:
    """The customer's question behind the reply under review, on one line: a draft's title to start from."""
    if item.message is None:
        return ""
    question = customer_message_before(reply=item.message)
    if question is None:
        return ""
    return " ".join(question.text.split())
