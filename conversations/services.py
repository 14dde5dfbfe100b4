"""Writes to conversations: every change goes through a function here."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from conversations import events
from conversations.models import (
    Attachment,
    Conversation,
    Feedback,
    Message,
    SatisfactionRating,
    Ticket,
    attachment_path,
    attachment_thumbnail_path,
)
from conversations.uploads import image_normalise

logger = logging.getLogger(__name__)

MESSAGE_MAX_CHARS = 4000


class ServiceError(Exception):
    """A request the service refuses, with a code for the client and a readable detail."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def token_hash(token: str) -> str:
    """The stored form of a customer token."""
    return hashlib.sha256(token.encode()).hexdigest()


def conversation_create(
    *,
    locale: str,
    metadata: dict[str, Any] | None = None,
    channel: str = Conversation.Channel.WIDGET,
    customer_ip: str | None = None,
    customer_user_agent: str = "",
) -> tuple[Conversation, str]:
    """Open a conversation and return it with the customer's secret token (shown once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    conversation = Conversation.objects.create(
        token_hash=token_hash(token),
        locale=locale,
        metadata=metadata or {},
        channel=channel,
        customer_ip=customer_ip,
        customer_user_agent=customer_user_agent[:512],
    )
    return conversation, token


@dataclass(frozen=True)
class PostedMessage:
    message: Message
    reply: Message | None
    created: bool


def message_post(
    *,
    conversation: Conversation,
    text: str,
    client_id: uuid.UUID | None = None,
    attachment_ids: Sequence[uuid.UUID] = (),
) -> PostedMessage:
    """Save a customer message and, unless a person has taken over, queue the assistant's reply.

    A repeated `client_id` returns the message saved the first time, and queues nothing.
    """
    text = text.strip()
    if client_id is not None:
        existing = _message_by_client_id(conversation=conversation, client_id=client_id)
        if existing is not None:
            return existing
    if not text and not attachment_ids:
        raise ServiceError("empty_message", "A message needs text or at least one image.")
    if len(text) > MESSAGE_MAX_CHARS:
        raise ServiceError("message_too_long", f"A message can be at most {MESSAGE_MAX_CHARS} characters.")
    if len(attachment_ids) > settings.ATTACHMENT_MAX_PER_MESSAGE:
        raise ServiceError(
            "too_many_attachments",
            f"A message can carry at most {settings.ATTACHMENT_MAX_PER_MESSAGE} images.",
        )
    try:
        with transaction.atomic():
            conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
            attachments = _attachments_for_new_message(
                conversation=conversation, attachment_ids=attachment_ids
            )
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
            _replies_in_progress_stop(conversation=conversation)
            reply = None
            if conversation.status == Conversation.Status.OPEN:
                reply = Message.objects.create(
                    conversation=conversation,
                    role=Message.Role.ASSISTANT,
                    status=Message.Status.STREAMING,
                    reply_to=message,
                )
                reply_id = reply.pk
                transaction.on_commit(lambda: _reply_generation_enqueue(reply_id=reply_id))
            conversation.last_message_at = message.created_at
            conversation.save(update_fields=["last_message_at", "updated_at"])
    except IntegrityError:
        # Two sockets raced with the same client_id: the other one saved it first.
        if client_id is not None:
            existing = _message_by_client_id(conversation=conversation, client_id=client_id)
            if existing is not None:
                return existing
        raise
    return PostedMessage(message=message, reply=reply, created=True)


def _message_by_client_id(*, conversation: Conversation, client_id: uuid.UUID) -> PostedMessage | None:
    message = Message.objects.filter(conversation=conversation, client_id=client_id).first()
    if message is None:
        return None
    reply = Message.objects.filter(reply_to=message, role=Message.Role.ASSISTANT).order_by("-id").first()
    return PostedMessage(message=message, reply=reply, created=False)


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


def _reply_generation_enqueue(*, reply_id: int) -> None:
    """Start generating a reply: in this process for the embedded default, else on a Celery worker."""
    if settings.REPLY_GENERATION_IN_PROCESS:
        from inference.generation import reply_generate_in_process

        reply_generate_in_process(reply_id=reply_id)
    else:
        from inference.tasks import generate_reply

        generate_reply.delay(reply_id)


def _group_send(conversation_id: uuid.UUID, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(events.conversation_group(conversation_id), event)


@dataclass(frozen=True)
class CancelOutcome:
    reply: Message
    # True when the reply never started and was cancelled here; False when the worker was told to stop.
    cancelled_here: bool


def reply_cancel(*, conversation: Conversation, reply_id: int) -> CancelOutcome:
    """Stop a reply: cancel it outright if no worker took it yet, else flag it for its worker."""
    reply = Message.objects.filter(
        conversation=conversation, pk=reply_id, role=Message.Role.ASSISTANT
    ).first()
    if reply is None:
        raise ServiceError("unknown_reply", "There is no such reply in this conversation.")
    if reply.status != Message.Status.STREAMING:
        return CancelOutcome(reply=reply, cancelled_here=True)
    now = timezone.now()
    cancelled_before_start = Message.objects.filter(
        pk=reply.pk, status=Message.Status.STREAMING, generation_started_at__isnull=True
    ).update(status=Message.Status.CANCELLED, cancel_requested_at=now, completed_at=now)
    if cancelled_before_start:
        reply.refresh_from_db()
        return CancelOutcome(reply=reply, cancelled_here=True)
    Message.objects.filter(pk=reply.pk).update(cancel_requested_at=now)
    # The generator looks for this flag every few hundred milliseconds (the database flag, read with
    # its heartbeat, backs it up); it then closes the stream and sends reply.done itself.
    cache.set(events.reply_cancel_key(reply.pk), True, timeout=int(settings.INFERENCE_TOTAL_TIMEOUT) + 300)
    reply.refresh_from_db()
    return CancelOutcome(reply=reply, cancelled_here=reply.status != Message.Status.STREAMING)


def _replies_in_progress_stop(*, conversation: Conversation) -> None:
    """Stop the conversation's replies still streaming, telling every socket (a new message or a
    person supersedes them, and a conversation streams one reply at a time)."""
    for reply_id in Message.objects.filter(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING
    ).values_list("pk", flat=True):
        outcome = reply_cancel(conversation=conversation, reply_id=reply_id)
        if outcome.cancelled_here:
            event = events.reply_done_event(outcome.reply)
            transaction.on_commit(lambda event=event: _group_send(conversation.pk, event))  # type: ignore[misc]


def reply_claim(*, reply_id: int) -> bool:
    """Claim a queued reply for generation; False if another delivery has it or it is no longer wanted."""
    now = timezone.now()
    return bool(
        Message.objects.filter(
            pk=reply_id, status=Message.Status.STREAMING, generation_started_at__isnull=True
        ).update(generation_started_at=now, heartbeat_at=now)
    )


class HeartbeatVerdict:
    CONTINUE = "continue"
    CANCEL = "cancel"
    ABANDON = "abandon"


def reply_heartbeat(*, reply_id: int) -> str:
    """Record that the worker is still generating, and say whether it should go on.

    CANCEL when the customer asked to stop (a backstop for a lost channel-layer message); ABANDON when
    the reply was finished elsewhere meanwhile (failed by the sweeper).
    """
    updated = Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
        heartbeat_at=timezone.now()
    )
    if not updated:
        return HeartbeatVerdict.ABANDON
    if Message.objects.filter(pk=reply_id, cancel_requested_at__isnull=False).exists():
        return HeartbeatVerdict.CANCEL
    return HeartbeatVerdict.CONTINUE


def reply_finish(
    *,
    reply_id: int,
    text: str,
    status: str,
    model: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    first_token_latency_ms: int | None = None,
    total_latency_ms: int | None = None,
    citations: list[dict[str, Any]] | None = None,
    error_code: str = "",
    error_detail: str = "",
) -> Message | None:
    """Save a reply's final text and outcome; None if it had already been finished elsewhere."""
    finished = Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
        text=text,
        status=status,
        model=model[:200],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        first_token_latency_ms=first_token_latency_ms,
        total_latency_ms=total_latency_ms,
        citations=citations or [],
        error_code=error_code,
        error_detail=error_detail,
        completed_at=timezone.now(),
    )
    if not finished:
        return None
    return Message.objects.get(pk=reply_id)


def replies_fail_stalled(*, now: datetime | None = None, all_streaming: bool = False) -> list[Message]:
    """Fail replies whose worker died (no heartbeat) or that no worker picked up, and tell the customers.

    With `all_streaming`, every reply still streaming is failed: used when the embedded server starts,
    since a reply cannot survive the process that generated it.
    """
    now = now or timezone.now()
    stalled = Q(status=Message.Status.STREAMING)
    if not all_streaming:
        stalled &= Q(
            generation_started_at__isnull=False,
            heartbeat_at__lt=now - timedelta(seconds=settings.REPLY_STALLED_AFTER_SECONDS),
        ) | Q(
            generation_started_at__isnull=True,
            created_at__lt=now - timedelta(seconds=settings.REPLY_QUEUE_TIMEOUT_SECONDS),
        )
    failed = []
    for reply in Message.objects.filter(stalled).only("id", "generation_started_at"):
        code = "worker_lost" if reply.generation_started_at else "inference_unavailable"
        saved = reply_fail(reply_id=reply.pk, code=code)
        if saved is not None:
            logger.warning("Reply %s failed by the sweeper: %s", reply.pk, code)
            failed.append(saved)
    return failed


def reply_fail(*, reply_id: int, code: str, detail: str = "") -> Message | None:
    """Fail a reply still streaming, keeping the text generated so far, and tell the customer."""
    from conversations.selectors import reply_progress_get
    from inference.errors import customer_error_detail

    reply = Message.objects.select_related("conversation").get(pk=reply_id)
    detail = detail or customer_error_detail(code, reply.conversation.locale)
    partial = reply_progress_get(reply_id=reply.pk)
    saved = reply_finish(
        reply_id=reply.pk,
        text=partial["text"] if partial else reply.text,
        status=Message.Status.FAILED,
        error_code=code,
        error_detail=detail,
    )
    if saved is not None:
        _group_send(reply.conversation_id, events.reply_error_event(saved, code=code, detail=detail))
    return saved


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
    feedback, _ = Feedback.objects.update_or_create(
        message=message, defaults={"rating": rating, "comment": comment.strip()[:2000]}
    )
    return feedback


def csat_record(*, conversation: Conversation, score: int, comment: str = "") -> SatisfactionRating:
    """Record (or change) the customer's 1–5 satisfaction with the conversation."""
    if not 1 <= score <= 5:
        raise ServiceError("invalid_score", "A satisfaction score is a whole number from 1 to 5.")
    rating, _ = SatisfactionRating.objects.update_or_create(
        conversation=conversation, defaults={"score": score, "comment": comment.strip()[:2000]}
    )
    return rating


def handoff_request(*, conversation: Conversation, reason: str = "") -> Ticket:
    """Hand the conversation to a person: open a ticket (or return the open one) and stop AI replies."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        _replies_in_progress_stop(conversation=conversation)
        ticket = conversation.tickets.exclude(status=Ticket.Status.RESOLVED).first()
        if ticket is None:
            ticket = Ticket.objects.create(conversation=conversation, reason=reason.strip()[:2000])
            Message.objects.create(
                conversation=conversation,
                role=Message.Role.SYSTEM,
                text=(
                    "已为您转接人工客服，请稍候。"
                    if conversation.locale == Conversation.Locale.ZH_HANS
                    else "A person will join this conversation shortly."
                ),
            )
        if conversation.status != Conversation.Status.HANDED_OFF:
            conversation.status = Conversation.Status.HANDED_OFF
            conversation.save(update_fields=["status", "updated_at"])
    return ticket


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
    return attachment


def _store_once(path: str, data: bytes) -> str:
    """Save content-addressed bytes unless the same file is already stored."""
    if default_storage.exists(path):
        return path
    return default_storage.save(path, ContentFile(data))


def attachment_ocr_text(*, attachment: Attachment) -> str:
    """The text OCR reads in an attachment, read once and kept; "" when there is none or no Tesseract."""
    from conversations.ocr import image_text

    if attachment.ocr_text is not None:
        return attachment.ocr_text
    with attachment.image.open("rb") as image_file:
        text = image_text(image_file)
    if text is None:
        return ""  # Tesseract is not installed: try again once it is
    Attachment.objects.filter(pk=attachment.pk).update(ocr_text=text)
    attachment.ocr_text = text
    return text


# --- status changes by staff (admin actions; later the agent console) ---------------------------


def _conversation_notice(*, conversation: Conversation, english: str, chinese: str) -> Message:
    """A system message in the conversation's language; the customer sees it in the history."""
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.SYSTEM,
        text=chinese if conversation.locale == Conversation.Locale.ZH_HANS else english,
    )


def _conversation_hand_back_if_done(*, conversation: Conversation) -> bool:
    """A handed-off conversation with no unresolved ticket left goes back to the assistant."""
    if conversation.status != Conversation.Status.HANDED_OFF:
        return False
    if conversation.tickets.exclude(status=Ticket.Status.RESOLVED).exists():
        return False
    conversation.status = Conversation.Status.OPEN
    conversation.save(update_fields=["status", "updated_at"])
    _conversation_notice(
        conversation=conversation,
        english="The person helping you has finished; the assistant answers again.",
        chinese="人工客服已处理完毕，智能助手将继续为您服务。",
    )
    return True


def ticket_resolve(*, ticket: Ticket) -> bool:
    """Resolve a ticket; once none is left unresolved, the assistant answers the conversation again.

    Returns whether anything changed. Resolving a resolved ticket still hands back a conversation
    left handed off without an open ticket (as an edit in admin once could).
    """
    with transaction.atomic():
        # The conversation first, in the same order as handoff_request, so the two cannot deadlock.
        conversation = Conversation.objects.select_for_update().get(pk=ticket.conversation_id)
        ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
        resolved_here = ticket.status != Ticket.Status.RESOLVED
        if resolved_here:
            ticket.status = Ticket.Status.RESOLVED
            ticket.resolved_at = timezone.now()
            ticket.save(update_fields=["status", "resolved_at", "updated_at"])
        handed_back = _conversation_hand_back_if_done(conversation=conversation)
    return resolved_here or handed_back


def conversation_close(*, conversation: Conversation) -> bool:
    """Close a conversation and resolve its open tickets; the assistant no longer answers it.

    Returns whether it was open (or handed off) before.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if conversation.status == Conversation.Status.CLOSED:
            return False
        conversation.tickets.exclude(status=Ticket.Status.RESOLVED).update(
            status=Ticket.Status.RESOLVED, resolved_at=timezone.now(), updated_at=timezone.now()
        )
        conversation.status = Conversation.Status.CLOSED
        conversation.save(update_fields=["status", "updated_at"])
        _conversation_notice(
            conversation=conversation,
            english="This conversation was closed.",
            chinese="本次会话已结束。",
        )
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
