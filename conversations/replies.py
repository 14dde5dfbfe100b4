"""The reply lifecycle: an assistant reply from queued to its saved outcome, and the events that say so.

Data flows one way: a customer action (`services.message_post`) queues a reply here; the generator
claims it, heartbeats from the claim on, streams, and finishes it here; the sweeper fails the ones
whose worker died; each outcome is saved to the database first and then sent to the sockets.

Nothing here imports `inference`: the inference app builds on conversations, not the reverse, so it
registers how a queued reply gets generated (`reply_generator_register`, from its AppConfig.ready).
Cache and channel-layer calls are best-effort: with Redis gone a reply is still saved, whole.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from conversations import events, handoff_rules, progress, selectors
from conversations.errors import ServiceError, customer_error_detail
from conversations.models import Conversation, Message

logger = logging.getLogger(__name__)

ReplyGenerator = Callable[[int], None]
_generator: ReplyGenerator | None = None


def reply_generator_register(generator: ReplyGenerator) -> None:
    """Set how a queued reply gets generated (the inference app's, registered when it is ready)."""
    global _generator
    _generator = generator


def reply_generation_enqueue(*, reply_id: int) -> None:
    """Hand a queued reply to the registered generator (called on commit of the message that asked)."""
    if _generator is None:
        # The sweeper fails it with inference_unavailable after REPLY_QUEUE_TIMEOUT_SECONDS.
        logger.error(
            "Reply %s queued but no reply generator is registered (is 'inference' installed?)", reply_id
        )
        return
    try:
        _generator(reply_id)
    except Exception:
        # The message and its reply are saved; the customer must not lose the socket because the
        # broker is away. The sweeper fails the reply after REPLY_QUEUE_TIMEOUT_SECONDS and says so.
        logger.exception("Reply %s could not be queued for generation", reply_id)


def reply_event_send(conversation_id: uuid.UUID, event: dict[str, Any]) -> bool:
    """Send an event to the conversation's sockets; best-effort: False (logged) if the layer failed."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(events.conversation_group(conversation_id), event)
    except Exception as error:
        logger.warning("Sending %s to conversation %s failed: %s", event["type"], conversation_id, error)
        return False
    return True


@dataclass(frozen=True)
class CancelOutcome:
    reply: Message
    # True when the reply had ended or never started and was cancelled here (then announced to the
    # conversation's sockets); False when its worker was told to stop and will send the final frame.
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
        reply.conversation = conversation
        reply_finished_log(reply)
        # No worker will send its final frame: every socket of the conversation is told here.
        event = events.reply_done_event(reply)
        transaction.on_commit(lambda: reply_event_send(conversation.pk, event))
        return CancelOutcome(reply=reply, cancelled_here=True)
    Message.objects.filter(pk=reply.pk).update(cancel_requested_at=now)
    # The generator looks for the cache's flag every few hundred milliseconds; the database flag,
    # read with its heartbeat, backs it up (and is all there is while the cache is down). The
    # generator then closes the stream and sends reply.done itself.
    progress.reply_cancel_flag_set(reply.pk)
    # If it ended meanwhile, whoever ended it sent its final frame: nothing more to say here.
    return CancelOutcome(reply=reply, cancelled_here=False)


def replies_in_progress_stop(*, conversation: Conversation) -> None:
    """Stop the conversation's replies still streaming, telling every socket (a new message or a
    person supersedes them, and a conversation streams one reply at a time)."""
    for reply_id in Message.objects.filter(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING
    ).values_list("pk", flat=True):
        # A reply no worker took is cancelled and announced to every socket by reply_cancel; one a
        # worker streams is told to stop, and its worker sends the final frame.
        reply_cancel(conversation=conversation, reply_id=reply_id)


def reply_claim(*, reply_id: int) -> bool:
    """Claim a queued reply for generation; False if another delivery has it or it is no longer wanted.

    The claim is the first heartbeat: from here on the generator keeps `heartbeat_at` fresh, through
    prompt building as much as through streaming.
    """
    now = timezone.now()
    return bool(
        Message.objects.filter(
            pk=reply_id, status=Message.Status.STREAMING, generation_started_at__isnull=True
        ).update(generation_started_at=now, heartbeat_at=now)
    )


def reply_claim_for_generation(*, reply_id: int) -> Message | None:
    """Claim a queued reply (`reply_claim`) and read it with its conversation, as generating it and
    building its prompt need it: one call, so one hop to the database thread; None if not claimed."""
    if not reply_claim(reply_id=reply_id):
        return None
    return selectors.reply_get_for_prompt(reply_id=reply_id)


class HeartbeatVerdict(enum.Enum):
    """What a heartbeat tells the generator to do next."""

    CONTINUE = "continue"
    # The customer asked to stop (the database's flag: a backstop for a lost cache flag).
    CANCEL = "cancel"
    # The reply was finished elsewhere meanwhile (failed by the sweeper, cancelled before start).
    ABANDON = "abandon"


def reply_heartbeat(*, reply_id: int) -> HeartbeatVerdict:
    """Record that the worker is still generating, and say whether it should go on."""
    # One statement in the common case; only a reply that is not plainly going on is read again.
    if Message.objects.filter(
        pk=reply_id, status=Message.Status.STREAMING, cancel_requested_at__isnull=True
    ).update(heartbeat_at=timezone.now()):
        return HeartbeatVerdict.CONTINUE
    streaming = Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).exists()
    return HeartbeatVerdict.CANCEL if streaming else HeartbeatVerdict.ABANDON


class ReplyOutcome(enum.Enum):
    """How a reply ended, as saved in its status."""

    COMPLETE = Message.Status.COMPLETE
    CANCELLED = Message.Status.CANCELLED
    FAILED = Message.Status.FAILED


def reply_finish(
    *,
    reply_id: int,
    outcome: ReplyOutcome,
    text: str,
    model: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    completion_tokens_counted: bool = False,
    first_token_latency_ms: int | None = None,
    total_latency_ms: int | None = None,
    truncated: bool = False,
    relay_failures: int = 0,
    error_code: str = "",
    error_detail: str = "",
    citations: list[dict[str, Any]] | None = None,
    source: str | None = None,
    is_unanswered: bool = False,
    consult_handoff_rules: bool = True,
) -> Message | None:
    """Save a reply's final text and outcome; None if it had already been finished elsewhere.

    The conditional update is what makes "finished once" hold: a generator that lost the race to
    the sweeper, or a redelivered job, saves nothing and sends nothing. `citations` and `source`
    left out (None) keep what the reply has (a sweeper's failure knows neither). Without
    `consult_handoff_rules` the reply-finished rules are not asked: the reply hands off by itself
    (the model called its handoff tool), with its own trigger and reason.
    """
    grounding: dict[str, Any] = {"is_unanswered": is_unanswered}
    if citations is not None:
        grounding["citations"] = citations
    if source is not None:
        grounding["source"] = source
    finished = Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
        **grounding,
        text=text,
        status=outcome.value,
        model=model[:200],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        completion_tokens_counted=completion_tokens_counted,
        first_token_latency_ms=first_token_latency_ms,
        total_latency_ms=total_latency_ms,
        truncated=truncated,
        relay_failures=relay_failures,
        error_code=error_code,
        error_detail=error_detail,
        completed_at=timezone.now(),
    )
    if not finished:
        return None
    # With its conversation (one join): the log line's client address, and the handoff rules read it.
    saved = Message.objects.select_related("conversation").prefetch_related("attachments").get(pk=reply_id)
    reply_finished_log(saved)
    # The agents app's rules (the knowledge base had nothing N times in a row) may hand off now.
    if consult_handoff_rules:
        handoff_rules.reply_finished_handoff(reply=saved)
    return saved


def reply_finished_log(reply: Message) -> None:
    """The reply's one `reply.finished` line, as it was saved: who asked (the conversation, its client
    address), the model, its times and tokens, and how it ended. Never its text, nor the blocked term.

    Written where the outcome is saved, by whoever saved it (the generator, the sweeper, a cancel), so
    every reply has exactly one; its request id is the context's (the asking message's, cs_platform/logs.py).
    """
    outcome = "blocked" if reply.error_code == "blocked" else str(reply.status)
    logger.info(
        "reply.finished",
        extra={
            "conversation_id": str(reply.conversation_id),
            "reply_id": reply.pk,
            "client_ip": reply.conversation.customer_ip,
            "model": reply.model,
            "source": str(reply.source),
            "ttft_ms": reply.first_token_latency_ms,
            "total_ms": reply.total_latency_ms,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "completion_tokens_counted": reply.completion_tokens_counted,
            "truncated": reply.truncated,
            "outcome": outcome,
            "error_code": reply.error_code or None,
        },
    )


def reply_fail(*, reply_id: int, code: str, detail: str = "") -> Message | None:
    """Fail a reply still streaming, keeping the text generated so far, and tell the customer."""
    reply = Message.objects.select_related("conversation").get(pk=reply_id)
    detail = detail or customer_error_detail(code, reply.conversation.locale)
    so_far = selectors.reply_text_get(reply_id=reply.pk)
    saved = reply_finish(
        reply_id=reply.pk,
        outcome=ReplyOutcome.FAILED,
        text=so_far.text if so_far else reply.text,
        error_code=code,
        error_detail=detail,
    )
    if saved is not None:
        progress.reply_progress_clear([reply.pk])
        reply_event_send(reply.conversation_id, events.reply_error_event(saved, code=code, detail=detail))
    return saved


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


__all__ = [
    "CancelOutcome",
    "HeartbeatVerdict",
    "ReplyOutcome",
    "replies_fail_stalled",
    "replies_in_progress_stop",
    "reply_cancel",
    "reply_claim",
    "reply_claim_for_generation",
    "reply_event_send",
    "reply_fail",
    "reply_finish",
    "reply_finished_log",
    "reply_generation_enqueue",
    "reply_generator_register",
    "reply_heartbeat",
]
