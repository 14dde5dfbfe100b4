"""Tests of the scripted inference server itself (no Django needed).

Run with: ``.venv/bin/python -m pytest -p no:django tests/test_scripted_inference.py -q``
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.scripted_inference import Script, ScriptedInferenceServer, ScriptedToolCall


@pytest.fixture
def server() -> Iterator[ScriptedInferenceServer]:
    with ScriptedInferenceServer() as running:
        yield running


def chat_body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "scripted-model",
        "messages": [{"role": "user", "content": "Where is my parcel?"}],
        "stream": stream,
        **extra,
    }


def data_lines(lines: Iterator[str] | list[str]) -> list[str]:
    """The payloads of the ``data:`` lines of an SSE stream."""
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def collect(lines: Iterator[str], into: list[str]) -> None:
    """Append lines one by one, so those read before an error are kept."""
    for line in lines:
        into.append(line)


def contents(payloads: list[str]) -> list[str]:
    """The content deltas of parsed stream chunks (empty role content excluded)."""
    tokens = []
    for payload in payloads:
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload)["choices"]:
            content = choice["delta"].get("content")
            if content:
                tokens.append(content)
    return tokens


def test_stream_sends_exact_tokens_in_openai_format(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["Your", " parcel", " is", " here", "."], finish_reason="length"))
    body = chat_body(stream_options={"include_usage": True})

    with (
        httpx.Client() as client,
        client.stream("POST", f"{server.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = data_lines(list(response.iter_lines()))

    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert contents(payloads) == ["Your", " parcel", " is", " here", "."]
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {}
    assert finish["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}


def test_stream_sends_tool_calls_after_the_tokens_in_openai_format(server: ScriptedInferenceServer) -> None:
    server.enqueue(
        Script(
            tokens=["Sure."],
            tool_calls=[
                ScriptedToolCall(name="handoff_to_human", arguments=['{"reason": ', '"refund"}'], id="c1")
            ],
        )
    )
    body = chat_body(tools=[{"type": "function", "function": {"name": "handoff_to_human"}}])

    with httpx.Client() as client:
        response = client.post(f"{server.base_url}/chat/completions", json=body)

    payloads = data_lines(response.text.splitlines())
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[1] == {"content": "Sure."}
    assert deltas[2:5] == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "handoff_to_human", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"reason": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"refund"}'}}]},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # The request, tools and all, is recorded.
    assert server.chat_requests[0].json["tools"] == body["tools"]


def test_non_stream_response_has_the_tool_calls_whole(server: ScriptedInferenceServer) -> None:
    server.enqueue(
        Script(tokens=[], tool_calls=[ScriptedToolCall(name="handoff_to_human", arguments=["{", "}"])])
    )
    with httpx.Client() as client:
        response = client.post(f"{server.base_url}/chat/completions", json=chat_body(stream=False))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "chatcmpl-tool-0",
            "type": "function",
            "function": {"name": "handoff_to_human", "arguments": "{}"},
        }
    ]


def test_stream_without_include_usage_has_no_usage_chunk(server: ScriptedInferenceServer) -> None:
    with httpx.Client() as client:
        response = client.post(f"{server.base_url}/chat/completions", json=chat_body())
    payloads = data_lines(response.text.splitlines())
    assert contents(payloads) == ["Hello", " world"]
    assert all(json.loads(payload)["choices"] for payload in payloads[:-1])
    assert json.loads(payloads[-2])["choices"][0]["finish_reason"] == "stop"


def test_non_stream_response(server: ScriptedInferenceServer) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    server.enqueue(Script(tokens=["Hi", "!"], usage=usage, model="other-model"))
    with httpx.Client() as client:
        response = client.post(f"{server.base_url}/chat/completions", json=chat_body(stream=False))
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "chat.completion"
    assert payload["model"] == "other-model"
    assert payload["choices"][0]["message"] == {"role": "assistant", "content": "Hi!"}
    assert payload["choices"][0]["finish_reason"] == "stop"
    assert payload["usage"] == usage


def test_scripts_are_used_in_order_then_default() -> None:
    with ScriptedInferenceServer(default=Script(tokens=["default"])) as server, httpx.Client() as client:
        server.enqueue(Script(tokens=["first"]), Script(tokens=["second"]))
        replies = [
            client.post(f"{server.base_url}/chat/completions", json=chat_body(stream=False)).json()
            for _ in range(3)
        ]
    assert [reply["choices"][0]["message"]["content"] for reply in replies] == ["first", "second", "default"]


@pytest.mark.parametrize("stream", [True, False])
def test_error_status(server: ScriptedInferenceServer, stream: bool) -> None:
    server.enqueue(Script(status=500, error_message="GPU on fire"))
    with httpx.Client() as client:
        response = client.post(f"{server.base_url}/chat/completions", json=chat_body(stream=stream))
    assert response.status_code == 500
    assert response.json() == {"error": {"message": "GPU on fire", "type": "server_error", "code": 500}}


def test_models_and_unknown_paths(server: ScriptedInferenceServer) -> None:
    with httpx.Client() as client:
        models = client.get(f"{server.base_url}/models")
        missing = client.post(f"{server.base_url}/completions", json={})
    assert models.json() == {"object": "list", "data": [{"id": "scripted-model", "object": "model"}]}
    assert missing.status_code == 404
    assert "error" in missing.json()
    assert [request.path for request in server.requests] == ["/v1/models", "/v1/completions"]


def test_request_is_recorded_with_json_and_headers(server: ScriptedInferenceServer) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    body = chat_body(
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this photo?"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            },
        ],
        max_tokens=64,
    )
    before = time.monotonic()
    with httpx.Client(headers={"Authorization": "Bearer sk-test"}) as client:
        client.post(f"{server.base_url}/chat/completions", json=body)

    server.wait_for_requests(1)
    [request] = server.chat_requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["content-type"] == "application/json"
    assert request.json == body
    assert request.json["messages"][1]["content"][1]["image_url"]["url"] == image
    assert before <= request.received_at <= time.monotonic()
    assert request.completed
    assert request.disconnected_at is None
    assert server.client_disconnects == 0


def test_wait_for_requests_times_out(server: ScriptedInferenceServer) -> None:
    with pytest.raises(AssertionError, match="expected 1 request"):
        server.wait_for_requests(1, timeout=0.1)


def test_tokens_arrive_as_they_are_sent(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["a", "b", "c"], token_delay=0.2))
    arrivals: list[float] = []
    with (
        httpx.Client() as client,
        client.stream("POST", f"{server.base_url}/chat/completions", json=chat_body()) as response,
    ):
        started = time.monotonic()
        for line in response.iter_lines():
            if line.startswith("data: ") and contents(data_lines([line])):
                arrivals.append(time.monotonic())

    assert len(arrivals) == 3
    assert arrivals[0] - started < 0.15
    assert arrivals[2] - arrivals[0] >= 0.35


async def test_tokens_arrive_as_they_are_sent_async(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["a", "b", "c"], token_delay=0.2, first_token_delay=0.3))
    arrivals: list[float] = []
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        async with client.stream("POST", f"{server.base_url}/chat/completions", json=chat_body()) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and contents(data_lines([line])):
                    arrivals.append(time.monotonic())

    assert len(arrivals) == 3
    assert 0.3 <= arrivals[0] - started < 0.5
    assert arrivals[2] - arrivals[0] >= 0.35


async def test_httpx_sse_reads_the_stream(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["x", "y"]))
    async with (
        httpx.AsyncClient() as client,
        aconnect_sse(client, "POST", f"{server.base_url}/chat/completions", json=chat_body()) as source,
    ):
        payloads = [event.data async for event in source.aiter_sse()]
    assert payloads[-1] == "[DONE]"
    assert contents(payloads) == ["x", "y"]


def test_stall_then_client_disconnect_is_detected(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["one", "two", "three"], stall_after=1, stall_seconds=30))
    received: list[str] = []
    with (
        httpx.Client() as client,
        client.stream("POST", f"{server.base_url}/chat/completions", json=chat_body()) as response,
    ):
        # Keep the line iterator referenced: dropping it closes the connection at once.
        lines = response.iter_lines()
        for line in lines:
            received += contents(data_lines([line]))
            if received:
                break
        time.sleep(0.2)  # the stalled stream stays open: no disconnect yet
        assert not server.disconnected.is_set()
        closed_at = time.monotonic()

    server.wait_for_disconnects(1, timeout=2)
    assert received == ["one"]
    assert server.client_disconnects == 1
    assert server.disconnected.is_set()
    [request] = server.disconnects
    assert request.disconnected_at is not None
    assert request.disconnected_at - closed_at < 0.5
    assert not request.completed


async def test_stall_then_client_disconnect_is_detected_async(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["one", "two"], stall_after=1, stall_seconds=30))
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", f"{server.base_url}/chat/completions", json=chat_body()) as response,
    ):
        async for line in response.aiter_lines():
            if contents(data_lines([line])):
                break
    closed_at = time.monotonic()

    await server.wait_for_disconnects_async(1, timeout=2)
    disconnected_at = server.disconnects[0].disconnected_at
    assert disconnected_at is not None
    assert disconnected_at - closed_at < 0.5


def test_client_timeout_during_slow_first_token_is_a_disconnect(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(first_token_delay=10))
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as client, pytest.raises(httpx.ReadTimeout):
        client.post(f"{server.base_url}/chat/completions", json=chat_body())
    server.wait_for_disconnects(1, timeout=2)


def test_stall_resumes_after_stall_seconds(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["a", "b"], stall_after=1, stall_seconds=0.3))
    started = time.monotonic()
    with httpx.Client() as client:
        response = client.post(f"{server.base_url}/chat/completions", json=chat_body())
    assert time.monotonic() - started >= 0.3
    assert contents(data_lines(response.text.splitlines())) == ["a", "b"]
    assert server.client_disconnects == 0


def test_malformed_chunk_is_sent(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["a", "b"], malformed_after=1))
    with httpx.Client() as client:
        response = client.post(f"{server.base_url}/chat/completions", json=chat_body())
    payloads = data_lines(response.text.splitlines())
    assert payloads[2] == "{not json"
    valid = [payload for payload in payloads if payload != "{not json"]
    assert contents(valid) == ["a", "b"]
    assert payloads[-1] == "[DONE]"


def test_scripted_disconnect_drops_the_connection(server: ScriptedInferenceServer) -> None:
    server.enqueue(Script(tokens=["a", "b", "c"], disconnect_after=2))
    lines: list[str] = []
    with (
        httpx.Client() as client,
        client.stream("POST", f"{server.base_url}/chat/completions", json=chat_body()) as response,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        collect(response.iter_lines(), lines)
    payloads = data_lines(lines)
    assert contents(payloads) == ["a", "b"]
    assert "[DONE]" not in payloads
    assert server.client_disconnects == 0


def test_raw_body_is_sent_verbatim(server: ScriptedInferenceServer) -> None:
    raw = b"data: \xff\xfe garbage\n\nnot even sse"
    server.enqueue(Script(raw_body=raw))
    with httpx.Client() as client:
        response = client.post(f"{server.base_url}/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content == raw


def test_stop_ends_a_stalled_response_promptly() -> None:
    server = ScriptedInferenceServer(default=Script(stall_after=0, stall_seconds=60)).start()
    with httpx.Client() as client:
        with client.stream("POST", f"{server.base_url}/chat/completions", json=chat_body()) as response:
            server.wait_for_requests(1)
            started = time.monotonic()
            server.stop()
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()
        assert time.monotonic() - started < 2
