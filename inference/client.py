"""An async streaming client for OpenAI-compatible chat servers (vLLM, llama.cpp), with fail-over."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from inference.errors import InferenceBadResponse, InferenceRejected, InferenceTimeout, InferenceUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float


@dataclass
class StreamEvent:
    """One thing read from the stream: a piece of text, or the usage and finish at the end."""

    text: str = ""
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


@dataclass
class InferenceClient:
    base_urls: Sequence[str]
    model: str = ""
    api_key: str = ""
    connect_timeout: float = 5.0
    # httpx's read timeout is only a backstop: the caller enforces first-token and between-token limits.
    read_timeout: float = 600.0
    _models: dict[str, str] = field(default_factory=dict)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_timeout, read=self.read_timeout, write=30.0, pool=5.0)

    async def _model_for(self, http: httpx.AsyncClient, base_url: str) -> str:
        """The configured model, or the first one the server lists (llama.cpp and vLLM serve one)."""
        if self.model:
            return self.model
        if base_url not in self._models:
            response = await http.get(f"{base_url}/models", headers=self._headers())
            response.raise_for_status()
            models = response.json().get("data") or []
            if not models:
                raise InferenceBadResponse(f"{base_url} lists no models.")
            self._models[base_url] = str(models[0]["id"])
        return self._models[base_url]

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream a chat completion, trying each server in turn until one starts answering.

        Fail-over happens only before the first event: after that, another server would repeat text.
        Closing the iterator closes the HTTP stream, so the server stops generating too.
        """
        failures: list[str] = []
        async with httpx.AsyncClient(timeout=self._timeout()) as http:
            for raw_base_url in self.base_urls:
                base_url = raw_base_url.rstrip("/")
                try:
                    try:
                        model = await self._model_for(http, base_url)
                    except (
                        InferenceBadResponse,
                        httpx.HTTPStatusError,
                        ValueError,
                        KeyError,
                        TypeError,
                    ) as error:
                        # A server that cannot say what it serves is skipped like one that is down.
                        failures.append(f"{base_url}: cannot list its models ({error.__class__.__name__})")
                        logger.warning("Inference server %s did not list its models: %s", base_url, error)
                        continue
                    payload = {
                        "model": model,
                        "messages": request.messages,
                        "max_tokens": request.max_tokens,
                        "temperature": request.temperature,
                        "stream": True,
                        "stream_options": {"include_usage": True},
                    }
                    async with aconnect_sse(
                        http, "POST", f"{base_url}/chat/completions", json=payload, headers=self._headers()
                    ) as source:
                        response = source.response
                        if response.status_code >= 500:
                            body = (await response.aread()).decode(errors="replace")[:300]
                            failures.append(f"{base_url}: HTTP {response.status_code} {body}")
                            logger.warning("Inference server %s answered %s", base_url, response.status_code)
                            continue
                        if response.status_code >= 400:
                            body = (await response.aread()).decode(errors="replace")[:300]
                            raise InferenceRejected(
                                f"{base_url} refused the request: {response.status_code} {body}"
                            )
                        async for event in _events(source.aiter_sse(), model):
                            yield event
                        return
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                    failures.append(f"{base_url}: {error.__class__.__name__}")
                    logger.warning("Inference server %s unreachable: %s", base_url, error)
                except httpx.TimeoutException as error:
                    raise InferenceTimeout(f"{base_url}: {error.__class__.__name__}") from error
                except httpx.HTTPStatusError as error:
                    failures.append(f"{base_url}: HTTP {error.response.status_code}")
                except SSEError as error:
                    raise InferenceBadResponse(
                        f"{base_url} did not answer with an event stream: {error}"
                    ) from error
                except (httpx.RemoteProtocolError, httpx.ReadError) as error:
                    raise InferenceUnavailable(f"{base_url} closed the stream: {error}") from error
        raise InferenceUnavailable("No inference server answered: " + "; ".join(failures))


async def _events(sse_events: AsyncIterator[Any], model: str) -> AsyncIterator[StreamEvent]:
    """Turn OpenAI chat-completion chunks into stream events; garbage raises InferenceBadResponse."""
    finished = False
    async for sse in sse_events:
        if sse.data.strip() == "[DONE]":
            return
        try:
            chunk = json.loads(sse.data)
        except json.JSONDecodeError as error:
            raise InferenceBadResponse(f"A chunk was not JSON: {sse.data[:100]!r}") from error
        if not isinstance(chunk, dict):
            raise InferenceBadResponse(f"A chunk was not an object: {sse.data[:100]!r}")
        if "error" in chunk:
            raise InferenceBadResponse(f"The server reported an error mid-stream: {chunk['error']}")
        event = StreamEvent(model=str(chunk.get("model") or model))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            event.prompt_tokens = usage.get("prompt_tokens")
            event.completion_tokens = usage.get("completion_tokens")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise InferenceBadResponse(f"A chunk had no choices: {sse.data[:100]!r}")
        if choices:
            choice = choices[0]
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                raise InferenceBadResponse(f"A chunk had no delta: {sse.data[:100]!r}")
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                raise InferenceBadResponse("A chunk's content was not text.")
            event.text = content or ""
            event.finish_reason = choice.get("finish_reason")
            finished = finished or bool(event.finish_reason)
        yield event
    if not finished:
        raise InferenceBadResponse("The stream ended without finishing the reply.")
