"""The streaming client for OpenAI-compatible servers, against the scripted inference server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from cs_platform.processes import free_port
from inference.client import (
    ChatRequest,
    FailureKind,
    InferenceClient,
    ServerRegistry,
    ServerState,
    StreamEvent,
    ToolCall,
    _events,
    server_label,
    server_registry,
)
from inference.errors import (
    InferenceBadResponse,
    InferenceError,
    InferenceRejected,
    InferenceTimeout,
    InferenceUnavailable,
)
from tests.http_servers import base_url, serving
from tests.scripted_inference import Script, ScriptedInferenceServer, ScriptedToolCall

REQUEST = ChatRequest(
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my parcel?"}],
    max_tokens=64,
    temperature=0.2,
)


@pytest.fixture
def server() -> Iterator[ScriptedInferenceServer]:
    with ScriptedInferenceServer() as running:
        yield running


@pytest.fixture
def other_server() -> Iterator[ScriptedInferenceServer]:
    with ScriptedInferenceServer() as running:
        yield running


class _JsonHandler(BaseHTTPRequestHandler):
    """Answers every request with 200 and a JSON body, as a server without streaming would."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "json-model", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}]})

    def _send(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@pytest.fixture
def json_server() -> Iterator[str]:
    with serving(_JsonHandler) as server:
        yield f"{base_url(server)}/v1"


@pytest.fixture(autouse=True)
def _forget_server_health() -> Iterator[None]:
    """Clients built without a registry share the process's: keep one test's failures from the next."""
    yield
    server_registry.clear()


class Clock:
    """A monotonic clock the test moves by hand, so a cool-down ends without waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> ServerRegistry:
    return ServerRegistry(clock=clock)


class TcpServer:
    """A TCP server that never speaks HTTP properly: it accepts every connection, reads the request,
    then holds the connection without a word (`hold`, a hung or overloaded vLLM), closes it without
    an answer (`close`), or sends event-stream headers and closes before the first event (`headers`).
    """

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._condition:
                self.connections += 1
                self._condition.notify_all()
            if self.behaviour == "hold":
                self._held.append(connection)
                continue
            connection.settimeout(5)
            _read_request(connection)
            if self.behaviour == "headers":
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
            connection.close()

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self.connections >= count, timeout):
                raise AssertionError(f"expected {count} connection(s), got {self.connections}")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self._held:
            connection.close()


def _read_request(connection: socket.socket) -> None:
    """Read one request, body included, so that closing sends a FIN rather than a reset."""
    data = b""
    while b"\r\n\r\n" not in data:
        received = connection.recv(65536)
        if not received:
            return
        data += received
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        received = connection.recv(65536)
        if not received:
            return
        body += received


@pytest.fixture
def hung_server() -> Iterator[TcpServer]:
    running = TcpServer("hold")
    yield running
    running.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


async def collect(client: InferenceClient, into: list[StreamEvent] | None = None) -> list[StreamEvent]:
    """The events of one stream; with `into`, those read before an error are kept there."""
    events = into if into is not None else []
    async for event in client.stream_chat(REQUEST):
        events.append(event)
    return events


async def test_it_streams_text_then_the_finish_then_the_usage(server: ScriptedInferenceServer):
    server.enqueue(
        Script(tokens=["Hel", "lo"], usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11})
    )
    client = InferenceClient(base_urls=[server.base_url], model="scripted-model")

    events = await collect(client)

    assert events == [
        StreamEvent(text="", model="scripted-model"),
        StreamEvent(text="Hel", model="scripted-model"),
        StreamEvent(text="lo", model="scripted-model"),
        StreamEvent(text="", model="scripted-model", finish_reason="stop"),
        StreamEvent(text="", model="scripted-model", prompt_tokens=9, completion_tokens=2),
    ]


async def test_it_gathers_streamed_tool_calls_by_index_and_gives_them_whole_with_the_finish(
    server: ScriptedInferenceServer,
):
    server.enqueue(
        Script(
            tokens=["One", " moment."],
            tool_calls=[
                ScriptedToolCall(
                    name="handoff_to_human", arguments=['{"rea', 'son": "wants', ' a person"}'], id="a"
                ),
                ScriptedToolCall(name="note", arguments=["{}"], id="b"),
            ],
            usage={"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
        )
    )
    client = InferenceClient(base_urls=[server.base_url], model="scripted-model")

    events = await collect(client)

    texts = [event.text for event in events if event.text]
    assert texts == ["One", " moment."]
    # Each piece is progress without text; the calls come whole on the finish, once.
    pieces = [event for event in events if event.tool_call_delta]
    assert len(pieces) == 6
    assert all(event.text == "" and event.tool_calls == [] for event in pieces)
    [finish] = [event for event in events if event.finish_reason]
    assert finish.finish_reason == "tool_calls"
    assert finish.tool_calls == [
        ToolCall(name="handoff_to_human", arguments='{"reason": "wants a person"}', id="a"),
        ToolCall(name="note", arguments="{}", id="b"),
    ]
    assert sum(len(event.tool_calls) for event in events) == 2
    assert events[-1].prompt_tokens == 9


async def test_it_offers_tools_only_when_the_request_has_some(server: ScriptedInferenceServer):
    tool = {"type": "function", "function": {"name": "handoff_to_human", "parameters": {"type": "object"}}}
    client = InferenceClient(base_urls=[server.base_url], model="served-model")

    async for _ in client.stream_chat(replace(REQUEST, tools=(tool,))):
        pass
    await collect(client)

    with_tools, without = server.chat_requests
    assert (with_tools.json["tools"], with_tools.json["tool_choice"]) == ([tool], "auto")
    assert "tools" not in without.json
    assert "tool_choice" not in without.json


async def test_it_reads_tool_calls_sent_with_arguments_as_an_object_and_skips_unreadable_pieces():
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": "garbage"}, "finish_reason": None}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            "not a piece",
                            {
                                "index": 0,
                                "function": {"name": "handoff_to_human", "arguments": {"reason": "x"}},
                            },
                        ]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        },
    ]

    async def sse() -> Any:
        for chunk in chunks:
            yield _Sse(json.dumps(chunk))
        yield _Sse("[DONE]")

    events = [event async for event in _events(sse(), "m")]

    assert events[0].tool_call_delta is False
    assert events[-1].tool_calls == [ToolCall(name="handoff_to_human", arguments='{"reason": "x"}')]


class _Sse:
    def __init__(self, data: str) -> None:
        self.data = data


async def test_it_sends_an_openai_streaming_request(server: ScriptedInferenceServer):
    client = InferenceClient(base_urls=[server.base_url + "/"], model="served-model")

    await collect(client)

    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["accept"] == "text/event-stream"
    assert "authorization" not in request.headers
    assert request.json == {
        "model": "served-model",
        "messages": REQUEST.messages,
        "max_tokens": 64,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_it_reports_the_model_the_server_names_in_its_chunks(server: ScriptedInferenceServer):
    server.enqueue(Script(tokens=["x"], model="actual-model"))
    client = InferenceClient(base_urls=[server.base_url], model="alias")

    events = await collect(client)

    assert {event.model for event in events} == {"actual-model"}


async def test_it_discovers_the_model_from_the_server_when_none_is_configured(
    server: ScriptedInferenceServer,
):
    client = InferenceClient(base_urls=[server.base_url], model="")

    await collect(client)
    await collect(client)

    # Asked once, then remembered for that server.
    assert [(request.method, request.path) for request in server.requests] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions"),
    ]
    assert [request.json["model"] for request in server.chat_requests] == ["scripted-model"] * 2


async def test_it_skips_a_server_that_lists_no_models(
    server: ScriptedInferenceServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(server, "models_payload", lambda: {"object": "list", "data": []})
    client = InferenceClient(base_urls=[server.base_url], model="")

    with pytest.raises(InferenceUnavailable, match="cannot list its models"):
        await collect(client)

    assert server.chat_requests == []


async def test_it_fails_over_when_a_server_cannot_list_its_models(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(server, "models_payload", lambda: {"object": "list", "data": []})
    other_server.enqueue(Script(tokens=["From ", "the ", "second."]))
    client = InferenceClient(base_urls=[server.base_url, other_server.base_url], model="")

    events = await collect(client)

    assert "".join(event.text for event in events) == "From the second."
    assert server.chat_requests == []
    assert len(other_server.chat_requests) == 1


async def test_it_sends_the_api_key_as_a_bearer_token(server: ScriptedInferenceServer):
    client = InferenceClient(base_urls=[server.base_url], model="", api_key="sk-secret")

    await collect(client)

    assert [request.headers["authorization"] for request in server.requests] == ["Bearer sk-secret"] * 2


async def test_it_raises_rejected_on_a_4xx_without_trying_the_next_server(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer
):
    server.enqueue(Script(status=400, error_message="maximum context length exceeded"))
    client = InferenceClient(base_urls=[server.base_url, other_server.base_url], model="m")

    with pytest.raises(InferenceRejected) as raised:
        await collect(client)

    assert raised.value.code == "inference_rejected"
    assert "400" in raised.value.detail
    assert "maximum context length exceeded" in raised.value.detail
    assert other_server.requests == []


async def test_it_fails_over_on_a_5xx_and_an_unreachable_server(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer
):
    other_server.enqueue(Script(status=502))
    server.enqueue(Script(tokens=["ok"]))
    client = InferenceClient(base_urls=[dead_url(), other_server.base_url, server.base_url], model="m")

    events = await collect(client)

    assert "".join(event.text for event in events) == "ok"
    assert len(other_server.chat_requests) == 1
    assert len(server.chat_requests) == 1


async def test_it_raises_unavailable_naming_every_server_when_none_answers(
    server: ScriptedInferenceServer,
):
    server.enqueue(Script(status=500, error_message="GPU fell off the bus"))
    unreachable = dead_url()
    client = InferenceClient(base_urls=[unreachable, server.base_url], model="m")

    with pytest.raises(InferenceUnavailable) as raised:
        await collect(client)

    assert raised.value.code == "inference_unavailable"
    assert unreachable in raised.value.detail
    assert f"{server.base_url}: HTTP 500" in raised.value.detail
    assert "GPU fell off the bus" in raised.value.detail


async def test_it_raises_bad_response_on_a_body_that_is_not_json_events(server: ScriptedInferenceServer):
    server.enqueue(Script(raw_body=b"data: \xff\xfe garbage\n\nnot even sse"))
    client = InferenceClient(base_urls=[server.base_url], model="m")

    with pytest.raises(InferenceBadResponse, match="not JSON"):
        await collect(client)


async def test_it_raises_bad_response_when_the_answer_is_not_an_event_stream(json_server: str):
    client = InferenceClient(base_urls=[json_server], model="m")

    with pytest.raises(InferenceBadResponse, match="did not answer with an event stream"):
        await collect(client)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'data: {"error": {"message": "boom"}}\n\n', "reported an error mid-stream"),
        (b'data: {"id": "x"}\n\n', "had no choices"),
        (b'data: {"choices": [{"index": 0}]}\n\n', "had no delta"),
        (b'data: {"choices": [{"delta": {"content": 5}}]}\n\n', "content was not text"),
        (b"data: [1, 2]\n\n", "not an object"),
    ],
)
async def test_it_raises_bad_response_on_a_chunk_that_is_not_a_chat_completion_chunk(
    body: bytes, message: str, server: ScriptedInferenceServer
):
    server.enqueue(Script(raw_body=body))
    client = InferenceClient(base_urls=[server.base_url], model="m")

    with pytest.raises(InferenceBadResponse, match=message):
        await collect(client)


async def test_it_raises_bad_response_when_the_stream_ends_without_finishing(server: ScriptedInferenceServer):
    server.enqueue(Script(raw_body=b'data: {"choices": [{"index": 0, "delta": {"content": "Half"}}]}\n\n'))
    client = InferenceClient(base_urls=[server.base_url], model="m")
    events: list[StreamEvent] = []

    with pytest.raises(InferenceBadResponse, match="ended without finishing"):
        await collect(client, into=events)

    assert [event.text for event in events] == ["Half"]


async def test_it_raises_bad_response_on_a_malformed_chunk_after_some_text(server: ScriptedInferenceServer):
    server.enqueue(Script(tokens=["a", "b", "c"], malformed_after=2))
    client = InferenceClient(base_urls=[server.base_url], model="m")
    events: list[StreamEvent] = []

    with pytest.raises(InferenceBadResponse):
        await collect(client, into=events)

    assert [event.text for event in events] == ["", "a", "b"]


async def test_it_raises_unavailable_when_the_server_drops_the_stream_midway(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer
):
    server.enqueue(Script(tokens=["one", "two", "three"], disconnect_after=2))
    client = InferenceClient(base_urls=[server.base_url, other_server.base_url], model="m")
    events: list[StreamEvent] = []

    with pytest.raises(InferenceUnavailable, match="closed the stream") as raised:
        await collect(client, into=events)

    assert isinstance(raised.value, InferenceError)
    assert [event.text for event in events] == ["", "one", "two"]
    assert other_server.requests == []


async def test_it_raises_timeout_when_the_server_is_silent_longer_than_the_read_timeout(
    server: ScriptedInferenceServer,
):
    server.enqueue(Script(first_token_delay=30))
    client = InferenceClient(base_urls=[server.base_url], model="m", read_timeout=0.3)

    with pytest.raises(InferenceTimeout):
        await collect(client)

    await server.wait_for_disconnects_async(1, timeout=5)


async def test_it_closes_the_http_stream_when_the_reader_stops_early(server: ScriptedInferenceServer):
    server.enqueue(Script(tokens=["one", "two"], stall_after=1, stall_seconds=30))
    client = InferenceClient(base_urls=[server.base_url], model="m")
    stream = client.stream_chat(REQUEST)

    texts = []
    async for event in stream:
        texts.append(event.text)
        if event.text:
            break
    await stream.aclose()  # type: ignore[attr-defined]

    assert texts == ["", "one"]
    await server.wait_for_disconnects_async(1, timeout=5)
    [request] = server.disconnects
    assert not request.completed


# --- fail-over before the first event, and the cool-down ------------------------------------------

# A safety bound on a test, far above the per-server deadline: without fail-over the client would
# wait for the caller's first-token timeout (a minute by default) or its read backstop.
NO_FAIL_OVER_BOUND = 10


def text_of(events: list[StreamEvent]) -> str:
    return "".join(event.text for event in events)


async def test_it_fails_over_from_a_server_that_accepts_the_connection_and_never_answers(
    hung_server: TcpServer, server: ScriptedInferenceServer, registry: ServerRegistry
):
    server.enqueue(Script(tokens=["From ", "the ", "second."]))
    client = InferenceClient(
        base_urls=[hung_server.base_url, server.base_url], model="m", response_timeout=0.5, registry=registry
    )

    async with asyncio.timeout(NO_FAIL_OVER_BOUND):
        events = await collect(client)

    assert text_of(events) == "From the second."
    assert hung_server.connections == 1
    assert len(server.chat_requests) == 1
    health = registry.health(hung_server.base_url)
    assert (health.state(registry.clock()), health.last_failure, health.consecutive_failures) == (
        ServerState.COOLING_DOWN,
        FailureKind.TIMEOUT,
        1,
    )
    assert registry.health(server.base_url).state(registry.clock()) is ServerState.HEALTHY


async def test_it_fails_over_from_a_server_that_sends_headers_and_then_no_event(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer, registry: ServerRegistry
):
    server.enqueue(Script(first_token_delay=30))
    other_server.enqueue(Script(tokens=["ok"]))
    client = InferenceClient(
        base_urls=[server.base_url, other_server.base_url], model="m", response_timeout=0.5, registry=registry
    )

    async with asyncio.timeout(NO_FAIL_OVER_BOUND):
        events = await collect(client)

    assert text_of(events) == "ok"
    # The silent stream was closed, so that server stops working on it.
    await server.wait_for_disconnects_async(1, timeout=5)
    assert len(other_server.chat_requests) == 1


async def test_it_fails_over_from_a_server_that_hangs_listing_its_models(
    hung_server: TcpServer, server: ScriptedInferenceServer, registry: ServerRegistry
):
    client = InferenceClient(
        base_urls=[hung_server.base_url, server.base_url], model="", response_timeout=0.5, registry=registry
    )

    async with asyncio.timeout(NO_FAIL_OVER_BOUND):
        events = await collect(client)

    assert text_of(events) == "Hello world"
    assert registry.health(hung_server.base_url).last_failure is FailureKind.TIMEOUT


@pytest.mark.parametrize("behaviour", ["close", "headers"])
async def test_it_fails_over_when_the_connection_closes_before_the_first_event(
    behaviour: str, server: ScriptedInferenceServer, registry: ServerRegistry
):
    closing = TcpServer(behaviour)
    server.enqueue(Script(tokens=["Still ", "answered."]))
    client = InferenceClient(base_urls=[closing.base_url, server.base_url], model="m", registry=registry)
    try:
        async with asyncio.timeout(NO_FAIL_OVER_BOUND):
            events = await collect(client)
    finally:
        closing.stop()

    assert text_of(events) == "Still answered."
    assert closing.connections == 1
    assert registry.health(closing.base_url).last_failure is FailureKind.CLOSED


async def test_it_fails_over_on_a_malformed_first_chunk(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer, registry: ServerRegistry
):
    server.enqueue(Script(raw_body=b"data: {not json\n\n"))
    other_server.enqueue(Script(tokens=["clean"]))
    client = InferenceClient(base_urls=[server.base_url, other_server.base_url], model="m", registry=registry)

    events = await collect(client)

    assert text_of(events) == "clean"
    assert registry.health(server.base_url).last_failure is FailureKind.BAD_RESPONSE


async def test_it_fails_over_from_a_server_that_does_not_answer_with_an_event_stream(
    json_server: str, server: ScriptedInferenceServer, registry: ServerRegistry
):
    client = InferenceClient(base_urls=[json_server, server.base_url], model="m", registry=registry)

    events = await collect(client)

    assert text_of(events) == "Hello world"
    assert registry.health(json_server).last_failure is FailureKind.BAD_RESPONSE


async def test_it_fails_over_on_a_500_and_sends_later_replies_straight_to_the_healthy_server(
    server: ScriptedInferenceServer,
    other_server: ScriptedInferenceServer,
    registry: ServerRegistry,
    clock: Clock,
):
    server.enqueue(Script(status=500, error_message="CUDA out of memory"))
    client = InferenceClient(
        base_urls=[server.base_url, other_server.base_url], model="m", cooldown_seconds=30, registry=registry
    )

    first = await collect(client)
    clock.now += 29
    second = await collect(client)

    assert text_of(first) == text_of(second) == "Hello world"
    assert len(server.chat_requests) == 1
    assert len(other_server.chat_requests) == 2
    assert registry.health(server.base_url).last_failure is FailureKind.SERVER_ERROR


async def test_it_skips_a_hung_server_during_its_cool_down_and_tries_it_again_after(
    hung_server: TcpServer, server: ScriptedInferenceServer, registry: ServerRegistry, clock: Clock
):
    client = InferenceClient(
        base_urls=[hung_server.base_url, server.base_url],
        model="m",
        response_timeout=0.5,
        cooldown_seconds=30,
        registry=registry,
    )
    async with asyncio.timeout(NO_FAIL_OVER_BOUND):
        await collect(client)
    assert hung_server.connections == 1

    clock.now += 29
    async with asyncio.timeout(NO_FAIL_OVER_BOUND):
        during = await collect(client)

    # Straight to the healthy server: the hung one was not even connected to.
    assert text_of(during) == "Hello world"
    assert hung_server.connections == 1
    assert len(server.chat_requests) == 2

    clock.now += 2
    async with asyncio.timeout(NO_FAIL_OVER_BOUND):
        after = await collect(client)

    assert text_of(after) == "Hello world"
    hung_server.wait_for_connections(2)
    assert len(server.chat_requests) == 3
    assert registry.health(hung_server.base_url).consecutive_failures == 2


async def test_it_still_tries_every_server_when_all_are_cooling_down(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer, registry: ServerRegistry
):
    server.enqueue(Script(status=503))
    other_server.enqueue(Script(status=503))
    client = InferenceClient(base_urls=[server.base_url, other_server.base_url], model="m", registry=registry)
    with pytest.raises(InferenceUnavailable):
        await collect(client)

    events = await collect(client)

    assert text_of(events) == "Hello world"
    # The one whose cool-down ends first (it failed first) is tried first.
    assert (len(server.chat_requests), len(other_server.chat_requests)) == (2, 1)
    assert registry.health(server.base_url).state(registry.clock()) is ServerState.HEALTHY
    assert registry.health(server.base_url).consecutive_failures == 0


async def test_it_gives_the_last_server_left_the_callers_whole_first_token_time(
    server: ScriptedInferenceServer, registry: ServerRegistry
):
    # A slow prompt on the only server (llama.cpp on a CPU) is not cut short by the fail-over deadline.
    server.enqueue(Script(tokens=["slow"], first_token_delay=0.8))
    client = InferenceClient(base_urls=[server.base_url], model="m", response_timeout=0.2, registry=registry)

    events = await collect(client)

    assert text_of(events) == "slow"


async def test_it_does_not_fail_over_when_the_stream_breaks_after_the_first_event(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer, registry: ServerRegistry
):
    # The role chunk has been passed on: another server's answer would start the reply over.
    server.enqueue(Script(tokens=["one"], disconnect_after=0))
    client = InferenceClient(base_urls=[server.base_url, other_server.base_url], model="m", registry=registry)
    events: list[StreamEvent] = []

    with pytest.raises(InferenceUnavailable, match="closed the stream"):
        await collect(client, into=events)

    assert events == [StreamEvent(text="", model="scripted-model")]
    assert other_server.requests == []
    # The next reply goes elsewhere.
    assert registry.health(server.base_url).last_failure is FailureKind.CLOSED
    assert registry.order([server.base_url, other_server.base_url]) == [
        other_server.base_url,
        server.base_url,
    ]


async def test_it_applies_the_response_deadline_only_up_to_the_first_event(
    server: ScriptedInferenceServer, other_server: ScriptedInferenceServer, registry: ServerRegistry
):
    server.enqueue(Script(tokens=["a", "b"], stall_after=1, stall_seconds=1.0))
    client = InferenceClient(
        base_urls=[server.base_url, other_server.base_url], model="m", response_timeout=0.3, registry=registry
    )

    events = await collect(client)

    assert text_of(events) == "ab"
    assert other_server.requests == []


async def test_it_streams_many_replies_through_one_injected_http_client(
    server: ScriptedInferenceServer, registry: ServerRegistry
):
    async with httpx.AsyncClient() as http:
        client = InferenceClient(base_urls=[server.base_url], model="m", http=http, registry=registry)

        first = await collect(client)
        second = await collect(client)

        # The caller owns the pooled client: a reply does not close it.
        assert not http.is_closed
    assert text_of(first) == text_of(second) == "Hello world"
    assert len(server.chat_requests) == 2


def test_it_labels_servers_by_host_and_port_without_credentials():
    assert server_label("http://user:sk-secret@10.0.0.5:8000/v1") == "10.0.0.5:8000"
    assert server_label("https://vllm.internal/v1") == "vllm.internal:443"
    assert server_label("http://[::1]:8081/v1") == "[::1]:8081"


async def test_it_sets_aside_the_last_server_when_the_caller_gives_up_on_its_silence(
    hung_server: TcpServer, registry: ServerRegistry
):
    client = InferenceClient(
        base_urls=[hung_server.base_url], model="m", response_timeout=0.2, registry=registry
    )
    quick = InferenceClient(
        base_urls=[hung_server.base_url], model="m", response_timeout=30, registry=registry
    )

    # As generation does at its first-token timeout: cancel the reader.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.6):
            await collect(client)
    assert registry.health(hung_server.base_url).last_failure is FailureKind.TIMEOUT

    # A caller that gives up before the deadline (a customer's cancel) sets nothing aside.
    registry.clear()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await collect(quick)
    assert registry.health(hung_server.base_url).consecutive_failures == 0


async def test_it_gives_a_cooling_down_server_the_short_deadline_even_as_the_last_one_left(
    hung_server: TcpServer, server: ScriptedInferenceServer, registry: ServerRegistry, clock: Clock
):
    client = InferenceClient(
        base_urls=[hung_server.base_url, server.base_url],
        model="m",
        response_timeout=0.3,
        cooldown_seconds=30,
        registry=registry,
    )
    async with asyncio.timeout(NO_FAIL_OVER_BOUND):
        await collect(client)
    assert registry.health(hung_server.base_url).state(clock()) is ServerState.COOLING_DOWN

    # Now the healthy one is tried first and fails before its first event: the hung one, the last
    # left but cooling down, gets the fail-over deadline, not the caller's whole first-token time.
    server.enqueue(Script(status=503))
    with pytest.raises(InferenceUnavailable, match="No inference server answered") as raised:
        async with asyncio.timeout(NO_FAIL_OVER_BOUND):
            await collect(client)

    assert f"{hung_server.base_url}: no first event within 0.3 s" in str(raised.value)
    assert hung_server.connections == 2
    assert registry.health(hung_server.base_url).consecutive_failures == 2
    assert registry.health(server.base_url).last_failure is FailureKind.SERVER_ERROR


async def test_it_gives_the_only_server_the_callers_whole_first_token_time_even_while_it_cools_down(
    server: ScriptedInferenceServer, registry: ServerRegistry
):
    # With one server there is nowhere to fail over to: a short deadline would only fail slow prompts.
    server.enqueue(Script(status=503))
    server.enqueue(Script(tokens=["slow"], first_token_delay=0.8))
    client = InferenceClient(base_urls=[server.base_url], model="m", response_timeout=0.2, registry=registry)
    with pytest.raises(InferenceUnavailable):
        await collect(client)
    assert registry.health(server.base_url).state(registry.clock()) is ServerState.COOLING_DOWN

    events = await collect(client)

    assert text_of(events) == "slow"
