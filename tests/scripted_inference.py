"""A scripted OpenAI-compatible inference server for tests.

The server speaks enough of the OpenAI chat-completions protocol (as served by vLLM or
llama.cpp) for the platform's inference client: ``GET /v1/models`` and
``POST /v1/chat/completions``, streaming (server-sent events over chunked transfer encoding)
and non-streaming (one JSON body). Each chat request follows a :class:`Script` that fixes the
exact tokens and misbehaviour (error statuses, slow first token, stalls, malformed chunks,
dropped connections), and the tool calls that follow the tokens, streamed as vLLM's tool-call
parser streams them. Every request is recorded, and client disconnects are noticed both on
failed writes and, while the server is waiting, by polling the socket for end-of-file.

The server runs in background threads (standard library only), so it can be used from sync
and async tests alike::

    with ScriptedInferenceServer() as server:
        server.enqueue(Script(tokens=["Hi", "!"]), Script(status=500))
        ...  # point the platform at server.base_url
        server.wait_for_requests(2)
        assert server.requests[0].json["stream"] is True
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import select
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["RecordedRequest", "Script", "ScriptedInferenceServer", "ScriptedToolCall"]

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"

# How often a waiting handler checks whether the client has gone away.
_POLL_INTERVAL = 0.02
_MALFORMED_EVENT = b"data: {not json\n\n"
_completion_ids = itertools.count(1)


@dataclass
class ScriptedToolCall:
    """One tool call a script makes after its tokens: the name in the call's first delta, then the
    arguments' JSON text in the pieces given (``["{\"rea", "son\": \"x\"}"]``), one delta each."""

    name: str
    arguments: list[str] = field(default_factory=lambda: ["{}"])
    id: str = ""


@dataclass
class Script:
    """What the server does for one ``POST /v1/chat/completions`` request.

    Positions (``stall_after``, ``malformed_after``, ``disconnect_after``) count content tokens
    already sent: ``0`` acts right after the role chunk, ``len(tokens)`` after the last token
    and before the chunk carrying ``finish_reason``. When several apply at the same position
    they happen in the order malformed, stall, disconnect.
    """

    tokens: list[str] = field(default_factory=lambda: ["Hello", " world"])
    # Anything but 200 answers {"error": {...}} with that status, before any streaming.
    status: int = 200
    error_message: str = "Scripted inference error"
    # Seconds after the response headers before the role chunk and the first token.
    first_token_delay: float = 0.0
    # Seconds between successive token chunks.
    token_delay: float = 0.0
    # After this many tokens, send nothing until the client disconnects or ``stall_seconds``
    # pass; after that the stream resumes normally.
    stall_after: int | None = None
    stall_seconds: float = 30.0
    # If given, every stream sends its first token, then waits until the event is set (or the
    # client leaves): lets a test see many streams open at the same moment however slowly the
    # platform starts them.
    gate: threading.Event | None = None
    # After this many tokens, send a garbage ``data: {not json`` event, then carry on.
    malformed_after: int | None = None
    # After this many tokens, close the socket abruptly: no terminating chunk, no [DONE].
    disconnect_after: int | None = None
    # With tool calls: "tool_calls" unless set otherwise.
    finish_reason: str = "stop"
    # Streamed after the tokens as ``delta.tool_calls`` (OpenAI's format), each call at its index.
    tool_calls: list[ScriptedToolCall] = field(default_factory=list)
    # None: computed from the request (see :func:`count_prompt_tokens`) and ``len(tokens)``.
    usage: dict[str, Any] | None = None
    model: str = "scripted-model"
    # If given, sent verbatim as the body (``status``, content-type text/event-stream).
    raw_body: bytes | None = None


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    received_at: float
    # The script a chat-completions request followed; None for other endpoints.
    script: Script | None = None
    # time.monotonic() when the client was seen to close the connection before the response
    # was complete; None if it never did.
    disconnected_at: float | None = None
    # True once the full response (for a stream: up to and including [DONE]) was written.
    completed: bool = False


def count_prompt_tokens(body: Any) -> int:
    """A rough, deterministic prompt size: the number of whitespace-separated words in the
    text of the request's messages, plus one per image part."""
    if not isinstance(body, dict):
        return 0
    count = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            count += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    count += len(str(part.get("text", "")).split())
                else:
                    count += 1
    return count


class _ClientGone(Exception):
    """The client closed the connection (or the server is stopping)."""


class _AbortedByScript(Exception):
    """Raised to unwind a handler after a scripted disconnect."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    # --- dispatch ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _dispatch(self) -> None:
        self.close_connection = True
        owner = self.server.owner
        record = self._record()
        path = record.path.split("?", 1)[0]
        try:
            if self.command == "GET" and path == MODELS_PATH:
                self._send_json(200, owner.models_payload())
            elif self.command == "POST" and path == CHAT_COMPLETIONS_PATH:
                self._chat_completions(record)
            else:
                self._send_error(404, f"No route for {self.command} {path}", "not_found_error")
        except _AbortedByScript:
            pass
        except _ClientGone:
            if not owner.is_stopping:
                owner.note_disconnect(record)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            owner.note_disconnect(record)

    def _record(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
            json=parsed,
            received_at=time.monotonic(),
        )
        self.server.owner.add_request(record)
        return record

    # --- chat completions -------------------------------------------------------------------

    def _chat_completions(self, record: RecordedRequest) -> None:
        body = record.json
        if not isinstance(body, dict):
            self._send_error(400, "Request body must be a JSON object", "invalid_request_error")
            record.completed = True
            return
        script = self.server.owner.next_script()
        record.script = script

        if script.raw_body is not None:
            self._wait(script.first_token_delay)
            self._send_bytes(script.status, script.raw_body, "text/event-stream")
        elif script.status != 200:
            self._wait(script.first_token_delay)
            error_type = "server_error" if script.status >= 500 else "invalid_request_error"
            self._send_error(script.status, script.error_message, error_type)
        elif body.get("stream"):
            self._stream(script, body)
        else:
            self._complete(script, body)
        record.completed = True

    def _complete(self, script: Script, body: dict[str, Any]) -> None:
        """A non-streaming response, after the total time the tokens would have taken."""
        self._wait(script.first_token_delay + script.token_delay * max(len(script.tokens) - 1, 0))
        if script.stall_after is not None:
            self._wait(script.stall_seconds)
        if script.disconnect_after is not None:
            self._abort()
        if script.malformed_after is not None:
            self._send_bytes(200, b"{not json", "application/json")
            return
        payload = {
            **_envelope(script, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": _message(script),
                    "logprobs": None,
                    "finish_reason": _finish_reason(script),
                }
            ],
            "usage": _usage(script, body),
        }
        self._send_json(200, payload)

    def _stream(self, script: Script, body: dict[str, Any]) -> None:
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
        envelope = _envelope(script, "chat.completion.chunk")
        if include_usage:
            envelope["usage"] = None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**envelope, "choices": [choice]}

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()

        self._wait(script.first_token_delay)
        self._send_event(chunk({"role": "assistant", "content": ""}))
        for index in range(len(script.tokens) + 1):
            if script.malformed_after == index:
                self._send_chunk(_MALFORMED_EVENT)
            if script.stall_after == index:
                self._wait(script.stall_seconds)
            if script.disconnect_after == index:
                self._abort()
            if index == len(script.tokens):
                break
            if index > 0:
                self._wait(script.token_delay)
            self._send_event(chunk({"content": script.tokens[index]}))
            if index == 0 and script.gate is not None:
                self._wait_for(script.gate)

        for position, call in enumerate(script.tool_calls):
            call_id = call.id or f"chatcmpl-tool-{position}"
            self._wait(script.token_delay)
            self._send_event(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": position,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in call.arguments:
                self._wait(script.token_delay)
                self._send_event(
                    chunk({"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
                )
        self._send_event(chunk({}, _finish_reason(script)))
        if include_usage:
            self._send_event({**envelope, "choices": [], "usage": _usage(script, body)})
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")  # the terminating zero-length chunk

    # --- writing ----------------------------------------------------------------------------

    def _send_event(self, payload: dict[str, Any]) -> None:
        self._send_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _send_chunk(self, data: bytes) -> None:
        """One HTTP chunk, written straight to the socket (``wfile`` is unbuffered)."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _send_json(self, status: int, payload: Any) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json")

    def _send_error(self, status: int, message: str, error_type: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": error_type, "code": status}})

    def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _abort(self) -> None:
        """Drop the connection mid-response, as a crashed inference server would."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        raise _AbortedByScript

    # --- waiting ----------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        """Sleep for ``seconds`` while watching the socket; raise :class:`_ClientGone` as soon
        as the client closes the connection or the server is stopping."""
        owner = self.server.owner
        deadline = time.monotonic() + seconds
        while True:
            if owner.is_stopping:
                raise _ClientGone
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._client_closed(min(remaining, _POLL_INTERVAL)):
                raise _ClientGone

    def _wait_for(self, event: threading.Event) -> None:
        """Wait until ``event`` is set, raising :class:`_ClientGone` as :meth:`_wait` does."""
        owner = self.server.owner
        while not event.is_set():
            if owner.is_stopping or self._client_closed(_POLL_INTERVAL):
                raise _ClientGone

    def _client_closed(self, timeout: float) -> bool:
        """Whether the peer closed the connection, waiting up to ``timeout`` to find out."""
        readable, _, _ = select.select([self.connection], [], [], timeout)
        if not readable:
            return False
        try:
            data = self.connection.recv(1, socket.MSG_PEEK)
        except (ConnectionResetError, ConnectionAbortedError):
            return True
        except BlockingIOError:
            return False
        if data:
            # The client sent more bytes (it should not): don't spin on a readable socket.
            time.sleep(timeout)
            return False
        return True


def _finish_reason(script: Script) -> str:
    if script.tool_calls and script.finish_reason == "stop":
        return "tool_calls"
    return script.finish_reason


def _message(script: Script) -> dict[str, Any]:
    """A non-streaming response's message: the tokens, and the tool calls whole."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(script.tokens)}
    if script.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id or f"chatcmpl-tool-{position}",
                "type": "function",
                "function": {"name": call.name, "arguments": "".join(call.arguments)},
            }
            for position, call in enumerate(script.tool_calls)
        ]
    return message


def _envelope(script: Script, obj: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-scripted-{next(_completion_ids)}",
        "object": obj,
        "created": int(time.time()),
        "model": script.model,
    }


def _usage(script: Script, body: dict[str, Any]) -> dict[str, Any]:
    if script.usage is not None:
        return dict(script.usage)
    prompt_tokens = count_prompt_tokens(body)
    # A tool call counts its name's delta and each piece of its arguments.
    completion_tokens = len(script.tokens) + sum(1 + len(call.arguments) for call in script.tool_calls)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: twenty replies connecting at once overflowed it, and the
    # connections it dropped looked like a server that closed them. A real server takes bursts.
    request_queue_size = 128
    owner: ScriptedInferenceServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Vanished clients are expected; anything else is printed."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ScriptedInferenceServer:
    """An OpenAI-compatible chat-completions server that follows queued :class:`Script` s.

    Bound to 127.0.0.1 on an ephemeral port by :meth:`start` (or ``with``). Thread-safe.
    """

    def __init__(self, default: Script | None = None) -> None:
        self.default: Script = default if default is not None else Script()
        self.requests: list[RecordedRequest] = []
        self.disconnected = threading.Event()
        self._scripts: deque[Script] = deque()
        self._disconnects: list[RecordedRequest] = []
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> ScriptedInferenceServer:
        if self._httpd is not None:
            raise RuntimeError("ScriptedInferenceServer is already started")
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scripted-inference-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests in progress (stalls included) are cut short."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ScriptedInferenceServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ScriptedInferenceServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def is_stopping(self) -> bool:
        return self._stopping.is_set()

    # --- scripting --------------------------------------------------------------------------

    def enqueue(self, *scripts: Script) -> None:
        """Scripts for the next chat-completions requests, in order; then ``default``."""
        with self._condition:
            self._scripts.extend(scripts)

    def next_script(self) -> Script:
        with self._condition:
            return self._scripts.popleft() if self._scripts else self.default

    @property
    def pending_scripts(self) -> int:
        with self._condition:
            return len(self._scripts)

    def models_payload(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.default.model, "object": "model"}]}

    # --- recording --------------------------------------------------------------------------

    def add_request(self, record: RecordedRequest) -> None:
        with self._condition:
            self.requests.append(record)
            self._condition.notify_all()

    def note_disconnect(self, record: RecordedRequest) -> None:
        with self._condition:
            record.disconnected_at = time.monotonic()
            self._disconnects.append(record)
            self.disconnected.set()
            self._condition.notify_all()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded ``POST /v1/chat/completions`` requests."""
        with self._condition:
            return [r for r in self.requests if r.method == "POST" and r.path == CHAT_COMPLETIONS_PATH]

    @property
    def client_disconnects(self) -> int:
        """How many responses the client abandoned before they were complete."""
        with self._condition:
            return len(self._disconnects)

    @property
    def disconnects(self) -> list[RecordedRequest]:
        """The requests whose client went away mid-response, in the order noticed."""
        with self._condition:
            return list(self._disconnects)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        """Block until at least ``count`` requests were received; AssertionError on timeout."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(
                    f"expected {count} request(s) within {timeout}s, got {len(self.requests)}"
                )

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until the client abandoned at least ``count`` responses; AssertionError on
        timeout."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._disconnects) >= count, timeout):
                raise AssertionError(
                    f"expected {count} client disconnect(s) within {timeout}s, got {len(self._disconnects)}"
                )

    # The timeout bounds a wait in a worker thread, so asyncio.timeout() is no substitute.
    async def wait_for_requests_async(self, count: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """:meth:`wait_for_requests` without blocking the event loop."""
        await asyncio.to_thread(self.wait_for_requests, count, timeout)

    async def wait_for_disconnects_async(self, count: int = 1, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """:meth:`wait_for_disconnects` without blocking the event loop."""
        await asyncio.to_thread(self.wait_for_disconnects, count, timeout)

    def clear(self) -> None:
        """Forget recorded requests, disconnects and queued scripts."""
        with self._condition:
            self.requests.clear()
            self._disconnects.clear()
            self._scripts.clear()
            self.disconnected.clear()
