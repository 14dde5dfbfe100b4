"""An async streaming client for OpenAI-compatible chat servers (vLLM, llama.cpp), with fail-over.

Each server gets a short deadline (`response_timeout`) for its response headers and first event;
one that times out, drops the connection, answers 5xx or garbage before that first event is left
for the next `INFERENCE_BASE_URL`, and a per-process registry keeps it at the back of the line for
a cool-down, so that later replies go straight to a healthy server. After the first event nothing
fails over: another server would repeat the text the customer already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from httpx_sse import SSEError, aconnect_sse

from cs_platform.logs import REQUEST_ID_HEADER, request_id_get
from inference.errors import (
    InferenceBadResponse,
    InferenceError,
    InferenceRejected,
    InferenceTimeout,
    InferenceUnavailable,
)

if TYPE_CHECKING:
    from knowledge.retrieval import Source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    max_tokens: int
    # None: the server's own default (a proxied caller that gave none).
    temperature: float | None
    # What retrieval found, numbered in the prompt from 1 in this order: the reply's markers ([1]) are
    # read back against it. Never sent to the server: the prompt already holds them.
    sources: tuple[Source, ...] = ()
    # False on the "nothing found" path (the prompt told the model so): the reply is marked unanswered.
    grounding_found: bool = True
    # OpenAI function tools offered to the model (the handoff tool); sent only when there are any, with
    # tool_choice "auto": a server started without tool calling (llama.cpp's default) is never asked.
    tools: tuple[dict[str, Any], ...] = ()
    # Further sampling options sent as they are (the gateway's callers' top_p, stop, seed, penalties).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made, gathered from its streamed pieces.

    `arguments` is the JSON text as the model wrote it, unparsed: a model may write it badly, and what
    to do then is the caller's decision.
    """

    name: str
    arguments: str = ""
    id: str = ""


@dataclass
class StreamEvent:
    """One thing read from the stream: a piece of text, or the usage and finish at the end.

    A chunk that carried only pieces of a tool call is an event without text and with
    `tool_call_delta`; the calls themselves, whole, come on the event that carries the finish.
    """

    text: str = ""
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    tool_call_delta: bool = False
    tool_calls: list[ToolCall] = field(default_factory=list)


class FailureKind(StrEnum):
    """Why a server was last counted as failing (a metrics label: no URLs, no exception text)."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    CLOSED = "closed"
    SERVER_ERROR = "server_error"
    BAD_RESPONSE = "bad_response"
    NO_MODELS = "no_models"


class ServerState(StrEnum):
    HEALTHY = "healthy"
    COOLING_DOWN = "cooling_down"


def server_label(base_url: str) -> str:
    """`host:port` of a server URL: names it in metrics and logs without credentials or path."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{host}:{port}"


@dataclass(frozen=True)
class ServerHealth:
    """What this process has seen of one inference server."""

    base_url: str
    label: str
    consecutive_failures: int = 0
    last_failure: FailureKind | None = None
    # time.monotonic() until which the server is tried only after every healthy one.
    cooling_until: float = 0.0

    def state(self, now: float) -> ServerState:
        return ServerState.COOLING_DOWN if now < self.cooling_until else ServerState.HEALTHY

    def cooldown_remaining(self, now: float) -> float:
        return max(0.0, self.cooling_until - now)


class ServerRegistry:
    """Per-process health of the inference servers: plain data and a lock, bound to no event loop.

    Celery workers, web processes and threads each keep their own; nothing here talks to Redis,
    so a routing decision costs nothing and survives a Redis outage.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._servers: dict[str, ServerHealth] = {}

    def _get(self, base_url: str) -> ServerHealth:
        base_url = base_url.rstrip("/")
        health = self._servers.get(base_url)
        if health is None:
            health = self._servers[base_url] = ServerHealth(base_url=base_url, label=server_label(base_url))
        return health

    def health(self, base_url: str) -> ServerHealth:
        with self._lock:
            return self._get(base_url)

    def snapshot(self, base_urls: Sequence[str]) -> list[ServerHealth]:
        """The health of each server, in the order given."""
        with self._lock:
            return [self._get(base_url) for base_url in base_urls]

    def order(self, base_urls: Sequence[str]) -> list[str]:
        """Healthy servers in the configured order, then those cooling down, the soonest back first.

        A server cooling down is still tried when every healthy one failed: a reply should not fail
        at once just because every server failed a moment ago.
        """
        now = self.clock()
        with self._lock:
            servers = [self._get(base_url) for base_url in dict.fromkeys(u.rstrip("/") for u in base_urls)]
        healthy = [s.base_url for s in servers if s.state(now) is ServerState.HEALTHY]
        cooling = sorted(
            (s for s in servers if s.state(now) is ServerState.COOLING_DOWN), key=lambda s: s.cooling_until
        )
        return healthy + [s.base_url for s in cooling]

    def record_failure(self, base_url: str, kind: FailureKind, cooldown_seconds: float) -> None:
        with self._lock:
            health = self._get(base_url)
            self._servers[health.base_url] = replace(
                health,
                consecutive_failures=health.consecutive_failures + 1,
                last_failure=kind,
                cooling_until=self.clock() + cooldown_seconds,
            )

    def record_success(self, base_url: str) -> None:
        """The server answered: back in rotation (the last failure's kind is kept for metrics)."""
        with self._lock:
            health = self._get(base_url)
            if health.consecutive_failures or health.cooling_until:
                self._servers[health.base_url] = replace(health, consecutive_failures=0, cooling_until=0.0)

    def clear(self) -> None:
        with self._lock:
            self._servers.clear()


# The process's registry. Data only: safe to create at import, unlike an HTTP client, which belongs
# to the event loop it was created on.
server_registry = ServerRegistry()


def _setting(name: str, fallback: float) -> Callable[[], float]:
    def read() -> float:
        return float(getattr(settings, name, fallback)) if settings.configured else fallback

    return read


class _ServerFailed(Exception):
    """One server failed before its first event; the next one may be tried."""

    def __init__(self, kind: FailureKind, detail: str, error_class: type[InferenceError]) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.error_class = error_class


@dataclass
class InferenceClient:
    base_urls: Sequence[str]
    model: str = ""
    api_key: str = ""
    connect_timeout: float = 5.0
    # httpx's read timeout is only a backstop: the caller enforces first-token and between-token limits.
    read_timeout: float = 600.0
    # Deadline for a server's response headers and first event while another server is left to try.
    response_timeout: float = field(default_factory=_setting("INFERENCE_SERVER_RESPONSE_TIMEOUT", 10.0))
    cooldown_seconds: float = field(default_factory=_setting("INFERENCE_SERVER_COOLDOWN_SECONDS", 30.0))
    # A pooled client shared by many replies on one event loop; owned (and closed) by the caller.
    # Without one, each stream opens and closes its own.
    http: httpx.AsyncClient | None = None
    registry: ServerRegistry = field(default_factory=lambda: server_registry)
    _models: dict[str, str] = field(default_factory=dict)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        # The reply's request id (cs_platform/logs.py): the server's logs (vLLM's) can name it too.
        request_id = request_id_get()
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        return headers

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_timeout, read=self.read_timeout, write=30.0, pool=5.0)

    async def _model_for(self, http: httpx.AsyncClient, base_url: str) -> str:
        """The configured model, or the first one the server lists (llama.cpp and vLLM serve one)."""
        if self.model:
            return self.model
        if base_url not in self._models:
            try:
                response = await http.get(
                    f"{base_url}/models", headers=self._headers(), timeout=self._timeout()
                )
                response.raise_for_status()
                models = response.json().get("data") or []
                if not models:
                    raise InferenceBadResponse(f"{base_url} lists no models.")
                self._models[base_url] = str(models[0]["id"])
            except (InferenceBadResponse, httpx.HTTPStatusError, ValueError, KeyError, TypeError) as error:
                # A server that cannot say what it serves is skipped like one that is down.
                raise _ServerFailed(
                    FailureKind.NO_MODELS,
                    f"cannot list its models ({error.__class__.__name__})",
                    InferenceUnavailable,
                ) from error
        return self._models[base_url]

    async def served_model(self) -> str:
        """The model's name: the configured one, or the one the first server in line lists."""
        if self.model:
            return self.model
        http = self.http or httpx.AsyncClient(timeout=self._timeout())
        try:
            for base_url in self.registry.order(self.base_urls):
                # A hung server gets the fail-over deadline, not the stream's long read timeout.
                with contextlib.suppress(_ServerFailed, httpx.HTTPError, TimeoutError):
                    async with asyncio.timeout(self.response_timeout):
                        return await self._model_for(http, base_url)
        finally:
            if http is not self.http:
                await http.aclose()
        raise InferenceUnavailable("No inference server said which model it serves.")

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream a chat completion, trying each server in turn until one sends its first event.

        Fail-over happens only before the first event: after that, another server would repeat text.
        Closing the iterator closes the HTTP stream, so the server stops generating too.
        """
        if self.http is not None:
            async with contextlib.aclosing(self._stream(self.http, request)) as events:
                async for event in events:
                    yield event
            return
        async with (
            httpx.AsyncClient(timeout=self._timeout()) as http,
            contextlib.aclosing(self._stream(http, request)) as events,
        ):
            async for event in events:
                yield event

    async def _stream(
        self, http: httpx.AsyncClient, request: ChatRequest
    ) -> AsyncGenerator[StreamEvent, None]:
        failures: list[str] = []
        error_classes: set[type[InferenceError]] = set()
        candidates = self.registry.order(self.base_urls)
        for position, base_url in enumerate(candidates):
            deadline = self._deadline(
                base_url, last=position == len(candidates) - 1, alone=len(candidates) == 1
            )
            async with contextlib.AsyncExitStack() as stack:
                started = time.monotonic()
                try:
                    events, first = await self._open(stack, http, base_url, request, deadline)
                except asyncio.CancelledError:
                    # The caller gave up (its first-token timeout, or a cancel) on the last server left:
                    # silent past the deadline the others get, it is set aside like them.
                    if time.monotonic() - started >= self.response_timeout:
                        self.registry.record_failure(base_url, FailureKind.TIMEOUT, self.cooldown_seconds)
                        logger.warning(
                            "Inference server %s sent no first event in %.1f s before the reply gave up",
                            base_url,
                            time.monotonic() - started,
                        )
                    raise
                except _ServerFailed as failure:
                    self.registry.record_failure(base_url, failure.kind, self.cooldown_seconds)
                    logger.warning(
                        "Inference server %s failed before answering (%s): %s; %s",
                        base_url,
                        failure.kind,
                        failure.detail,
                        "trying the next" if position < len(candidates) - 1 else "none left",
                    )
                    failures.append(f"{base_url}: {failure.detail}")
                    error_classes.add(failure.error_class)
                    continue
                self.registry.record_success(base_url)
                logger.info(
                    "inference.first_event",
                    extra={
                        "server": server_label(base_url),
                        "model": first.model or None,
                        "wait_ms": round((time.monotonic() - started) * 1000, 1),
                    },
                )
                yield first
                try:
                    async for event in events:
                        yield event
                except (httpx.RemoteProtocolError, httpx.ReadError) as error:
                    self.registry.record_failure(base_url, FailureKind.CLOSED, self.cooldown_seconds)
                    raise InferenceUnavailable(f"{base_url} closed the stream: {error}") from error
                except httpx.TimeoutException as error:
                    self.registry.record_failure(base_url, FailureKind.TIMEOUT, self.cooldown_seconds)
                    raise InferenceTimeout(f"{base_url}: {error.__class__.__name__}") from error
                except InferenceBadResponse:
                    self.registry.record_failure(base_url, FailureKind.BAD_RESPONSE, self.cooldown_seconds)
                    raise
                return
        # One kind of failure everywhere keeps its code (garbage is inference_bad_response); a mix is
        # inference_unavailable.
        error_class = error_classes.pop() if len(error_classes) == 1 else InferenceUnavailable
        raise error_class("No inference server answered: " + "; ".join(failures))

    def _deadline(self, base_url: str, *, last: bool, alone: bool) -> float | None:
        """The fail-over deadline for this server's first event, or None for the caller's own.

        A healthy last server has no deadline of its own: the caller's first-token timeout decides
        (a slow prompt is not a failure). One cooling down failed moments ago (a hung server is the
        usual case), so as the last one left it still gets the short deadline: otherwise a reply
        whose healthy server just failed would wait the whole first-token time on it. The only
        server configured keeps the caller's time, though: with nowhere to fail over to, a short
        deadline would only fail its slow prompts and keep it cooling down.
        """
        if not last:
            return self.response_timeout
        if alone:
            return None
        cooling = self.registry.health(base_url).state(self.registry.clock()) is ServerState.COOLING_DOWN
        return self.response_timeout if cooling else None

    async def _open(
        self,
        stack: contextlib.AsyncExitStack,
        http: httpx.AsyncClient,
        base_url: str,
        request: ChatRequest,
        deadline: float | None,
    ) -> tuple[AsyncGenerator[StreamEvent, None], StreamEvent]:
        """Send the request and read up to the first event, within `deadline` seconds if given.

        The stream stays open on `stack`; every way this server can fail raises `_ServerFailed`,
        except a 4xx, which another server would refuse too (`InferenceRejected`).
        """
        try:
            async with asyncio.timeout(deadline):
                model = await self._model_for(http, base_url)
                payload = {
                    **request.options,
                    "model": model,
                    "messages": request.messages,
                    "max_tokens": request.max_tokens,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                if request.temperature is not None:
                    payload["temperature"] = request.temperature
                if request.tools:
                    payload["tools"] = list(request.tools)
                    payload["tool_choice"] = "auto"
                source = await stack.enter_async_context(
                    aconnect_sse(
                        http,
                        "POST",
                        f"{base_url}/chat/completions",
                        json=payload,
                        headers=self._headers(),
                        timeout=self._timeout(),
                    )
                )
                response = source.response
                if response.status_code >= 500:
                    body = (await response.aread()).decode(errors="replace")[:300]
                    raise _ServerFailed(
                        FailureKind.SERVER_ERROR, f"HTTP {response.status_code} {body}", InferenceUnavailable
                    )
                if response.status_code >= 400:
                    body = (await response.aread()).decode(errors="replace")[:300]
                    raise InferenceRejected(f"{base_url} refused the request: {response.status_code} {body}")
                events = _events(source.aiter_sse(), model)
                stack.push_async_callback(events.aclose)
                try:
                    first = await anext(events)
                except StopAsyncIteration:
                    raise InferenceBadResponse("The stream ended before its first event.") from None
                return events, first
        except TimeoutError as error:
            raise _ServerFailed(
                FailureKind.TIMEOUT, f"no first event within {deadline} s", InferenceTimeout
            ) from error
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise _ServerFailed(
                FailureKind.CONNECT, error.__class__.__name__, InferenceUnavailable
            ) from error
        except httpx.TimeoutException as error:
            raise _ServerFailed(FailureKind.TIMEOUT, error.__class__.__name__, InferenceTimeout) from error
        except SSEError as error:  # an httpx.TransportError, so first
            raise _ServerFailed(
                FailureKind.BAD_RESPONSE,
                f"did not answer with an event stream: {error}",
                InferenceBadResponse,
            ) from error
        except httpx.TransportError as error:
            # RemoteProtocolError, ReadError, WriteError: the connection closed before the first event.
            raise _ServerFailed(
                FailureKind.CLOSED,
                f"closed the connection ({error.__class__.__name__})",
                InferenceUnavailable,
            ) from error
        except InferenceBadResponse as error:
            raise _ServerFailed(FailureKind.BAD_RESPONSE, error.detail, InferenceBadResponse) from error


class _ToolCallPieces:
    """The pieces of the tool calls a stream sends (`delta.tool_calls`), gathered by index.

    OpenAI-compatible servers (vLLM's tool parsers, llama.cpp) send a call's id and name in its first
    piece and its arguments' JSON text in many; a piece that cannot be read is skipped, since a call
    half-read is still worth more than a reply failed at its very end.
    """

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, pieces: Any) -> bool:
        """Take in one chunk's `delta.tool_calls`; True if it carried any piece."""
        if not isinstance(pieces, list):
            if pieces is not None:
                logger.warning("A chunk's tool_calls was not a list: %r", str(pieces)[:100])
            return False
        took = False
        for position, piece in enumerate(pieces):
            if not isinstance(piece, dict):
                continue
            index = piece.get("index", position)
            if not isinstance(index, int):
                index = position
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            if isinstance(piece.get("id"), str):
                call["id"] = call["id"] or piece["id"]
            function = piece.get("function")
            if isinstance(function, dict):
                name, arguments = function.get("name"), function.get("arguments")
                if isinstance(name, str):
                    call["name"] += name
                if isinstance(arguments, str):
                    call["arguments"] += arguments
                elif isinstance(arguments, dict):
                    # Some servers send the arguments as an object rather than its JSON text.
                    call["arguments"] += json.dumps(arguments, ensure_ascii=False)
            took = True
        return took

    def take(self) -> list[ToolCall]:
        """The calls gathered so far, in index order, and forget them."""
        calls = [
            ToolCall(name=call["name"].strip(), arguments=call["arguments"], id=call["id"])
            for _, call in sorted(self._calls.items())
        ]
        self._calls.clear()
        return calls


async def _events(sse_events: AsyncIterator[Any], model: str) -> AsyncGenerator[StreamEvent, None]:
    """Turn OpenAI chat-completion chunks into stream events; garbage raises InferenceBadResponse."""
    finished = False
    tool_calls = _ToolCallPieces()
    async for sse in sse_events:
        if sse.data.strip() == "[DONE]":
            # Read the body to its end (the terminating chunk): only a response read to the end leaves
            # its connection in the pool for the next reply; one closed early closes the connection.
            async for _ in sse_events:
                pass
            left = tool_calls.take()
            if left:
                # Calls whose finish never named them (a server that sent it first): still the model's.
                yield StreamEvent(model=model, tool_calls=left)
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
            event.tool_call_delta = tool_calls.add(delta.get("tool_calls"))
            event.finish_reason = choice.get("finish_reason")
            finished = finished or bool(event.finish_reason)
            if event.finish_reason:
                event.tool_calls = tool_calls.take()
        yield event
    if not finished:
        raise InferenceBadResponse("The stream ended without finishing the reply.")
