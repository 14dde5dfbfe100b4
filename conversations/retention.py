"""Data lifecycle: purge conversations past the retention period, export or erase a customer's data.

What "older" means: a conversation's last activity, its `last_message_at` (the last customer or agent
message) or, when it has no message, its `created_at`. A conversation is purged when that is more than
DATA_RETENTION_DAYS days ago (0, the default, keeps everything for ever). A conversation still waiting
for a person (an unresolved ticket) is kept until its ticket is resolved: purging it would silently
take a customer out of the agents' queue.

Deleting a conversation deletes, by the models' cascades, its messages, attachments, thumbs and CSAT
ratings, tickets and review item. The image files go through the storage API (`storage.delete`, so
the same code works on S3-compatible storage) after the transaction commits (`attachment_deleted`,
connected in ConversationsConfig.ready()): a rolled-back delete keeps its files, and a file that
another attachment still uses (uploads are content-addressed: the same image is stored once) stays.

The reports' daily aggregates (reports.DailyStat) are not deleted: they are what the reports read for
past days once the conversations are gone. So a retention inside the days the reports' beat task
recomputes is refused (retention_days_check): the recompute would rewrite purged days as empty.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import Storage
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from conversations.models import Attachment, Conversation, Message, Ticket

__all__ = [
    "PurgeResult",
    "attachment_deleted",
    "conversations_erase",
    "conversations_expired",
    "conversations_export_zip",
    "conversations_purge",
    "message_deleting",
    "retention_days",
]

logger = logging.getLogger(__name__)

# Whole conversations are being deleted here: their cascade reaches the attachments without the
# per-message query of `message_deleting`.
_deleting_conversations: ContextVar[bool] = ContextVar("retention_deleting_conversations", default=False)


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed (or, with dry_run, would remove)."""

    conversations: int
    files: int
    cutoff: datetime | None


def retention_min_days() -> int:
    """The shortest retention allowed: longer than the days the reports' beat task recomputes.

    reports.tasks.daily_stats_update rewrites the last REPORTS_RECOMPUTE_DAYS finished days from the
    conversations; had they been purged, it would write those days as empty. One day more covers
    "yesterday" and a TIME_ZONE whose day starts before the UTC cutoff.
    """
    return int(settings.REPORTS_RECOMPUTE_DAYS) + 2


def retention_days_check(days: int) -> int:
    """`days` if it is a usable retention (0, or at least retention_min_days()), else ValueError."""
    if days < 0:
        raise ValueError("The retention must be 0 (keep for ever) or a positive number of days.")
    if 0 < days < retention_min_days():
        raise ValueError(
            f"A retention of {days} days is shorter than the reports recompute (REPORTS_RECOMPUTE_DAYS="
            f"{settings.REPORTS_RECOMPUTE_DAYS}): use at least {retention_min_days()} days, or lower "
            "REPORTS_RECOMPUTE_DAYS, or the daily aggregates of purged days would be rewritten as empty."
        )
    return days


def retention_days() -> int:
    """DATA_RETENTION_DAYS: days of inactivity after which a conversation is purged; 0 keeps all."""
    return retention_days_check(int(getattr(settings, "DATA_RETENTION_DAYS", 0)))


def conversations_expired(*, cutoff: datetime) -> QuerySet[Conversation]:
    """Conversations whose last activity is before `cutoff`, except those with an unresolved ticket."""
    waiting = Ticket.objects.filter(conversation=OuterRef("pk")).exclude(status=Ticket.Status.RESOLVED)
    # COALESCE(last_message_at, created_at) < cutoff, spelt so that both columns' indexes serve it.
    inactive = Q(last_message_at__lt=cutoff) | Q(last_message_at__isnull=True, created_at__lt=cutoff)
    return Conversation.objects.filter(inactive).exclude(Exists(waiting))


def _file_names(attachments: QuerySet[Attachment]) -> set[str]:
    names: set[str] = set()
    for image, thumbnail in attachments.values_list("image", "thumbnail"):
        names.update(name for name in (image, thumbnail) if name)
    return names


def _names_still_used(names: Iterable[str], *, excluding: QuerySet[Attachment] | None = None) -> set[str]:
    """Which of `names` an attachment row (other than `excluding`) still points at."""
    wanted = list(names)
    if not wanted:
        return set()
    rows = Attachment.objects.filter(Q(image__in=wanted) | Q(thumbnail__in=wanted))
    if excluding is not None:
        rows = rows.exclude(pk__in=excluding.values("pk"))
    used: set[str] = set()
    for image, thumbnail in rows.values_list("image", "thumbnail"):
        used.update((image, thumbnail))
    return used & set(wanted)


def attachment_files_delete(*, storage: Storage, names: Sequence[str]) -> int:
    """Delete the files in `names` that no attachment row uses any more; return how many went.

    Run after the deleting transaction committed. Idempotent: a file already gone is skipped, so the
    callbacks of two overlapping purges, or of a cascade that reaches an attachment twice, agree.
    Known window: an upload of the very same image (same hash) that found the file before this runs
    and commits its row after the check would point at a removed file.
    """
    used = _names_still_used(names)
    removed = 0
    for name in dict.fromkeys(names):
        if name in used:
            continue
        try:
            if not storage.exists(name):
                continue
            storage.delete(name)
        except OSError:
            # A file that cannot be removed now is logged, not retried: the row is gone either way.
            logger.exception("Could not delete attachment file %s", name)
            continue
        removed += 1
    return removed


def _conversations_delete(ids: Sequence[Any]) -> int:
    """Delete these conversations (in the caller's transaction); return how many files will go.

    The files themselves go when the transaction commits (`attachment_deleted`); counted here, in the
    transaction, so that the number is right however deeply the caller nests it.
    """
    names = _file_names(Attachment.objects.filter(conversation_id__in=ids))
    Conversation.objects.filter(pk__in=ids).delete()
    return len(names - _names_still_used(names))


def attachment_deleted(sender: type[Attachment], instance: Attachment, **kwargs: Any) -> None:
    """post_delete receiver: remove the attachment's image and thumbnail once the delete commits.

    On commit, not now: a delete that is rolled back keeps both its row and its files.
    """
    names = [name for name in (instance.image.name, instance.thumbnail.name) if name]
    if not names:
        return
    storage = instance.image.storage
    using = kwargs.get("using") or "default"
    transaction.on_commit(lambda: attachment_files_delete(storage=storage, names=names), using=using)


def message_deleting(sender: type[Message], instance: Message, **kwargs: Any) -> None:
    """pre_delete receiver: a deleted message takes its images with it (their files go on commit).

    Attachment.message is SET_NULL (an upload not sent yet has no message), so without this the images
    of a message deleted in admin would stay on as the conversation's.
    """
    if _deleting_conversations.get():
        return
    Attachment.objects.using(kwargs.get("using") or "default").filter(message=instance).delete()


def _report_questions_clear(*, before: datetime) -> int:
    """Empty the stored unanswered questions of the report days wholly before `before` (reports.DailyStat
    keeps up to 200 characters of each: customers' words); returns how many days were cleared."""
    from reports.models import DailyStat

    last_day = timezone.localtime(before).date() - timedelta(days=1)
    return int(
        DailyStat.objects.filter(day__lte=last_day)
        .exclude(unanswered_questions={})
        .update(unanswered_questions={})
    )


def conversations_purge(
    *,
    days: int | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PurgeResult:
    """Delete the conversations inactive for more than `days` (DATA_RETENTION_DAYS), batch by batch.

    Each batch (DATA_RETENTION_BATCH_SIZE conversations) is one transaction that locks its rows with
    SKIP LOCKED: two purges running at once take different rows, and a conversation that gets a new
    message meanwhile no longer matches when it is locked. Idempotent: a rerun finds nothing more.
    """
    days = retention_days() if days is None else retention_days_check(days)
    if days == 0:
        return PurgeResult(conversations=0, files=0, cutoff=None)
    cutoff = (now or timezone.now()) - timedelta(days=days)
    if dry_run:
        expired = conversations_expired(cutoff=cutoff)
        doomed = Attachment.objects.filter(conversation__in=expired.values("pk"))
        names = _file_names(doomed)
        files = len(names - _names_still_used(names, excluding=doomed))
        return PurgeResult(conversations=expired.count(), files=files, cutoff=cutoff)
    size = batch_size or int(getattr(settings, "DATA_RETENTION_BATCH_SIZE", 500))
    conversations = files = 0
    deleting = _deleting_conversations.set(True)
    try:
        while True:
            with transaction.atomic():
                ids = list(
                    conversations_expired(cutoff=cutoff)
                    .order_by("pk")
                    .select_for_update(skip_locked=True, of=("self",))
                    .values_list("pk", flat=True)[:size]
                )
                if not ids:
                    break
                files += _conversations_delete(ids)
            conversations += len(ids)
            if len(ids) < size:
                break
    finally:
        _deleting_conversations.reset(deleting)
    # The reports keep their daily counts, but not the customers' words past the retention: the
    # unanswered questions of the days before the cutoff go too (their counts stay in the day's row).
    questions_cleared = _report_questions_clear(before=cutoff)
    if conversations or questions_cleared:
        logger.info(
            "Retention purged %s conversations inactive since before %s (%s files; the unanswered "
            "questions of %s report days)",
            conversations,
            cutoff.isoformat(),
            files,
            questions_cleared,
        )
    return PurgeResult(conversations=conversations, files=files, cutoff=cutoff)


def conversations_erase(*, conversation_ids: Sequence[Any], user: Any) -> PurgeResult:
    """Erase conversations on a customer's request, and record who erased what, and when.

    The record (a log line and one admin LogEntry per conversation) names the staff member and the
    conversations' ids, nothing the customer wrote or is.
    """
    files = 0
    deleting = _deleting_conversations.set(True)
    try:
        with transaction.atomic():
            conversations = list(
                Conversation.objects.filter(pk__in=list(conversation_ids)).select_for_update().order_by("pk")
            )
            ids = [conversation.pk for conversation in conversations]
            if ids:
                content_type = ContentType.objects.get_for_model(Conversation)
                LogEntry.objects.bulk_create(
                    LogEntry(
                        user_id=user.pk,
                        content_type=content_type,
                        object_id=str(conversation.pk),
                        object_repr=f"Conversation {str(conversation.pk)[:8]}",
                        action_flag=DELETION,
                        change_message="Erased on the customer's request (with its messages and images).",
                    )
                    for conversation in conversations
                )
                files = _conversations_delete(ids)
    finally:
        _deleting_conversations.reset(deleting)
    logger.info(
        "User %s erased %s conversations on the customer's request: %s (%s files)",
        user.pk,
        len(ids),
        ", ".join(str(pk) for pk in ids),
        files,
    )
    return PurgeResult(conversations=len(ids), files=files, cutoff=None)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _conversation_document(conversation: Conversation) -> dict[str, Any]:
    """One conversation as the customer's export shows it: what they said, were told and rated."""
    messages = []
    rows = conversation.messages.order_by("created_at", "id").select_related("feedback")
    for message in rows.prefetch_related("attachments"):
        if message.internal:
            continue  # an agent's internal note is staff's, never shown to the customer
        feedback = getattr(message, "feedback", None)
        messages.append(
            {
                "id": message.pk,
                "role": message.role,
                "text": message.text,
                "status": message.status,
                "created_at": _iso(message.created_at),
                "attachments": [
                    f"images/{attachment.pk}.jpg"
                    for attachment in sorted(message.attachments.all(), key=lambda item: item.position)
                ],
                "rating": (
                    {
                        "rating": feedback.rating,
                        "comment": feedback.comment,
                        "created_at": _iso(feedback.created_at),
                    }
                    if feedback is not None
                    else None
                ),
            }
        )
    csat = getattr(conversation, "csat", None)
    return {
        "id": str(conversation.pk),
        "channel": conversation.channel,
        "status": conversation.status,
        "locale": conversation.locale,
        "customer_ip": conversation.customer_ip,
        "customer_user_agent": conversation.customer_user_agent,
        "verified_customer_id": conversation.verified_customer_id,
        "metadata": conversation.metadata,
        "created_at": _iso(conversation.created_at),
        "last_message_at": _iso(conversation.last_message_at),
        "messages": messages,
        "satisfaction": (
            {"score": csat.score, "comment": csat.comment, "created_at": _iso(csat.created_at)}
            if csat
            else None
        ),
        "tickets": [
            {
                "id": ticket.pk,
                "status": ticket.status,
                "trigger": ticket.trigger,
                "created_at": _iso(ticket.created_at),
                "resolved_at": _iso(ticket.resolved_at),
            }
            for ticket in conversation.tickets.order_by("created_at")
        ],
        "images": [
            {
                "file": f"images/{attachment.pk}.jpg",
                "original_name": attachment.original_name,
                "width": attachment.width,
                "height": attachment.height,
                "created_at": _iso(attachment.created_at),
            }
            for attachment in conversation.attachments.order_by("created_at")
        ],
    }


def conversations_export_zip(*, conversations: Iterable[Conversation]) -> bytes:
    """A ZIP of `conversations.json` (messages, ratings, tickets, metadata) and their images.

    Internal notes are left out: they were never the customer's. An image whose file is missing is
    listed in the JSON and skipped in the archive.
    """
    buffer = io.BytesIO()
    documents = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for conversation in conversations:
            documents.append(_conversation_document(conversation))
            for attachment in conversation.attachments.all():
                try:
                    with attachment.image.open("rb") as image:
                        archive.writestr(f"images/{attachment.pk}.jpg", image.read())
                except (OSError, ValueError):
                    logger.warning("Export: the image of attachment %s is missing", attachment.pk)
        archive.writestr(
            "conversations.json",
            json.dumps(
                {"exported_at": timezone.now().isoformat(), "conversations": documents},
                ensure_ascii=False,
                indent=2,
            ),
        )
    return buffer.getvalue()
