"""Generate one assistant reply: stream it from the inference server to the conversation's sockets.

One event loop runs the whole reply: a producer task reads the server's stream, and the loop here
coalesces tokens into numbered deltas (the first at once, then about every 30 ms), keeps the
text-so-far for sockets that join mid-reply, looks for a cancel every 250 ms, and saves the outcome
once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import SyncToAsync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from conversations import events
from conversations.models import Message
from conversations.services import HeartbeatVerdict, reply_claim, reply_finish, reply_heartbeat
from inference.client import ChatRequest, InferenceClient, StreamEvent
from inference.errors import InferenceError, InferenceTimeout, customer_error_detail
from inference.prompts import prompt_build

logger = logging.getLogger(__name__)

# How often a generation looks for the customer's request to stop.
CANCEL_CHECK_SECONDS = 0.25

# Cache calls off the thread that serialises database work (thread_sensitive=True): they are
# frequent (a write per delta, a read every CANCEL_CHECK_SECONDS) and the cache is thread-safe.
_cache_get = sync_to_async(cache.get, thread_sensitive=False)
_cache_set = sync_to_async(cache.set, thread_sensitive=False)
_cache_delete_many = sync_to_async(cache.delete_many, thread_sensitive=False)

# Strong references to in-process generations, so the event loop does not drop them.
_in_process_tasks: set[asyncio.Task[None]] = set()


def inference_client() -> InferenceClient:
    """A client for the configured inference servers."""
    return InferenceClient(
        base_urls=settings.INFERENCE_BASE_URLS,
        model=settings.INFERENCE_MODEL,
        api_key=settings.INFERENCE_API_KEY,
        connect_timeout=settings.INFERENCE_CONNECT_TIMEOUT,
    )


def reply_generate_in_process(*, reply_id: int) -> None:
    """Generate a reply on the server's own event loop (the embedded default), without waiting for it.

    Called from sync code run by `sync_to_async` (a consumer's service call): the reply then runs on
    the loop that called it, where the in-memory channel layer lives. A caller with no such loop (a
    management command) waits for the reply instead.
    """
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    loop_pid = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None)
    if loop is None or loop_pid != os.getpid() or loop.is_closed():
        asyncio.run(reply_generate(reply_id=reply_id))
        return

    def start() -> None:
        task = loop.create_task(reply_generate(reply_id=reply_id))
        _in_process_tasks.add(task)
        task.add_done_callback(_in_process_tasks.discard)
        task.add_done_callback(lambda finished: _fail_if_crashed(finished, reply_id))

    # A fresh context: the caller's holds asgiref's executor state, which the new task must not share.
    loop.call_soon_threadsafe(start, context=contextvars.Context())


def _fail_if_crashed(task: asyncio.Task[None], reply_id: int) -> None:
    """An in-process generation that crashed before it could save its reply fails the reply instead."""
    if task.cancelled() or task.exception() is None:
        return
    logger.error("Reply %s generation crashed", reply_id, exc_info=task.exception())
    threading.Thread(target=_fail_reply_now, args=(reply_id,), daemon=True).start()


def _fail_reply_now(reply_id: int) -> None:
    from django.db import close_old_connections

    from conversations.services import reply_fail

    try:
        reply_fail(reply_id=reply_id, code="inference_error")
    finally:
        close_old_connections()


@dataclass
class _Outcome:
    status: str
    error: InferenceError | None = None


@dataclass
class ReplyGeneration:
    """The state of one reply being generated."""

    reply_id: int
    conversation_id: Any
    locale: str
    created_at: Any
    layer: BaseChannelLayer
    client: InferenceClient
    text: str = ""
    pending: str = ""
    seq: int = -1
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Content chunks received: the completion's token count when the server reports no usage
    # (llama.cpp and vLLM stream one token per chunk).
    chunks_received: int = 0
    first_token_at: Any = None
    last_flush: float = 0.0
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)

    @property
    def group(self) -> str:
        return events.conversation_group(self.conversation_id)

    async def run(self) -> None:
        """Generate, stream and save the reply; every way out saves it and tells the customer."""
        producer: asyncio.Task[None] | None = None
        try:
            request = await database_sync_to_async(prompt_build)(reply_id=self.reply_id)
            producer = asyncio.create_task(self._produce(request))
            outcome = await self._consume()
        except InferenceError as error:
            outcome = _Outcome(Message.Status.FAILED, error)
        except Exception:
            logger.exception("Reply %s failed unexpectedly", self.reply_id)
            outcome = _Outcome(
                Message.Status.FAILED, InferenceError("An unexpected error stopped the reply.")
            )
        finally:
            if producer is not None:
                # Cancelling the producer closes the HTTP stream, so the server stops generating too.
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
        if outcome.status == "abandoned":
            return
        await self._flush()
        await self._save(outcome)

    async def _produce(self, request: ChatRequest) -> None:
        try:
            async for event in self.client.stream_chat(request):
                await self.queue.put(("event", event))
            await self.queue.put(("end", None))
        except InferenceError as error:
            await self.queue.put(("error", error))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.exception("Reading the inference stream failed")
            await self.queue.put(("error", InferenceError(f"Reading the stream failed: {error}")))

    async def _cancel_requested(self) -> bool:
        """Whether the customer asked to stop: a flag in the cache, set by `reply_cancel`."""
        return bool(await _cache_get(events.reply_cancel_key(self.reply_id)))

    async def _consume(self) -> _Outcome:
        started = time.monotonic()
        total_deadline = started + settings.INFERENCE_TOTAL_TIMEOUT
        token_deadline = started + settings.INFERENCE_FIRST_TOKEN_TIMEOUT
        next_heartbeat = started + settings.REPLY_HEARTBEAT_SECONDS
        next_cancel_check = started + CANCEL_CHECK_SECONDS
        while True:
            flush_at = self.last_flush + settings.INFERENCE_COALESCE_SECONDS if self.pending else math.inf
            wake_at = min(total_deadline, token_deadline, next_heartbeat, next_cancel_check, flush_at)
            try:
                kind, value = await asyncio.wait_for(
                    self.queue.get(), timeout=max(0.0, wake_at - time.monotonic())
                )
            except TimeoutError:
                kind, value = "tick", None
            now = time.monotonic()
            if kind == "event":
                if self._apply(value):
                    token_deadline = now + settings.INFERENCE_TOKEN_TIMEOUT
            elif kind == "end":
                return _Outcome(Message.Status.COMPLETE)
            elif kind == "error":
                raise value
            if self.pending and (
                self.seq < 0 or now >= self.last_flush + settings.INFERENCE_COALESCE_SECONDS
            ):
                await self._flush()
            if now >= next_cancel_check:
                if await self._cancel_requested():
                    return _Outcome(Message.Status.CANCELLED)
                next_cancel_check = now + CANCEL_CHECK_SECONDS
            if now >= next_heartbeat:
                # The database flag backs up the cache's, should the cache have lost it.
                verdict = await database_sync_to_async(reply_heartbeat)(reply_id=self.reply_id)
                if verdict == HeartbeatVerdict.ABANDON:
                    logger.warning("Reply %s was finished elsewhere; stopping", self.reply_id)
                    return _Outcome("abandoned")
                if verdict == HeartbeatVerdict.CANCEL:
                    return _Outcome(Message.Status.CANCELLED)
                next_heartbeat = now + settings.REPLY_HEARTBEAT_SECONDS
            if now >= total_deadline:
                raise InferenceTimeout("The reply took longer than INFERENCE_TOTAL_TIMEOUT.")
            if now >= token_deadline:
                which = "the first token" if self.first_token_at is None else "the next token"
                raise InferenceTimeout(f"The server did not send {which} in time.")

    def _apply(self, event: StreamEvent) -> bool:
        """Take in one stream event; True if it carried text."""
        self.model = event.model or self.model
        if event.prompt_tokens is not None:
            self.prompt_tokens = event.prompt_tokens
        if event.completion_tokens is not None:
            self.completion_tokens = event.completion_tokens
        if not event.text:
            return False
        if self.first_token_at is None:
            self.first_token_at = timezone.now()
        self.chunks_received += 1
        self.pending += event.text
        return True

    async def _flush(self) -> None:
        """Send the text gathered since the last delta as the next numbered delta."""
        if not self.pending:
            return
        chunk, self.pending = self.pending, ""
        self.seq += 1
        self.text += chunk
        # The snapshot is written before the delta is sent: a socket that joins the group and then
        # reads the snapshot sees every delta either in the snapshot or in its group, never in neither.
        await _cache_set(
            events.reply_progress_key(self.reply_id),
            {"text": self.text, "seq": self.seq},
            timeout=int(settings.INFERENCE_TOTAL_TIMEOUT) + 300,
        )
        await self.layer.group_send(
            self.group, {"type": "reply.delta", "reply_id": self.reply_id, "seq": self.seq, "text": chunk}
        )
        self.last_flush = time.monotonic()

    async def _save(self, outcome: _Outcome) -> None:
        finished_at = timezone.now()
        error = outcome.error
        code = error.code if error else ""
        detail = customer_error_detail(code, self.locale) if error else ""
        if error:
            logger.warning("Reply %s failed (%s): %s", self.reply_id, code, error.detail)
        event = await database_sync_to_async(_finish_and_describe)(
            reply_id=self.reply_id,
            text=self.text,
            status=outcome.status,
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.chunks_received
            if self.completion_tokens is None
            else self.completion_tokens,
            first_token_latency_ms=_milliseconds(self.first_token_at - self.created_at)
            if self.first_token_at
            else None,
            total_latency_ms=_milliseconds(finished_at - self.created_at),
            error_code=code,
            error_detail=detail,
        )
        await _cache_delete_many(
            [events.reply_progress_key(self.reply_id), events.reply_cancel_key(self.reply_id)]
        )
        if event is not None:
            await self.layer.group_send(self.group, event)


def _milliseconds(delta: Any) -> int:
    return max(0, int(delta.total_seconds() * 1000))


def _finish_and_describe(**fields: Any) -> dict[str, Any] | None:
    """Save the reply's outcome and return the event that tells the sockets; None if already finished."""
    saved = reply_finish(**fields)
    if saved is None:
        return None
    if fields["error_code"]:
        return events.reply_error_event(saved, code=fields["error_code"], detail=fields["error_detail"])
    return events.reply_done_event(saved)


def _reply_context(reply_id: int) -> tuple[Any, str, Any]:
    reply = (
        Message.objects.select_related("conversation")
        .only("created_at", "conversation__locale")
        .get(pk=reply_id)
    )
    return reply.conversation_id, reply.conversation.locale, reply.created_at


async def reply_generate(*, reply_id: int, client: InferenceClient | None = None) -> None:
    """Generate one reply, unless another delivery of the same job already claimed it."""
    claimed = await database_sync_to_async(reply_claim)(reply_id=reply_id)
    if not claimed:
        logger.info("Reply %s already claimed or no longer wanted; skipping", reply_id)
        return
    conversation_id, locale, created_at = await database_sync_to_async(_reply_context)(reply_id)
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS must be configured"
    generation = ReplyGeneration(
        reply_id=reply_id,
        conversation_id=conversation_id,
        locale=locale,
        created_at=created_at,
        layer=layer,
        client=client or inference_client(),
    )
    await generation.run()
