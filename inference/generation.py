"""Generate one assistant reply: stream it from the inference server to the conversation's sockets.

A reply known without the model (an FAQ entry's answer, quote mode's passage: `prompts.instant_answer_find`)
goes out through the same frames, as one delta and `reply.done`, and no request leaves; a model's reply
is saved with the citations its markers name (`grounding.citations_from_text`).

With INFERENCE_HANDOFF_TOOL (a server that does tool calling: vLLM with a tool-call parser) and the
model-tool trigger switched on, the model is offered a `handoff_to_human` tool. A call, streamed as
`tool_calls` or written as Hermes text (`grounding.ToolCallTextFilter` keeps it from the customer),
saves the reply as it stands (a short sentence if the model wrote nothing) and then hands the
conversation to a person: one ticket, trigger model_tool, the model's reason, the AI paused.

The model's text also goes through the supervisors' blocked terms (`safety.terms.BlockedTermFilter`,
after the tool-call and fence filters): a possible start of a term is held back until the next delta
says what it is, and a complete term stops the stream (the producer is cancelled, as for any other
way out) and the reply ends as the configured replacement sentence, saved complete with error_code
"blocked" and the term in error_detail (staff only: the customer's frames carry a complete reply's
error as null). A complete model answer gets the disclaimer, when switched on, as a last delta.

One event loop runs the whole reply. From the claim on, a heartbeat task keeps the reply's
`heartbeat_at` fresh (through prompt building as much as through streaming) and brings back the
database's verdict; a producer task reads the server's stream; the loop here coalesces tokens into
numbered deltas (the first at once, then about every 30 ms), appends each to the text-so-far for
sockets that join mid-reply, looks for a cancel every 250 ms, and saves the outcome once.

Cache and channel-layer calls are best-effort: a failure is logged, counted on the reply
(`relay_failures`) and the reply goes on; it is always saved to the database, and its final frame
is sent again until the channel layer takes it (for a while), so a Redis blip loses no reply.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import SyncToAsync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from conversations import events, handoff_rules, progress, selectors
from conversations.errors import customer_error_detail
from conversations.models import Conversation, Message, Ticket
from conversations.replies import (
    HeartbeatVerdict,
    ReplyOutcome,
    replies_in_progress_stop,
    reply_claim_for_generation,
    reply_fail,
    reply_finish,
    reply_heartbeat,
)
from cs_platform.logs import bound_context, request_id_get, request_id_new
from inference import runtime
from inference.client import ChatRequest, InferenceClient, StreamEvent, ToolCall
from inference.errors import InferenceError, InferenceTimeout
from inference.grounding import FenceTagFilter, ToolCallTextFilter, citations_from_text
from inference.prompts import InstantAnswer, instant_answer_find, prompt_build
from inference.tooling import business_tools
from knowledge.retrieval import Source
from safety.policy import SafetyPolicy, policy_cached, policy_get
from safety.terms import BlockedTermFilter

logger = logging.getLogger(__name__)

# How often a generation looks for the customer's request to stop.
CANCEL_CHECK_SECONDS = 0.25
# How often it looks whether OCR of the customer's new images has finished, before building the prompt.
OCR_CHECK_SECONDS = 0.25
# How long a final frame the channel layer refused is sent again (a Redis restart takes seconds).
FINAL_FRAME_RETRY_SECONDS = 60.0

# The frequent cache calls (an append per delta, a read every CANCEL_CHECK_SECONDS) are awaited on
# the loop (progress.areply_*); the one at the end goes off the thread that serialises database work.
_reply_text_append = progress.areply_text_append
_reply_cancel_flagged = progress.areply_cancel_flagged
_reply_progress_clear = sync_to_async(progress.reply_progress_clear, thread_sensitive=False)

# The outcomes a tool.finished frame names (DESIGN.md); a call refused or given bad arguments is "error".
TOOL_FRAME_OUTCOMES = frozenset({"ok", "error", "timeout"})

# The tool the model may call to hand the conversation to a person (OpenAI function-tool format).
HANDOFF_TOOL_NAME = "handoff_to_human"
HANDOFF_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": HANDOFF_TOOL_NAME,
        "description": (
            "Hand the conversation over to a human customer-service agent. Call it when the customer "
            "asks for a person, or when you cannot help and a person should take over."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {
                    "type": "string",
                    "description": "Why a person should take over, in one short sentence for the agent.",
                }
            },
            "required": ["reason"],
        },
    },
}
# Added to the system message when the tool is offered.
HANDOFF_TOOL_INSTRUCTIONS = (
    f"If the customer asks for a person, or you cannot help and a person should take over, call the "
    f"{HANDOFF_TOOL_NAME} tool with a short reason for the agent, and tell the customer in one sentence "
    "that a person will take over. Never write the tool call or its reason in your reply."
)
# The handoff's reason when the model gave none that can be read.
HANDOFF_DEFAULT_REASON = "The assistant handed the conversation over (it gave no reason)."
# The reply when the model called the tool without a word to the customer: never an empty bubble.
HANDOFF_SENTENCES: dict[str, str] = {
    Conversation.Locale.ZH_HANS: "好的，我这就为您转接人工客服。",
    Conversation.Locale.EN: "I'll connect you with a person from our team.",
}

# Strong references to in-process generations, so the event loop does not drop them.
_in_process_tasks: set[asyncio.Task[None]] = set()


def inference_client() -> InferenceClient:
    """A client for the configured inference servers, on the running loop's pooled connections."""
    return InferenceClient(
        base_urls=settings.INFERENCE_BASE_URLS,
        model=settings.INFERENCE_MODEL,
        api_key=settings.INFERENCE_API_KEY,
        connect_timeout=settings.INFERENCE_CONNECT_TIMEOUT,
        http=runtime.http_client(),
    )


def reply_generate_in_process(*, reply_id: int, request_id: str | None = None) -> None:
    """Generate a reply on the server's own event loop (the embedded default), without waiting for it.

    Called from sync code run by `sync_to_async` (a consumer's service call): the reply then runs on
    the loop that called it, where the in-memory channel layer lives. A caller with no such loop (a
    management command) waits for the reply instead.
    """
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    loop_pid = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None)
    if loop is None or loop_pid != os.getpid() or loop.is_closed():
        asyncio.run(reply_generate(reply_id=reply_id, request_id=request_id))
        return

    def start() -> None:
        task = loop.create_task(reply_generate(reply_id=reply_id, request_id=request_id))
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
    try:
        reply_fail(reply_id=reply_id, code="inference_error")
    finally:
        close_old_connections()


class _Abandoned(Exception):
    """The reply was finished elsewhere (the sweeper failed it): stop at once, send and save nothing."""


@dataclass
class _End:
    outcome: ReplyOutcome
    error: InferenceError | None = None


@dataclass
class ReplyGeneration:
    """The state of one reply being generated."""

    reply_id: int
    conversation_id: Any
    locale: str
    created_at: datetime
    layer: BaseChannelLayer
    client: InferenceClient
    # The reply as the claim read it, with its conversation: the prompt and the OCR wait reuse it.
    reply: Message | None = None
    text: str = ""
    # Every delta's text, in order: the list the text-so-far in the cache mirrors.
    chunks: list[str] = field(default_factory=list)
    pending: str = ""
    # The model's text goes through them before it is sent: a tool call written as text, and the
    # prompt's fence, never reach the customer.
    tool_filter: ToolCallTextFilter = field(default_factory=ToolCallTextFilter)
    fence_filter: FenceTagFilter = field(default_factory=FenceTagFilter)
    # The supervisors' blocked terms, last in line (None: no term is blocked in the reply's language),
    # and the policy they came from (the replacement sentence, the disclaimer); a model reply reads them.
    term_filter: BlockedTermFilter | None = None
    safety: SafetyPolicy | None = None
    # Whether the model wrote any of what the reply says (not only a fixed sentence): the disclaimer's.
    model_wrote: bool = False
    # Whether the request offered the model its handoff tool; a call of a tool not offered is ignored.
    handoff_tool_offered: bool = False
    # The reason the model gave when it called the handoff tool (None: it did not call it).
    handoff_reason: str | None = None
    # The business tools offered (inference/tooling.py), the calls of them the model made in the round
    # that just ended, the rounds of calls run so far, and the tokens of the rounds before this one.
    business_tool_names: frozenset[str] = frozenset()
    business_calls: list[ToolCall] = field(default_factory=list)
    tool_rounds: int = 0
    # Where in `text` the current round's words begin.
    round_start: int = 0
    earlier_prompt_tokens: int = 0
    earlier_completion_tokens: int = 0
    seq: int = -1
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Content chunks received: the completion's token count when the server reports no usage
    # (llama.cpp and vLLM stream one token per chunk), saved marked as counted.
    chunks_received: int = 0
    finish_reason: str | None = None
    first_token_at: datetime | None = None
    last_flush: float = 0.0
    # The heartbeat's latest verdict; read before every delta, so it costs nothing there.
    verdict: HeartbeatVerdict = HeartbeatVerdict.CONTINUE
    relay_failures: int = 0
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    # Who wrote the reply: the model, or an instant answer (an FAQ entry, quote mode's passage).
    source: str = Message.Source.MODEL
    # The sources the prompt numbered; the model's markers are read back against them when it is saved.
    sources: tuple[Source, ...] = ()
    grounding_found: bool = True
    # An instant answer's own citations and unanswered mark (a model's are worked out when it is saved).
    citations: list[dict[str, Any]] = field(default_factory=list)
    is_unanswered: bool = False

    @property
    def group(self) -> str:
        return events.conversation_group(self.conversation_id)

    async def run(self) -> None:
        """Generate, stream and save the reply; every way out saves it and tells the customer."""
        heartbeat = asyncio.create_task(self._heartbeat())
        producer: asyncio.Task[None] | None = None
        try:
            try:
                await self._ocr_wait()
                # On a thread of its own, not the one thread that serialises this loop's database calls:
                # prompt building can be slow (reading images), and the heartbeat must not wait on it.
                planned = await sync_to_async(_prompt_build_on_own_thread, thread_sensitive=False)(
                    self.reply_id, self.reply
                )
                self._stop_if_told()
                if isinstance(planned, InstantAnswer):
                    end = self._answer_at_once(planned)
                else:
                    self.sources, self.grounding_found = planned.sources, planned.grounding_found
                    self.handoff_tool_offered = any(
                        tool.get("function", {}).get("name") == HANDOFF_TOOL_NAME for tool in planned.tools
                    )
                    await self._safety_load()
                    request = await self._business_tools_offer(planned)
                    producer = asyncio.create_task(self._produce(request))
                    end = await self._consume()
                    while self._business_calls_due(end):
                        # The model asked for business tools: run them, give it their results, and
                        # let it go on writing the same reply (the customer sees one answer).
                        await asyncio.gather(producer, return_exceptions=True)
                        request = await self._business_calls_run(request)
                        producer = asyncio.create_task(self._produce(request))
                        end = await self._consume()
            except _Abandoned:
                raise
            except InferenceError as error:
                end = _End(ReplyOutcome.FAILED, error)
            except Exception:
                logger.exception("Reply %s failed unexpectedly", self.reply_id)
                end = _End(ReplyOutcome.FAILED, InferenceError("An unexpected error stopped the reply."))
            finally:
                if producer is not None:
                    # Cancelling the producer closes the HTTP stream, so the server stops generating too.
                    producer.cancel()
                    await asyncio.gather(producer, return_exceptions=True)
            self.model_wrote = bool((self.text + self.pending).strip())
            self._handoff_sentence_add(end)
            await self._flush()
            if self._disclaimer_add(end):
                await self._flush()
            await self._save(end)
            await self._hand_off(end)
        except _Abandoned:
            logger.warning("Reply %s was finished elsewhere; stopped", self.reply_id)
            # Deltas flushed before the heartbeat said so wrote the text so far again: forget it.
            await _reply_progress_clear([self.reply_id])
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    def _answer_at_once(self, answer: InstantAnswer) -> _End:
        """Take an answer that needs no model: it goes out as the reply's one delta, then reply.done."""
        self.source = answer.source
        self.citations = answer.citations
        self.is_unanswered = answer.is_unanswered
        self.first_token_at = timezone.now()
        self.pending = answer.text
        return _End(ReplyOutcome.COMPLETE)

    async def _heartbeat(self) -> None:
        """Keep the reply's heartbeat fresh from the claim on, and pass on any verdict but CONTINUE."""
        while True:
            await asyncio.sleep(settings.REPLY_HEARTBEAT_SECONDS)
            try:
                verdict = await database_sync_to_async(reply_heartbeat)(reply_id=self.reply_id)
            except Exception as error:
                # A database blip: the next beat tries again, and the sweeper judges a long silence.
                logger.warning("Reply %s: heartbeat failed: %s", self.reply_id, error)
                continue
            if verdict is not HeartbeatVerdict.CONTINUE:
                self.verdict = verdict
                await self.queue.put(("verdict", verdict))
                return

    def _stop_if_told(self) -> None:
        if self.verdict is HeartbeatVerdict.ABANDON:
            raise _Abandoned

    async def _ocr_wait(self) -> None:
        """Give OCR of the customer's new images (read on upload) a short while to finish first."""
        if settings.INFERENCE_VISION:
            return
        deadline = time.monotonic() + settings.OCR_WAIT_SECONDS
        reply = self.reply or await database_sync_to_async(selectors.reply_get_for_prompt)(
            reply_id=self.reply_id
        )
        while await database_sync_to_async(selectors.attachments_ocr_pending_list)(reply=reply):
            if time.monotonic() >= deadline:
                logger.info("Reply %s: OCR not finished in time; the prompt says so", self.reply_id)
                return
            await asyncio.sleep(OCR_CHECK_SECONDS)

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
        flagged = await _reply_cancel_flagged(self.reply_id)
        if flagged is None:
            self._relay_failed("reading the cancel flag")
        return bool(flagged)

    async def _consume(self) -> _End:
        started = time.monotonic()
        total_deadline = started + settings.INFERENCE_TOTAL_TIMEOUT
        token_deadline = started + settings.INFERENCE_FIRST_TOKEN_TIMEOUT
        next_cancel_check = started + CANCEL_CHECK_SECONDS
        while True:
            flush_at = self.last_flush + settings.INFERENCE_COALESCE_SECONDS if self.pending else math.inf
            wake_at = min(total_deadline, token_deadline, next_cancel_check, flush_at)
            try:
                # What is queued first: a wait that is already due (a slow cache call made the loop
                # late) would otherwise time out before looking, and starve the stream.
                kind, value = self.queue.get_nowait()
            except asyncio.QueueEmpty:
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
                blocked = self._blocked_end()
                if blocked is not None:
                    return blocked
            elif kind == "end":
                rest = self.tool_filter.feed(self.fence_filter.flush()) + self.tool_filter.flush()
                self.pending += self._terms_feed(rest) + self._terms_flush()
                self._tool_calls_take(self._written_tool_calls())
                return self._blocked_end() or _End(ReplyOutcome.COMPLETE)
            elif kind == "error":
                raise value
            elif kind == "verdict":
                self._stop_if_told()
                # CANCEL: the database's flag backs up the cache's, should the cache have lost it.
                return _End(ReplyOutcome.CANCELLED)
            if self.pending and (
                self.seq < 0 or now >= self.last_flush + settings.INFERENCE_COALESCE_SECONDS
            ):
                await self._flush()
            if now >= next_cancel_check:
                if await self._cancel_requested():
                    return _End(ReplyOutcome.CANCELLED)
                next_cancel_check = now + CANCEL_CHECK_SECONDS
            if now >= total_deadline:
                raise InferenceTimeout("The reply took longer than INFERENCE_TOTAL_TIMEOUT.")
            if now >= token_deadline:
                which = "the first token" if self.first_token_at is None else "the next token"
                raise InferenceTimeout(f"The server did not send {which} in time.")

    def _apply(self, event: StreamEvent) -> bool:
        """Take in one stream event; True if it carried text or a piece of a tool call."""
        self.model = event.model or self.model
        if event.prompt_tokens is not None:
            self.prompt_tokens = event.prompt_tokens
        if event.completion_tokens is not None:
            self.completion_tokens = event.completion_tokens
        if event.finish_reason:
            self.finish_reason = event.finish_reason
        self._tool_calls_take(event.tool_calls)
        if event.tool_call_delta and not event.text:
            # The model is writing a call: progress (a token), though nothing for the customer.
            self.chunks_received += 1
            return True
        if not event.text:
            return False
        if self.first_token_at is None:
            self.first_token_at = timezone.now()
        self.chunks_received += 1
        self.pending += self._terms_feed(self.tool_filter.feed(self.fence_filter.feed(event.text)))
        self._tool_calls_take(self._written_tool_calls())
        return True

    async def _safety_load(self) -> None:
        """The blocked terms and the disclaimer for this reply: from the process's cache, else read."""
        self.safety = policy_cached() or await database_sync_to_async(policy_get)()
        self.term_filter = self.safety.term_filter(self.locale)

    def _terms_feed(self, text: str) -> str:
        return self.term_filter.feed(text) if self.term_filter is not None and text else text

    def _terms_flush(self) -> str:
        return self.term_filter.flush() if self.term_filter is not None else ""

    @property
    def blocked_term(self) -> str | None:
        """The blocked term the model wrote (as configured), or None."""
        return self.term_filter.blocked if self.term_filter is not None else None

    def _blocked_end(self) -> _End | None:
        """A complete blocked term stops the reply: nothing more is sent, not even the text before it."""
        if self.blocked_term is None:
            return None
        logger.warning("Reply %s stopped: the model wrote a blocked term", self.reply_id)
        self.pending = ""
        return _End(ReplyOutcome.COMPLETE)

    def _disclaimer_add(self, end: _End) -> bool:
        """After a complete answer the model wrote, the disclaimer (if on) as a paragraph of its own."""
        if (
            end.outcome is not ReplyOutcome.COMPLETE
            or self.source != Message.Source.MODEL
            or self.blocked_term is not None
            or not self.model_wrote
            or self.safety is None
        ):
            return False
        disclaimer = self.safety.disclaimer_for(self.locale)
        if not disclaimer:
            return False
        separator = "" if self.text.endswith("\n\n") else "\n" if self.text.endswith("\n") else "\n\n"
        self.pending = f"{separator}{disclaimer}"
        return True

    def _written_tool_calls(self) -> list[ToolCall]:
        return [ToolCall(name=call.name, arguments=call.arguments) for call in self.tool_filter.take_calls()]

    def _tool_calls_take(self, calls: list[ToolCall]) -> None:
        """Note the model's tool calls: the first handoff_to_human one (if offered) sets the handoff, and
        calls of the business tools offered are kept to run when the round ends."""
        for call in calls:
            if call.name in self.business_tool_names:
                call_id = call.id or f"call_{self.tool_rounds}_{len(self.business_calls)}"
                self.business_calls.append(replace(call, id=call_id))
            elif call.name != HANDOFF_TOOL_NAME:
                logger.warning(
                    "Reply %s: the model called an unknown tool %r; ignored", self.reply_id, call.name
                )
            elif not self.handoff_tool_offered:
                logger.warning(
                    "Reply %s: the model called %s, which was not offered; ignored", self.reply_id, call.name
                )
            elif self.handoff_reason is None:
                self.handoff_reason = handoff_reason_read(call.arguments)
                logger.info("Reply %s: the model asked for a person: %s", self.reply_id, self.handoff_reason)

    async def _business_tools_offer(self, request: ChatRequest) -> ChatRequest:
        """The request with the business tools this conversation may use, when the server calls tools."""
        provider = business_tools()
        if not settings.INFERENCE_TOOLS or provider is None or self.reply is None:
            return request
        try:
            offered = await database_sync_to_async(provider.offered)(conversation=self.reply.conversation)
        except Exception:
            logger.exception("Reply %s: reading the business tools failed; none are offered", self.reply_id)
            return request
        if not offered:
            return request
        self.business_tool_names = frozenset(entry["function"]["name"] for entry in offered)
        return replace(request, tools=(*request.tools, *offered))

    def _business_calls_due(self, end: _End) -> bool:
        """Whether the round that ended asked for business tools the reply should run now."""
        if not self.business_calls:
            return False
        if end.outcome is not ReplyOutcome.COMPLETE or self.blocked_term is not None or self.handoff_reason:
            self.business_calls = []
            return False
        return True

    async def _business_calls_run(self, request: ChatRequest) -> ChatRequest:
        """Run the round's calls (each told to the customer as it starts and ends) and return the request
        that gives the model their results; the last round allowed offers no business tool."""
        provider = business_tools()
        assert provider is not None
        assert self.reply is not None
        calls, self.business_calls = self.business_calls, []
        self.tool_rounds += 1
        round_text = self.text_this_round()
        await self._flush()
        self.round_start = len(self.text)
        self.earlier_prompt_tokens += self.prompt_tokens or 0
        self.earlier_completion_tokens += self.completion_tokens or 0
        self.prompt_tokens = self.completion_tokens = None
        results: list[dict[str, Any]] = []
        for call in calls:
            summary = provider.summary(name=call.name, arguments=call.arguments, locale=self.locale)
            await self._send(
                events.tool_started_event(
                    reply_id=self.reply_id, call_id=call.id, name=call.name, summary=summary
                )
            )
            result = await provider.call(
                conversation=self.reply.conversation,
                reply_id=self.reply_id,
                call_id=call.id,
                name=call.name,
                arguments=call.arguments,
            )
            self._stop_if_told()
            outcome = result.outcome if result.outcome in TOOL_FRAME_OUTCOMES else "error"
            await self._send(
                events.tool_finished_event(reply_id=self.reply_id, call_id=call.id, outcome=outcome)
            )
            results.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
        asked = {
            "role": "assistant",
            "content": round_text or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ],
        }
        tools = request.tools
        if self.tool_rounds >= settings.INFERENCE_TOOL_ROUNDS:
            # The last round: the model answers with what it has, and may call no more business tools.
            tools = tuple(tool for tool in tools if tool["function"]["name"] not in self.business_tool_names)
            self.business_tool_names = frozenset()
        logger.info(
            "Reply %s: ran %s business tool call(s), round %s", self.reply_id, len(calls), self.tool_rounds
        )
        return replace(request, messages=[*request.messages, asked, *results], tools=tools)

    def text_this_round(self) -> str:
        """What the model wrote in the round that just ended (sent or about to be)."""
        return (self.text + self.pending)[self.round_start :].strip()

    def _hands_off(self, end: _End) -> bool:
        """Whether this reply ends in the model's handoff: it called the tool and the reply completed."""
        return self.handoff_reason is not None and end.outcome is ReplyOutcome.COMPLETE

    def _handoff_sentence_add(self, end: _End) -> None:
        """A reply that hands off with nothing said says so in a sentence: never an empty bubble."""
        if not self._hands_off(end) or (self.text + self.pending).strip() or self.blocked_term is not None:
            return
        self.pending = HANDOFF_SENTENCES.get(self.locale, HANDOFF_SENTENCES[Conversation.Locale.EN])
        self.first_token_at = self.first_token_at or timezone.now()

    async def _hand_off(self, end: _End) -> None:
        """After the reply is saved and its reply.done sent: the model's handoff, if it asked for one."""
        if not self._hands_off(end):
            return
        assert self.handoff_reason is not None
        try:
            await database_sync_to_async(model_tool_handoff)(
                conversation_id=self.conversation_id, reason=self.handoff_reason
            )
        except Exception:
            # The reply is saved and told; the customer can still press the button.
            logger.exception("Reply %s: handing off as the model asked failed", self.reply_id)

    async def _flush(self) -> None:
        """Send the text gathered since the last delta as the next numbered delta."""
        if not self.pending:
            return
        # A reply the sweeper already failed sends nothing more: its customer has the final frame.
        self._stop_if_told()
        chunk, self.pending = self.pending, ""
        self.seq += 1
        self.text += chunk
        self.chunks.append(chunk)
        # The snapshot is written before the delta is sent: a socket that joins the group and then
        # reads the snapshot sees every delta either in the snapshot or in its group, never in neither.
        if not await _reply_text_append(self.reply_id, self.chunks):
            self._relay_failed("storing the text so far")
        await self._send(events.reply_delta_event(reply_id=self.reply_id, seq=self.seq, text=chunk))
        self.last_flush = time.monotonic()

    async def _send(self, event: dict[str, Any]) -> bool:
        try:
            await self.layer.group_send(self.group, event)
        except Exception as error:
            self._relay_failed(f"sending {event['type']}", error)
            return False
        return True

    def _relay_failed(self, what: str, error: BaseException | None = None) -> None:
        self.relay_failures += 1
        # The first failure of a reply says why; the rest are counted and summed up at the end.
        if self.relay_failures == 1:
            logger.warning("Reply %s: %s failed (%s); going on", self.reply_id, what, error or "cache")

    async def _save(self, end: _End) -> None:
        finished_at = timezone.now()
        error = end.error
        code = error.code if error else ""
        detail = customer_error_detail(code, self.locale) if error else ""
        if error:
            logger.warning("Reply %s failed (%s): %s", self.reply_id, code, error.detail)
        counted = self.completion_tokens is None and self.chunks_received > 0
        citations, is_unanswered = self.citations, self.is_unanswered
        text = self.text
        if self.source == Message.Source.MODEL:
            # What the reply actually cited, not everything the prompt showed; a reply told that nothing
            # covers the question is unanswered, unless it failed before it could say so.
            citations = citations_from_text(self.text, self.sources)
            is_unanswered = not self.grounding_found and end.outcome is not ReplyOutcome.FAILED
        if self.blocked_term is not None and self.safety is not None:
            # What the customer keeps is the replacement sentence (reply.done replaces what streamed);
            # what the model wrote is kept nowhere, and the term only where staff read it.
            text = self.safety.replacement_for(self.locale)
            citations, code, detail = [], "blocked", self.blocked_term
        saved = await database_sync_to_async(reply_finish)(
            reply_id=self.reply_id,
            # The model's own handoff follows, with its reason: the reply-finished rules would only
            # open the same ticket under another trigger.
            consult_handoff_rules=not self._hands_off(end),
            outcome=end.outcome,
            text=text,
            model=self.model,
            # Unknown is not zero: None unless the server reported it.
            prompt_tokens=self._tokens(self.earlier_prompt_tokens, self.prompt_tokens),
            completion_tokens=self.chunks_received
            if counted
            else self._tokens(self.earlier_completion_tokens, self.completion_tokens),
            completion_tokens_counted=counted,
            first_token_latency_ms=_milliseconds(self.first_token_at - self.created_at)
            if self.first_token_at
            else None,
            total_latency_ms=_milliseconds(finished_at - self.created_at),
            truncated=end.outcome is ReplyOutcome.COMPLETE and self.finish_reason == "length",
            relay_failures=self.relay_failures,
            error_code=code,
            error_detail=detail,
            citations=citations,
            source=self.source,
            is_unanswered=is_unanswered,
        )
        if saved is None:
            raise _Abandoned
        if not await _reply_progress_clear([self.reply_id]):
            self._relay_failed("clearing the text so far")
        if error:
            event = events.reply_error_event(saved, code=code, detail=detail)
        else:
            event = events.reply_done_event(saved)
        await self._send_final(event)
        if self.relay_failures:
            logger.warning(
                "Reply %s saved; %s cache or channel-layer calls failed", self.reply_id, self.relay_failures
            )

    @staticmethod
    def _tokens(earlier: int, this_round: int | None) -> int | None:
        """A count over every round of tool calls; unknown (None) when no round reported one."""
        if this_round is None and not earlier:
            return None
        return earlier + (this_round or 0)

    async def _send_final(self, event: dict[str, Any]) -> None:
        """Send the final frame, again and again while the channel layer refuses it (for a while)."""
        deadline = time.monotonic() + FINAL_FRAME_RETRY_SECONDS
        pause = 0.25
        while not await self._send(event):
            if time.monotonic() + pause > deadline:
                logger.error("Reply %s: the final frame could not be sent; it is saved", self.reply_id)
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)


def _prompt_build_on_own_thread(reply_id: int, reply: Message | None) -> ChatRequest | InstantAnswer:
    """The reply's instant answer if it has one (an FAQ entry, quote mode), else the model's prompt."""
    try:
        if reply is None or reply.pk != reply_id:
            reply = selectors.reply_get_for_prompt(reply_id=reply_id)
        # Read once for both: the instant answer looks at the latest message, the prompt at all of them.
        history = selectors.prompt_history_list(reply=reply)
        answer = instant_answer_find(reply_id=reply_id, reply=reply, history_messages=history)
        if answer is not None:
            return answer
        return handoff_tool_offer(prompt_build(reply_id=reply_id, reply=reply, history_messages=history))
    finally:
        # This thread is borrowed from a pool: give its database connection back.
        connection.close()


def handoff_tool_offer(request: ChatRequest) -> ChatRequest:
    """The request with the handoff tool offered, when INFERENCE_HANDOFF_TOOL and the trigger say so.

    Off by default: the embedded default's llama.cpp model does no tool calling, and a server asked
    for tools it cannot serve may refuse the request. The trigger is the supervisor's switch
    (HandoffSettings); reading it needs the database, so this runs off the event loop. The system
    message, when there is one, says when to call it (the tool's description says so too).
    """
    if not settings.INFERENCE_HANDOFF_TOOL or not handoff_rules.handoff_trigger_enabled(
        Ticket.Trigger.MODEL_TOOL
    ):
        return request
    messages = request.messages
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        system = {**messages[0], "content": f"{messages[0]['content']}\n\n{HANDOFF_TOOL_INSTRUCTIONS}"}
        messages = [system, *messages[1:]]
    return replace(request, messages=messages, tools=(*request.tools, HANDOFF_TOOL))


def handoff_reason_read(arguments: str) -> str:
    """The reason in the handoff tool's arguments (`{"reason": "..."}`), or the default reason.

    A model may write its arguments badly (not JSON, no reason, an empty one): it still asked for a
    person, so the handoff happens all the same, with a reason that says none was given.
    """
    try:
        parsed = json.loads(arguments) if arguments.strip() else None
    except json.JSONDecodeError:
        logger.warning("The handoff tool's arguments were not JSON: %r", arguments[:200])
        parsed = None
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    if isinstance(reason, str) and reason.strip():
        return reason.strip()
    return HANDOFF_DEFAULT_REASON


def model_tool_handoff(*, conversation_id: Any, reason: str) -> Ticket | None:
    """Hand the conversation to a person because the model called its handoff tool.

    One ticket per conversation: under the conversation's row lock an unresolved ticket (the customer
    pressed the button meanwhile, or the model called the tool twice) is kept, and nothing new is
    written or announced. A closed conversation, or a trigger switched off since the tool was
    offered, hands nothing off. The customer's sockets hear handoff.started on commit; later customer
    messages get no AI reply (the conversation is handed off), and one queued meanwhile is stopped.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.status == Conversation.Status.CLOSED:
            return None
        if not handoff_rules.handoff_trigger_enabled(Ticket.Trigger.MODEL_TOOL):
            logger.info("Conversation %s: the model tool trigger is off; no handoff", conversation_id)
            return None
        replies_in_progress_stop(conversation=conversation)
        opened = handoff_rules.handoff_open(
            conversation=conversation,
            reason=reason,
            trigger=Ticket.Trigger.MODEL_TOOL,
            announce_to_customer=True,
        )
    return opened.ticket


def _milliseconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


async def reply_generate(
    *, reply_id: int, client: InferenceClient | None = None, request_id: str | None = None
) -> None:
    """Generate one reply, unless another delivery of the same job already claimed it.

    The single entry point of a generation, for a Celery task or any other runner: a coroutine that
    takes an id and saves the outcome itself. Its log lines carry `request_id` (the asking message's,
    else a new one) and the reply's id; the inference request sends the same id to the server.
    """
    # Bound in the coroutine's own context: a runner's loop (the runtime's, the server's) has none.
    with bound_context(request_id=request_id or request_id_get() or request_id_new(), reply_id=reply_id):
        await _reply_generate(reply_id=reply_id, client=client)


async def _reply_generate(*, reply_id: int, client: InferenceClient | None) -> None:
    # The claim reads the reply with its conversation too: what the generation and its prompt need.
    reply = await database_sync_to_async(reply_claim_for_generation)(reply_id=reply_id)
    if reply is None:
        logger.info("Reply %s already claimed or no longer wanted; skipping", reply_id)
        return
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS must be configured"
    generation = ReplyGeneration(
        reply_id=reply_id,
        conversation_id=reply.conversation_id,
        locale=reply.conversation.locale,
        created_at=reply.created_at,
        layer=layer,
        client=client or inference_client(),
        reply=reply,
    )
    with bound_context(conversation_id=str(reply.conversation_id)):
        await generation.run()
