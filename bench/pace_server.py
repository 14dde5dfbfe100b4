"""An OpenAI-compatible chat server that streams at a set pace, for `make bench`.

`python bench/pace_server.py --port P --first-token-ms 20 --tokens-per-second 50 [--tokens 40]`

Every stream waits `--first-token-ms` after the request, then sends one token per chunk at
`--tokens-per-second`, whatever else it is serving: it stands for an inference server with room for
every sequence (vLLM's continuous batching), so what the benchmark measures on top of it is the
platform's own cost. A request whose last user message contains `[tokens=N]` gets N tokens instead
of `--tokens`. The tokens are deterministic (`expected_text(N)`), mixing English and Chinese, so a
client can check a relayed reply character for character. With `--log PATH` each request is written
as a JSON line with wall-clock times (`received`, and for a stream `first_token`) and the `[ref=...]`
of its last user message, so a benchmark can place the model's part on a reply's timeline.

It is one asyncio process (tests/scripted_inference.py starts a thread per stream, which at 200
streams would compete with the platform for the CPU it is measuring). HTTP/1.1 keep-alive is
honoured, so a client that reuses connections is seen to. `GET /stats` answers
`{"active_streams", "peak_active_streams", "streams", "connections"}`; `POST /stats/reset` zeroes
the peak and the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
from dataclasses import dataclass
from typing import Any, TextIO

MODEL = "pace-model"
_TOKENS_DIRECTIVE = re.compile(r"\[tokens=(\d{1,5})\]")
_REF_DIRECTIVE = re.compile(r"\[ref=([\w.-]{1,80})\]")
_WORDS = ("Thank", " you", " for", " waiting", ",", " 您的", "订单", "已", "发货", "。", " The", " parcel")


def expected_text(tokens: int) -> str:
    """The full text of a reply of `tokens` tokens."""
    return "".join(token(index) for index in range(tokens))


def token(index: int) -> str:
    """The token at `index` of every reply."""
    return _WORDS[index % len(_WORDS)] + (f" {index}" if index % len(_WORDS) == len(_WORDS) - 1 else "")


@dataclass
class Pace:
    first_token_seconds: float
    token_seconds: float
    tokens: int


@dataclass
class Stats:
    active_streams: int = 0
    peak_active_streams: int = 0
    streams: int = 0
    connections: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "active_streams": self.active_streams,
            "peak_active_streams": self.peak_active_streams,
            "streams": self.streams,
            "connections": self.connections,
        }


class PaceServer:
    """The server: one coroutine per connection, requests served in turn on each."""

    def __init__(self, pace: Pace, log: TextIO | None = None) -> None:
        self.pace = pace
        self.stats = Stats()
        self.log = log
        self._ids = 0

    def _log(self, **record: Any) -> None:
        if self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self._log(event="connection", at=time.time())
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, headers, body = request
                if path.startswith("/v1/models"):
                    self._log(event="models", at=time.time())
                keep_alive = headers.get("connection", "").lower() != "close"
                await self._route(method, path.split("?", 1)[0], body, writer, keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> None:
        if method == "GET" and path in {"/v1/models", "/models"}:
            await _send_json(
                writer, 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]}, keep_alive
            )
        elif method == "GET" and path == "/stats":
            await _send_json(writer, 200, self.stats.as_dict(), keep_alive)
        elif method == "POST" and path == "/stats/reset":
            self.stats = Stats(active_streams=self.stats.active_streams)
            await _send_json(writer, 200, self.stats.as_dict(), keep_alive)
        elif method == "POST" and path in {"/v1/chat/completions", "/chat/completions"}:
            try:
                payload = json.loads(body)
            except ValueError:
                await _send_json(
                    writer,
                    400,
                    {"error": {"message": "not JSON", "type": "invalid_request_error"}},
                    keep_alive,
                )
                return
            await self._chat(payload, writer, keep_alive)
        else:
            await _send_json(
                writer, 404, {"error": {"message": "no route", "type": "not_found_error"}}, keep_alive
            )

    async def _chat(self, payload: dict[str, Any], writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        started = time.monotonic()
        received_at = time.time()
        tokens = _requested_tokens(payload, self.pace.tokens)
        ref = _last_user_match(payload, _REF_DIRECTIVE)
        self._ids += 1
        envelope = {"id": f"chatcmpl-pace-{self._ids}", "created": int(time.time()), "model": MODEL}
        usage = {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens}
        if not payload.get("stream"):
            await _sleep_until(
                started + self.pace.first_token_seconds + self.pace.token_seconds * max(tokens - 1, 0)
            )
            message = {"role": "assistant", "content": expected_text(tokens)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            await _send_json(
                writer,
                200,
                {**envelope, "object": "chat.completion", "choices": [choice], "usage": usage},
                keep_alive,
            )
            return
        self.stats.streams += 1
        self.stats.active_streams += 1
        self.stats.peak_active_streams = max(self.stats.peak_active_streams, self.stats.active_streams)
        try:
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
            )
            writer.write(head.encode())
            chunk_envelope = {**envelope, "object": "chat.completion.chunk"}

            def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
                choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
                return _sse({**chunk_envelope, "choices": [choice]})

            first_at = started + self.pace.first_token_seconds
            await _sleep_until(first_at)
            writer.write(event({"role": "assistant", "content": ""}))
            for index in range(tokens):
                await _sleep_until(first_at + index * self.pace.token_seconds)
                writer.write(event({"content": token(index)}))
                await writer.drain()
                if index == 0:
                    self._log(event="stream", ref=ref, received=received_at, first_token=time.time())
            writer.write(event({}, "stop"))
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            if include_usage:
                writer.write(_sse({**chunk_envelope, "choices": [], "usage": usage}))
            writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
        finally:
            self.stats.active_streams -= 1


def _requested_tokens(payload: dict[str, Any], default: int) -> int:
    found = _last_user_match(payload, _TOKENS_DIRECTIVE)
    return int(found) if found else default


def _last_user_match(payload: dict[str, Any], pattern: re.Pattern[str]) -> str | None:
    """The first group of `pattern` in the last user message, if it is there."""
    for message in reversed(payload.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        found = pattern.search(text or "")
        return found.group(1) if found else None
    return None


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(payload: dict[str, Any]) -> bytes:
    return _chunk(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: Any, keep_alive: bool) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request (Content-Length bodies only, which is what HTTP clients send here)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


async def serve(host: str, port: int, pace: Pace, log: TextIO | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = PaceServer(pace, log)
    listener = await asyncio.start_server(server.handle, host, port, backlog=4096, limit=2**20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    print(f"pace server on http://{host}:{port}/v1", flush=True)
    async with listener:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-ms", type=float, default=20.0)
    parser.add_argument("--tokens-per-second", type=float, default=50.0)
    parser.add_argument(
        "--tokens", type=int, default=40, help="tokens per reply without a [tokens=N] directive"
    )
    parser.add_argument("--log", help="write a JSON line per request here")
    arguments = parser.parse_args()
    if arguments.tokens_per_second <= 0 or arguments.first_token_ms < 0 or arguments.tokens < 1:
        parser.error("the pace must be positive")
    pace = Pace(arguments.first_token_ms / 1000, 1 / arguments.tokens_per_second, arguments.tokens)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(arguments.log, "a")) if arguments.log else None
        asyncio.run(serve(arguments.host, arguments.port, pace, log))


if __name__ == "__main__":
    main()
