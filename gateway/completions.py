"""One chat completion: the answer's text as it streams, filtered as the widget's is, with its usage.

The model is called from the web process's own event loop (an API call is one HTTP request waiting on
one HTTP stream, nothing a worker would add to): no Celery hop, so the gateway adds little to the
model's own time to first token. The inference client's fail-over, deadlines and pooled connections
are the widget's. Closing the iterator (the caller went away) closes the model's stream too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from conversations.models import Message
from gateway.assistant import AssistantPlan
from inference.client import ChatRequest, InferenceClient, StreamEvent
from inference.errors import InferenceError, InferenceTimeout
from inference.grounding import FenceTagFilter, citations_from_text
from inference.prompts import estimate_tokens
from safety.policy import SafetyPolicy, policy_cached, policy_get
from safety.terms import BlockedTermFilter


@dataclass
class Answer:
    """What a completion has produced so far, and how it ended."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    served_model: str = ""
    source: str = Message.Source.MODEL
    citations: list[dict[str, Any]] = field(default_factory=list)
    is_unanswered: bool = False
    # time.monotonic() of the first text sent.
    first_token_at: float | None = None
    blocked_term: str | None = None


def _prompt_estimate(request: ChatRequest) -> int:
    text = "\n".join(
        entry["content"]
        if isinstance(entry["content"], str)
        else "\n".join(part.get("text", "") for part in entry["content"])
        for entry in request.messages
    )
    return estimate_tokens(text)


class Completion:
    """Runs one completion; `pieces()` yields the text to send, and `answer` holds the rest."""

    def __init__(
        self,
        *,
        client: InferenceClient,
        request: ChatRequest | None,
        plan: AssistantPlan | None = None,
    ) -> None:
        self.client = client
        self.request = request if plan is None else plan.request
        self.plan = plan
        self.answer = Answer()
        self._fence = FenceTagFilter()
        self._terms: BlockedTermFilter | None = None
        self._safety: SafetyPolicy | None = None
        self._chunks = 0

    @property
    def assistant(self) -> bool:
        return self.plan is not None

    async def pieces(self) -> AsyncGenerator[str, None]:
        """The answer's text in pieces as they come; InferenceError when the model fails."""
        plan = self.plan
        if plan is not None and plan.instant is not None:
            instant = plan.instant
            self.answer.source = instant.source
            self.answer.citations = list(instant.citations)
            self.answer.is_unanswered = instant.is_unanswered
            self.answer.served_model = settings.GATEWAY_ASSISTANT_MODEL
            self.answer.prompt_tokens = self.answer.completion_tokens = 0
            self.answer.finish_reason = "stop"
            yield self._sent(instant.text)
            return
        assert self.request is not None
        if plan is not None:
            self._safety = policy_cached() or await database_sync_to_async(policy_get)()
            self._terms = self._safety.term_filter(plan.locale)
        async with contextlib.aclosing(self._events(self.request)) as events:
            async for event in events:
                text = self._take(event)
                if self._blocked():
                    break
                if text:
                    yield self._sent(text)
        if not self._blocked():
            rest = self._filtered_rest()
            if rest:
                yield self._sent(rest)
        ending = self._ending()
        if ending:
            yield self._sent(ending)
        self.usage_settle()

    def usage_settle(self) -> None:
        """Fill in the usage the server did not report (it stopped early, or never reports it)."""
        if self.request is None:
            return
        if self.answer.completion_tokens is None and self._chunks:
            # A server streams one token per chunk (llama.cpp, vLLM): the count of what was generated.
            self.answer.completion_tokens = self._chunks
        if self.answer.prompt_tokens is None and (self._chunks or self.answer.completion_tokens):
            self.answer.prompt_tokens = _prompt_estimate(self.request)

    async def _events(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        """The model's stream within the widget's deadlines: first token, between tokens, in total."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        total_deadline = started + settings.INFERENCE_TOTAL_TIMEOUT
        token_deadline = started + settings.INFERENCE_FIRST_TOKEN_TIMEOUT
        stream: AsyncIterator[StreamEvent] = self.client.stream_chat(request)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            while True:
                try:
                    event = await asyncio.wait_for(
                        anext(stream), timeout=max(0.0, min(token_deadline, total_deadline) - loop.time())
                    )
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    which = "the first token" if self.answer.first_token_at is None else "the next token"
                    if loop.time() >= total_deadline:
                        raise InferenceTimeout(
                            "The answer took longer than INFERENCE_TOTAL_TIMEOUT."
                        ) from None
                    raise InferenceTimeout(f"The model did not send {which} in time.") from None
                if event.text or event.tool_call_delta:
                    token_deadline = loop.time() + settings.INFERENCE_TOKEN_TIMEOUT
                yield event

    def _take(self, event: StreamEvent) -> str:
        answer = self.answer
        answer.served_model = event.model or answer.served_model
        if event.prompt_tokens is not None:
            answer.prompt_tokens = event.prompt_tokens
        if event.completion_tokens is not None:
            answer.completion_tokens = event.completion_tokens
        if event.finish_reason:
            answer.finish_reason = event.finish_reason
        if not event.text:
            return ""
        self._chunks += 1
        if not self.assistant:
            return event.text
        text = self._fence.feed(event.text)
        return self._terms.feed(text) if self._terms is not None and text else text

    def _filtered_rest(self) -> str:
        if not self.assistant:
            return ""
        rest = self._fence.flush()
        if self._terms is None:
            return rest
        return (self._terms.feed(rest) if rest else "") + self._terms.flush()

    def _blocked(self) -> bool:
        if self._terms is not None and self._terms.blocked is not None:
            self.answer.blocked_term = self._terms.blocked
            return True
        return False

    def _ending(self) -> str:
        """What follows the model's text: the replacement of a blocked answer, or the disclaimer."""
        plan, safety = self.plan, self._safety
        if plan is None or safety is None:
            return ""
        separator = "" if not self.answer.text or self.answer.text.endswith("\n\n") else "\n\n"
        if self._blocked():
            # Nothing of the term was sent (the filter holds back what could begin one); what was sent
            # stays, and the answer ends with the configured sentence instead of the model's text.
            self.answer.finish_reason = "content_filter"
            return f"{separator}{safety.replacement_for(plan.locale)}"
        self.answer.citations = citations_from_text(
            self.answer.text, self.request.sources if self.request else ()
        )
        self.answer.is_unanswered = self.request is not None and not self.request.grounding_found
        disclaimer = safety.disclaimer_for(plan.locale)
        if disclaimer and self.answer.text.strip():
            return f"{separator}{disclaimer}"
        return ""

    def _sent(self, text: str) -> str:
        if self.answer.first_token_at is None:
            self.answer.first_token_at = time.monotonic()
        self.answer.text += text
        return text


__all__ = ["Answer", "Completion", "InferenceError"]
