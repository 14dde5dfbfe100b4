"""Writes to conversations: every change goes through a function here."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, BinaryIO

from celery import current_app
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from conversations import events, handoff_rules, ocr, replies, selectors
from conversations.errors import ServiceError
from conversations.models import (
    Attachment,
    Conversation,
    Feedback,
    Message,
    SatisfactionRating,
    Ticket,
    attachment_path,
    attachment_thumbnail_path,
    token_hash,
)
from conversations.selectors import PostedMessage
from conversations.uploads import image_normalise

logger = logging.getLogger(__name__)


def message_max_chars() -> int:
    """The longest message text (customer's or agent's), in characters: the MESSAGE_MAX_CHARS setting."""
    return int(settings.MESSAGE_MAX_CHARS)


def conversation_create(
    *,
    locale: str,
    metadata: dict[str, Any] | None = None,
    channel: str = Conversation.Channel.WIDGET,
    customer_ip: str | None = None,
    customer_user_agent: str = "",
    verified_customer_id: str = "",
) -> tuple[Conversation, str]:
    """Open a conversation and return it with the customer's secret token (shown once, stored hashed).

    `verified_customer_id` is the host site's id for the customer, already checked against its HMAC by
    the caller; it stays with the conversation for good.
    """
    token = secrets.token_urlsafe(32)
    conversation = Conversation.objects.create(
        token_hash=token_hash(token),
        locale=locale,
        metadata=metadata or {},
        channel=channel,
        customer_ip=customer_ip,
        customer_user_agent=customer_user_agent[:512],
        verified_customer_id=verified_customer_id,
    )
    return conversation, token


def message_post(
    *,
    conversation: Conversation,
    text: str,
    client_id: uuid.UUID | None = None,
    attachment_ids: Sequence[uuid.UUID] = (),
) -> PostedMessage:
    """Save a customer message and, unless a person has taken over, queue the assistant's reply.

    A repeated `client_id` returns the message saved the first time, and queues nothing. It is found
    by the unique constraint (or, for a repeat that would now be refused, looked up then): a new
    message costs no lookup.
    """
    try:
        return _message_post(
            conversation=conversation, text=text, client_id=client_id, attachment_ids=attachment_ids
        )
    except (IntegrityError, ServiceError):
        # A repeat (perhaps from two sockets racing), or one refused now but saved before.
        if client_id is not None:
            existing = selectors.message_posted_get(conversation=conversation, client_id=client_id)
            if existing is not None:
                return existing
        raise


def _message_post(
    *,
    conversation: Conversation,
    text: str,
    client_id: uuid.UUID | None,
    attachment_ids: Sequence[uuid.UUID],
) -> PostedMessage:
    text = text.strip()
    if not text and not attachment_ids:
        raise ServiceError("empty_message", "A message needs text or at least one image.")
    limit = message_max_chars()
    if len(text) > limit:
        raise ServiceError("message_too_long", f"A message can be at most {limit} characters.")
    if len(attachment_ids) > settings.ATTACHMENT_MAX_PER_MESSAGE:
        raise ServiceError(
            "too_many_attachments",
            f"A message can carry at most {settings.ATTACHMENT_MAX_PER_MESSAGE} images.",
        )
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        attachments = _attachments_for_new_message(conversation=conversation, attachment_ids=attachment_ids)
        message = Message.objects.create(
            conversation=conversation,
            role=Message.Role.CUSTOMER,
            text=text,
            client_id=client_id,
        )
        for position, attachment in enumerate(attachments):
            attachment.message = message
            attachment.position = position
            attachment.save(update_fields=["message", "position"])
        # The customer has moved on: a reply still in progress is superseded by this message's.
        replies.replies_in_progress_stop(conversation=conversation)
        reply = None
        decision = None
        if conversation.status == Conversation.Status.OPEN:
            # The customer asked for a person in so many words: a person answers instead of the AI.
            decision = handoff_rules.handoff_rules_consult(
                handoff_rules.HandoffMoment.CUSTOMER_MESSAGE, conversation, message
            )
        if decision is not None:
            handoff_rules.handoff_open(
                conversation=conversation,
                reason=decision.reason,
                trigger=decision.trigger,
                announce_to_customer=True,
            )
        elif conversation.status == Conversation.Status.OPEN:
            reply = Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                # The generator says otherwise when an FAQ entry or a quoted passage answers instead.
                source=Message.Source.MODEL,
                status=Message.Status.STREAMING,
                reply_to=message,
            )
            reply_id = reply.pk
            transaction.on_commit(lambda: replies.reply_generation_enqueue(reply_id=reply_id))
        conversation.last_message_at = message.created_at
        conversation.save(update_fields=["last_message_at", "updated_at"])
    return PostedMessage(message=message, reply=reply, created=True)


def _attachments_for_new_message(
    *, conversation: Conversation, attachment_ids: Sequence[uuid.UUID]
) -> list[Attachment]:
    """The message's attachments, in order: uploads not sent yet, or copies of ones already sent.

    A retry re-sends its images; an attachment belongs to one message, so a sent one is copied
    (sharing the stored file, which is content-addressed) rather than moved.
    """
    if not attachment_ids:
        return []
    unique_ids = list(dict.fromkeys(attachment_ids))
    found = {
        attachment.id: attachment
        for attachment in Attachment.objects.select_for_update().filter(
            conversation=conversation, id__in=unique_ids
        )
    }
    missing = [attachment_id for attachment_id in unique_ids if attachment_id not in found]
    if missing:
        raise ServiceError("unknown_attachment", "An attachment was not found in this conversation.")
    attachments = []
    for attachment_id in unique_ids:
        attachment = found[attachment_id]
        if attachment.message_id is not None:
            attachment.pk = None
            attachment.id = uuid.uuid4()
            attachment._state.adding = True
            attachment.message = None
            attachment.save()
        attachments.append(attachment)
    return attachments


def feedback_record(
    *, conversation: Conversation, message_id: int, rating: int, comment: str = ""
) -> Feedback:
    """Record (or change) the customer's thumbs up or down on one assistant reply."""
    if rating not in (Feedback.Rating.UP, Feedback.Rating.DOWN):
        raise ServiceError("invalid_rating", "A rating is 1 (helpful) or -1 (not helpful).")
    message = Message.objects.filter(
        conversation=conversation, pk=message_id, role=Message.Role.ASSISTANT
    ).first()
    if message is None:
        raise ServiceError("unknown_message", "There is no such assistant reply in this conversation.")
    with transaction.atomic():
        feedback, _ = Feedback.objects.update_or_create(
            message=message, defaults={"rating": rating, "comment": comment.strip()[:2000]}
        )
        if rating == Feedback.Rating.DOWN:
            _feedback_handoff_consider(conversation=conversation, feedback=feedback)
    return feedback


def _feedback_handoff_consider(*, conversation: Conversation, feedback: Feedback) -> None:
    """Hand off if a rule says this rating makes one too many (thumbs-down in a row)."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if conversation.status != Conversation.Status.OPEN:
        return
    decision = handoff_rules.handoff_rules_consult(
        handoff_rules.HandoffMoment.FEEDBACK, conversation, feedback
    )
    if decision is None:
        return
    replies.replies_in_progress_stop(conversation=conversation)
    handoff_rules.handoff_open(
        conversation=conversation, reason=decision.reason, trigger=decision.trigger, announce_to_customer=True
    )


def csat_record(*, conversation: Conversation, score: int, comment: str = "") -> SatisfactionRating:
    """Record (or change) the customer's 1–5 satisfaction with the conversation."""
    if not 1 <= score <= 5:
        raise ServiceError("invalid_score", "A satisfaction score is a whole number from 1 to 5.")
    rating, _ = SatisfactionRating.objects.update_or_create(
        conversation=conversation, defaults={"score": score, "comment": comment.strip()[:2000]}
    )
    return rating


def handoff_request(
    *,
    conversation: Conversation,
    reason: str = "",
    trigger: str = Ticket.Trigger.CUSTOMER_BUTTON,
    announce_to_customer: bool = False,
) -> Ticket:
    """Hand the conversation to a person: open a ticket (or return the open one) and stop AI replies.

    `trigger` (a Ticket.Trigger) is recorded on a new ticket. The customer's sockets hear
    handoff.started on commit only with `announce_to_customer` (the model's tool, say); a socket that
    asked itself is answered by its consumer with `handoff_rules.handoff_started_payload`.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        replies.replies_in_progress_stop(conversation=conversation)
        opened = handoff_rules.handoff_open(
            conversation=conversation,
            reason=reason,
            trigger=trigger,
            announce_to_customer=announce_to_customer,
        )
    return opened.ticket


def attachment_create(
    *,
    conversation: Conversation,
    source: BinaryIO,
    original_name: str = "",
    original_content_type: str = "",
) -> Attachment:
    """Normalise an uploaded image and keep only the result, stored once per content hash.

    Raises ImageRejected (with its own code) for anything that is not a safe, readable image, and
    UploadsBusy when too many uploads are being normalised at once.
    """
    original_size = getattr(source, "size", 0) or 0
    image = image_normalise(source)
    attachment = Attachment(
        conversation=conversation,
        content_type=image.content_type,
        size=len(image.data),
        sha256=image.sha256,
        width=image.width,
        height=image.height,
        original_name=original_name[:255],
        original_content_type=original_content_type[:64],
        original_size=original_size,
        original_width=image.original_width,
        original_height=image.original_height,
    )
    attachment.image.name = _store_once(attachment_path(attachment, ""), image.data)
    attachment.thumbnail.name = _store_once(attachment_thumbnail_path(attachment, ""), image.thumbnail)
    attachment.save()
    if not settings.INFERENCE_VISION:
        # Read now, not while a reply waits: OCR of a dense screenshot can take many seconds.
        attachment_id = attachment.pk
        transaction.on_commit(lambda: _attachment_ocr_enqueue(attachment_id=attachment_id))
    return attachment


def _store_once(path: str, data: bytes) -> str:
    """Save content-addressed bytes unless the same file is already stored."""
    if default_storage.exists(path):
        return path
    return default_storage.save(path, ContentFile(data))


def attachment_ocr_read(*, attachment_id: uuid.UUID) -> str:
    """Read the text in an uploaded image for text-only models, once; return its OCR status.

    The text is kept only when OCR succeeded ("" then means the image holds none); a Tesseract that
    is missing, fails or times out marks it failed, so it is never mistaken for an image without text.
    """
    attachment = Attachment.objects.filter(pk=attachment_id).first()
    if attachment is None or attachment.ocr_status != Attachment.OcrStatus.NOT_READ:
        return attachment.ocr_status if attachment else ""
    try:
        with attachment.image.open("rb") as image_file:
            text = ocr.image_text(image_file)
    except ocr.OcrFailed as error:
        logger.warning("OCR of attachment %s failed: %s", attachment.pk, error)
        # Copies made for a retried message share the image, and the outcome.
        Attachment.objects.filter(sha256=attachment.sha256, ocr_status=Attachment.OcrStatus.NOT_READ).update(
            ocr_status=Attachment.OcrStatus.FAILED
        )
        return Attachment.OcrStatus.FAILED
    Attachment.objects.filter(sha256=attachment.sha256, ocr_status=Attachment.OcrStatus.NOT_READ).update(
        ocr_status=Attachment.OcrStatus.READ, ocr_text=text
    )
    return Attachment.OcrStatus.READ


# The embedded default runs Celery tasks eagerly, in the caller: OCR there runs on these threads
# instead, so that an upload is answered at once (two at a time: Tesseract is CPU-bound).
_ocr_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ocr")


def _attachment_ocr_enqueue(*, attachment_id: uuid.UUID) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        _ocr_threads.submit(_attachment_ocr_read_in_thread, attachment_id)
    else:
        try:
            # By name: the task module imports this one, not the reverse.
            current_app.send_task("conversations.tasks.attachment_ocr_read", args=[str(attachment_id)])
        except Exception:
            # The upload is saved; with the broker away its OCR stays "not read yet", and a reply
            # waits OCR_WAIT_SECONDS for it at most, then tells the model so.
            logger.exception("OCR of attachment %s could not be queued", attachment_id)


def _attachment_ocr_read_in_thread(attachment_id: uuid.UUID) -> None:
    try:
        attachment_ocr_read(attachment_id=attachment_id)
    except Exception:
        logger.exception("OCR of attachment %s crashed", attachment_id)
    finally:
        close_old_connections()


# --- status changes by staff (admin actions; later the agent console) ---------------------------


def _conversation_notice(*, conversation: Conversation, english: str, chinese: str) -> Message:
    """A system message in the conversation's language; the customer sees it in the history."""
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.SYSTEM,
        source=Message.Source.SYSTEM,
        text=chinese if conversation.locale == Conversation.Locale.ZH_HANS else english,
    )


def _conversation_hand_back_if_done(*, conversation: Conversation) -> Message | None:
    """A handed-off conversation with no unresolved ticket left goes back to the assistant.

    Returns the notice saying so, or None when it stays as it is.
    """
    if conversation.status != Conversation.Status.HANDED_OFF:
        return None
    if conversation.tickets.exclude(status=Ticket.Status.RESOLVED).exists():
        return None
    conversation.status = Conversation.Status.OPEN
    conversation.save(update_fields=["status", "updated_at"])
    return _conversation_notice(
        conversation=conversation,
        english="The person helping you has finished; the assistant answers again.",
        chinese="人工客服已处理完毕，智能助手将继续为您服务。",
    )


def _ticket_resolved_save(ticket: Ticket, *, at: datetime) -> None:
    """Mark the ticket resolved with its resolution time, in business hours as the agents' timers count."""
    ticket.status = Ticket.Status.RESOLVED
    ticket.resolved_at = at
    ticket.resolution_seconds = handoff_rules.team_schedule_get().business_seconds_between(
        ticket.created_at, at
    )
    ticket.save(update_fields=["status", "resolved_at", "resolution_seconds", "updated_at"])


def _queue_changed_notify_on_commit() -> None:
    """The agents' queues read the waiting list again, and auto-assignment may give out a ticket."""
    handoff_rules.group_send_on_commit(events.AGENTS_QUEUE_GROUP, events.queue_changed_event())
    handoff_rules.auto_assign_request_on_commit()


def ticket_resolve(*, ticket: Ticket, announce: bool = True) -> bool:
    """Resolve a ticket; once none is left unresolved, the assistant answers the conversation again.

    The resolution time is recorded in business hours. With `announce`, on commit the agents' queues
    hear of it and the customer gets conversation.resolved (and the CSAT prompt); the console, which
    says more than this itself, resolves with `announce=False`. Returns whether anything changed. Resolving a
    resolved ticket still hands back a conversation left handed off without an open ticket (as an
    edit in admin once could).
    """
    with transaction.atomic():
        # The conversation first, in the same order as handoff_request, so the two cannot deadlock.
        conversation = Conversation.objects.select_for_update().get(pk=ticket.conversation_id)
        ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
        resolved_here = ticket.status != Ticket.Status.RESOLVED
        if resolved_here:
            _ticket_resolved_save(ticket, at=timezone.now())
        notice = _conversation_hand_back_if_done(conversation=conversation)
        if resolved_here and announce:
            handoff_rules.group_send_on_commit(events.AGENTS_QUEUE_GROUP, events.queue_changed_event())
            handoff_rules.group_send_on_commit(
                events.conversation_group(conversation.pk),
                events.conversation_resolved_event(conversation_id=conversation.pk, notice=notice),
            )
        if resolved_here:
            # The agent has room again: auto-assignment may give them (or another) a waiting ticket.
            handoff_rules.auto_assign_request_on_commit()
    return resolved_here or notice is not None


def conversation_close(*, conversation: Conversation) -> bool:
    """Close a conversation and resolve its open tickets; the assistant no longer answers it.

    Each ticket resolved here gets its resolution time (business hours); the agents' queues hear of
    it on commit. Returns whether it was open (or handed off) before.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if conversation.status == Conversation.Status.CLOSED:
            return False
        now = timezone.now()
        unresolved = list(conversation.tickets.select_for_update().exclude(status=Ticket.Status.RESOLVED))
        for ticket in unresolved:
            _ticket_resolved_save(ticket, at=now)
        conversation.status = Conversation.Status.CLOSED
        conversation.save(update_fields=["status", "updated_at"])
        notice = _conversation_notice(
            conversation=conversation,
            english="This conversation was closed.",
            chinese="本次会话已结束。",
        )
        handoff_rules.group_send_on_commit(
            events.conversation_group(conversation.pk),
            events.conversation_closed_event(conversation_id=conversation.pk, notice=notice),
        )
        if unresolved:
            _queue_changed_notify_on_commit()
    return True


def conversation_reopen(*, conversation: Conversation) -> bool:
    """Reopen a closed conversation: the assistant answers it again. Returns whether it was closed."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if conversation.status != Conversation.Status.CLOSED:
            return False
        conversation.status = Conversation.Status.OPEN
        conversation.save(update_fields=["status", "updated_at"])
        _conversation_notice(
            conversation=conversation,
            english="This conversation was reopened; the assistant answers again.",
            chinese="本次会话已重新开启，智能助手将继续为您服务。",
        )
    return True
