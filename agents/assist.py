"""Agent assist: an AI draft of the agent's next message, streamed into the console's composer.

A draft is grounded as a reply is (`inference.prompts.draft_prompt_build`: the same retrieval, the
same fenced sources, an FAQ entry's answer or quote mode's passage where a reply would use one), but
it is written for the agent, not the customer: it goes only to the console socket that asked for it
(`channel_layer.send` to its channel name), it is never saved, and nothing reaches the customer
unless the agent sends it as a message of their own.

The socket (agents.consumers) checks that the agent may act in the conversation, names the draft,
answers `assist.started` and starts the generation here: on the server's own event loop in the
embedded default, else as a Celery task on a worker's reply runtime. The generation sends
`assist.delta` (`seq` from 0) and `assist.done` (the whole text, source numbers taken out, and
`stale` if a newer customer message arrived meanwhile) or `assist.error`; a cancel (the agent
pressed stop, or closed the console) is a flag in the cache that the generation looks for every
CANCEL_CHECK_SECONDS. A draft that no worker takes or that goes silent is ended by the socket's own
watchdog, so "Drafting…" never spins for ever.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections

from agents.phrases import asks_for_a_person
from conversations import selectors as conversation_selectors
from conversations.models import Conversation, Message
from inference.client import ChatRequest, InferenceClient
from inference.errors import InferenceError, InferenceTimeout
from inference.generation import inference_client
from inference.grounding import FenceTagFilter
from inference.prompts import InstantAnswer, draft_prompt_build, instant_answer_for

__all__ = [
    "ASSIST_ERROR_DETAILS",
    "DraftRequest",
    "MarkerFilter",
    "draft_cancel",
    "draft_generate",
    "draft_generate_in_process",
    "draft_text_clean",
]

logger = logging.getLogger(__name__)

# How often a draft looks whether the agent stopped it.
CANCEL_CHECK_SECONDS = 0.25
# How long a cancel flag is kept: longer than any draft runs.
CANCEL_FLAG_SECONDS = 600

# What the console says when a draft fails, by code (the console has these in Chinese too).
ASSIST_ERROR_DETAILS: dict[str, str] = {
    "inference_unavailable": "The AI model cannot be reached right now.",
    "inference_timeout": "The AI model took too long to answer.",
    "inference_bad_response": "The AI model sent an answer that could not be read.",
    "inference_rejected": "The AI model refused this conversation (it may be too long).",
    "inference_error": "Something went wrong while drafting.",
    "nothing_to_answer": "The customer has not asked anything to answer yet (only for a person).",
    "nothing_found": "The knowledge base has nothing on this question to draft from.",
    "assist_unavailable": "No worker is drafting right now. Try again in a moment.",
}

# A source marker ("[1]", "【2, 3】") with the space before it: a draft is the agent's own words.
_MARKER_WITH_SPACE = re.compile(r"[ \t]*[\[【]\s*\d{1,3}(?:\s*[,，、]\s*\d{1,3})*\s*[\]】]")

# What may still become a marker at the end of the text streamed so far ("[", " [1", "【2，"): held back.
_MARKER_PREFIX = re.compile(r"[ \t]*[\[【][\d\s,，、]*$")
_TRAILING_SPACE = re.compile(r"[ \t]+$")
_HELD_MAX = 24


class MarkerFilter:
    """Takes source numbers out of a streamed draft, token by token, as `draft_text_clean` does for
    the whole: a marker can arrive split over tokens ("[", "1", "]"), so a text that ends in what may
    be the start of one (or in spaces that may come before one) is held back until the next token."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        text = _MARKER_WITH_SPACE.sub("", self._held + text)
        self._held = ""
        held = _MARKER_PREFIX.search(text) or _TRAILING_SPACE.search(text)
        if held is not None and len(text) - held.start() <= _HELD_MAX:
            text, self._held = text[: held.start()], text[held.start() :]
        return text

    def flush(self) -> str:
        """What was held back, once the stream has ended (it was no marker after all)."""
        held, self._held = _MARKER_WITH_SPACE.sub("", self._held), ""
        return held


# Strong references to in-process drafts, so the event loop does not drop them.
_in_process_drafts: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class DraftRequest:
    conversation_id: uuid.UUID
    draft_id: str
    # The console socket that asked: the only one that hears of the draft.
    channel_name: str
    # The customer message the draft answers (None before the customer wrote).
    based_on_message: int | None

    def as_task_kwargs(self) -> dict[str, Any]:
        return {
            "conversation_id": str(self.conversation_id),
            "draft_id": self.draft_id,
            "channel_name": self.channel_name,
            "based_on_message": self.based_on_message,
        }


def _cancel_key(draft_id: str) -> str:
    return f"assist:cancel:{draft_id}"


def draft_cancel(draft_id: str) -> None:
    """Ask the draft's generation to stop (best-effort: with the cache away it runs to its end, and
    the socket drops what it sends)."""
    try:
        cache.set(_cancel_key(draft_id), True, timeout=CANCEL_FLAG_SECONDS)
    except Exception as error:
        logger.warning("Flagging draft %s cancelled failed: %s", draft_id, error)


def _cancelled(draft_id: str) -> bool:
    try:
        return bool(cache.get(_cancel_key(draft_id)))
    except Exception:
        return False


def draft_text_clean(text: str) -> str:
    """The draft as the agent gets it to send: no source numbers, no surrounding blank lines."""
    return _MARKER_WITH_SPACE.sub("", text).strip()


def _plan(request: DraftRequest) -> ChatRequest | InstantAnswer | None:
    """What to draft from: an instant answer, the model's prompt, or nothing (no customer message)."""
    try:
        conversation = Conversation.objects.only("locale").get(pk=request.conversation_id)
        history = [
            message
            for message in conversation_selectors.draft_history_list(conversation_id=request.conversation_id)
            if not _only_asks_for_a_person(message)
        ]
        if not any(message.role == Message.Role.CUSTOMER for message in history):
            return None
        instant = instant_answer_for(locale=conversation.locale, history=history)
        if instant is not None:
            return instant
        return draft_prompt_build(locale=conversation.locale, messages_newest_first=history)
    finally:
        # A thread borrowed from a pool: give its connection back.
        close_old_connections()


def _only_asks_for_a_person(message: Message) -> bool:
    """A customer message that only asked for a person ("转人工", "I want a real person"): the agent
    is that person, so it is no question to draft an answer to, nor to look up. Left out of the
    draft's history, its retrieval query is the customer's question before it."""
    return (
        message.role == Message.Role.CUSTOMER
        and not message.attachments.all()
        and asks_for_a_person(message.text)
    )


def _is_stale(request: DraftRequest) -> bool:
    try:
        latest = conversation_selectors.latest_customer_message_id(conversation_id=request.conversation_id)
        return latest is not None and latest != request.based_on_message
    finally:
        close_old_connections()


class _Draft:
    """One draft being generated and sent to its socket."""

    def __init__(self, request: DraftRequest, layer: BaseChannelLayer, client: InferenceClient) -> None:
        self.request = request
        self.layer = layer
        self.client = client
        self.seq = -1
        self.text = ""
        self.pending = ""
        self.last_flush = 0.0
        self.fence_filter = FenceTagFilter()
        self.marker_filter = MarkerFilter()

    async def _send(self, kind: str, **fields: Any) -> None:
        event = {
            "type": kind,
            "conversation": str(self.request.conversation_id),
            "draft_id": self.request.draft_id,
            **fields,
        }
        try:
            await self.layer.send(self.request.channel_name, event)
        except Exception as error:
            # The socket's watchdog ends a draft it stops hearing from.
            logger.warning("Draft %s: sending %s failed: %s", self.request.draft_id, kind, error)

    async def _flush(self) -> None:
        if not self.pending:
            return
        chunk, self.pending = self.pending, ""
        self.seq += 1
        self.text += chunk
        self.last_flush = time.monotonic()
        await self._send("assist.delta", seq=self.seq, text=chunk)

    async def _cancel_requested(self) -> bool:
        return await sync_to_async(_cancelled, thread_sensitive=False)(self.request.draft_id)

    async def run(self) -> None:
        try:
            planned = await sync_to_async(_plan, thread_sensitive=False)(self.request)
            if planned is None:
                await self._error("nothing_to_answer")
                return
            if isinstance(planned, InstantAnswer):
                if planned.is_unanswered:
                    await self._error("nothing_found")
                    return
                self.pending = planned.text
            else:
                cancelled = await self._stream(planned)
                if cancelled:
                    await self._flush()
                    await self._send("assist.done", text=draft_text_clean(self.text), cancelled=True)
                    return
            self.pending += self.marker_filter.feed(self.fence_filter.flush()) + self.marker_filter.flush()
            await self._flush()
        except InferenceError as error:
            logger.warning("Draft %s failed (%s): %s", self.request.draft_id, error.code, error.detail)
            await self._error(error.code)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Draft %s failed unexpectedly", self.request.draft_id)
            await self._error("inference_error")
            return
        stale = await sync_to_async(_is_stale, thread_sensitive=False)(self.request)
        await self._send("assist.done", text=draft_text_clean(self.text), stale=stale, cancelled=False)

    async def _error(self, code: str) -> None:
        detail = ASSIST_ERROR_DETAILS.get(code, ASSIST_ERROR_DETAILS["inference_error"])
        await self._send("assist.error", code=code, detail=detail)

    async def _stream(self, request: ChatRequest) -> bool:
        """Stream the model's draft as numbered deltas; True if the agent stopped it."""
        started = time.monotonic()
        total_deadline = started + settings.INFERENCE_TOTAL_TIMEOUT
        token_deadline = started + settings.INFERENCE_FIRST_TOKEN_TIMEOUT
        next_cancel_check = started + CANCEL_CHECK_SECONDS
        events = self.client.stream_chat(request).__aiter__()
        upcoming: asyncio.Future[Any] | None = None
        try:
            while True:
                if upcoming is None:
                    upcoming = asyncio.ensure_future(events.__anext__())
                now = time.monotonic()
                coalesce = settings.INFERENCE_COALESCE_SECONDS
                flush_at = self.last_flush + coalesce if self.pending else float("inf")
                wake_at = min(total_deadline, token_deadline, next_cancel_check, flush_at)
                done, _ = await asyncio.wait({upcoming}, timeout=max(0.0, wake_at - now))
                now = time.monotonic()
                if done:
                    finished, upcoming = upcoming, None
                    try:
                        event = finished.result()
                    except StopAsyncIteration:
                        return False
                    if event.text:
                        token_deadline = now + settings.INFERENCE_TOKEN_TIMEOUT
                        self.pending += self.marker_filter.feed(self.fence_filter.feed(event.text))
                if self.pending and (self.seq < 0 or now >= self.last_flush + coalesce):
                    await self._flush()
                if now >= next_cancel_check:
                    if await self._cancel_requested():
                        return True
                    next_cancel_check = now + CANCEL_CHECK_SECONDS
                if now >= total_deadline:
                    raise InferenceTimeout("The draft took longer than INFERENCE_TOTAL_TIMEOUT.")
                if now >= token_deadline:
                    raise InferenceTimeout("The server did not send the next token in time.")
        finally:
            if upcoming is not None:
                upcoming.cancel()
                await asyncio.gather(upcoming, return_exceptions=True)
            # Closing the stream closes the HTTP response: the server stops generating too.
            await events.aclose()  # type: ignore[attr-defined]


async def draft_generate(*, request: DraftRequest, client: InferenceClient | None = None) -> None:
    """Generate one draft and send it to the socket that asked; every way out sends it a final frame."""
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS must be configured"
    await _Draft(request, layer, client or inference_client()).run()


def draft_generate_in_process(request: DraftRequest) -> None:
    """Start a draft on the running event loop (the embedded default's server, where the in-memory
    channel layer lives), without waiting for it."""
    task = asyncio.get_running_loop().create_task(draft_generate(request=request))
    _in_process_drafts.add(task)
    task.add_done_callback(_in_process_drafts.discard)
