"""The streaming client for OpenAI-compatible servers, against the scripted inference server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cs_platform.processes import free_port
from inference.client import ChatRequest, InferenceClient, StreamEvent
from inference.errors import (
    InferenceBadResponse,
    InferenceError,
    InferenceRejected,
    InferenceTimeout,
    InferenceUnavailable,
)
from tests.scripted_inference import Script, ScriptedInferenceServer

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
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _JsonHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


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
