"""An independent client for the documented contract: the customer's widget and the agent's console.

Written from DESIGN.md and the README only. A `FrameStream` reads a websocket in the background and
keeps every frame, so a test can wait for a frame, and check afterwards that a frame never came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]
FramePredicate = Callable[[Frame], bool]


def of_type(frame_type: str, **fields: Any) -> FramePredicate:
    """A predicate: a frame of this type whose named fields have these values."""

    def matches(frame: Frame) -> bool:
        return frame.get("type") == frame_type and all(
            frame.get(key) == value for key, value in fields.items()
        )

    return matches


@dataclass
class FrameStream:
    """Every JSON frame a websocket received, in order, read by a background task."""

    connection: ClientConnection
    frames: list[Frame] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> FrameStream:
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for raw in self.connection:
                frame = json.loads(raw)
                async with self._arrived:
                    self.frames.append(frame)
                    self._arrived.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.connection.close_code
            self.closed.set()
            async with self._arrived:
                self._arrived.notify_all()

    async def send(self, frame: Frame) -> None:
        await self.connection.send(json.dumps(frame))

    async def wait_for(self, predicate: FramePredicate, *, within: float = 15.0, after: int = 0) -> Frame:
        """The first frame (from index `after`) that matches; fails with every frame seen after `within` s."""
        deadline = time.monotonic() + within
        async with self._arrived:
            while True:
                for frame in self.frames[after:]:
                    if predicate(frame):
                        return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed.is_set():
                    seen = json.dumps(self.frames[after:], ensure_ascii=False)
                    raise AssertionError(
                        f"no matching frame within {within} s (closed: {self.closed.is_set()}, "
                        f"code {self.close_code}); frames: {seen}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout=remaining)

    def mark(self) -> int:
        """The index of the next frame, to wait only for frames that come after this point."""
        return len(self.frames)

    async def close(self) -> None:
        await self.connection.close()
        if self._reader is not None:
            await self._reader


async def open_stream(url: str, *, origin: str, headers: dict[str, str] | None = None) -> FrameStream:
    connection = await connect(url, origin=origin, additional_headers=headers or {}, open_timeout=15)  # type: ignore[arg-type]
    return FrameStream(connection).start()


class WidgetClient:
    """The customer's side: one conversation over REST and its websocket."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=15)
        self.conversation_id: str = ""
        self.token: str = ""
        self.ws_path: str = ""
        self.stream: FrameStream | None = None

    async def create_conversation(self, locale: str = "en") -> httpx.Response:
        response = await self.http.post("/api/widget/conversations", json={"locale": locale})
        if response.status_code == 201:
            body = response.json()
            self.conversation_id, self.token, self.ws_path = str(body["id"]), body["token"], body["ws_path"]
        return response

    async def history(self) -> httpx.Response:
        return await self.http.get(
            f"/api/widget/conversations/{self.conversation_id}/messages",
            headers={"Authorization": f"Bearer {self.token}"},
        )

    async def connect(self) -> Frame:
        """Open the socket and say hello; the `ready` frame."""
        websocket_url = self.base_url.replace("http://", "ws://", 1) + self.ws_path
        self.stream = await open_stream(websocket_url, origin=self.base_url)
        await self.stream.send({"type": "hello", "token": self.token})
        return await self.stream.wait_for(of_type("ready"))

    @property
    def socket(self) -> FrameStream:
        assert self.stream is not None, "the customer's socket is not open"
        return self.stream

    async def say(self, text: str) -> str:
        """Send a message; its client_id."""
        client_id = str(uuid.uuid4())
        await self.socket.send({"type": "message", "client_id": client_id, "text": text, "attachments": []})
        return client_id

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.close()
        await self.http.aclose()


class AgentClient:
    """A staff member's side: the session API with CSRF, the agent REST API and /ws/agent/."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=15, event_hooks={"request": [self._send_every_cookie]}
        )
        self.csrf_token: str = ""
        self.last_session: httpx.Response | None = None
        self.stream: FrameStream | None = None

    async def _send_every_cookie(self, request: httpx.Request) -> None:
        """Send the session and CSRF cookies over plain http too.

        The production entry point marks them `Secure` (it runs behind TLS), which httpx honours by
        not sending them to http://127.0.0.1; a browser on localhost sends them, and so does this.
        """
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.http.cookies.jar)
        if cookies:
            request.headers["Cookie"] = cookies

    def _remember_csrf(self, response: httpx.Response) -> None:
        """The CSRF token, from the JSON body if it carries one, else Django's `csrftoken` cookie.

        The README says the session endpoint "hands out the CSRF token" without naming the field.
        """
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key, value in body.items():
                if "csrf" in key.lower() and isinstance(value, str) and value:
                    self.csrf_token = value
                    return
        cookie = self.http.cookies.get("csrftoken")
        if cookie:
            self.csrf_token = cookie

    async def session(self) -> httpx.Response:
        response = await self.http.get("/api/agent/session")
        self._remember_csrf(response)
        self.last_session = response
        return response

    async def login(self, username: str, password: str) -> httpx.Response:
        await self.session()
        response = await self.http.post(
            "/api/agent/session",
            json={"username": username, "password": password},
            headers=self.write_headers(),
        )
        self._remember_csrf(response)
        return response

    async def logout(self) -> httpx.Response:
        response = await self.http.delete("/api/agent/session", headers=self.write_headers())
        self._remember_csrf(response)
        return response

    def write_headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.csrf_token, "Origin": self.base_url, "Referer": self.base_url + "/"}

    async def conversations(self, queue: str) -> httpx.Response:
        return await self.http.get("/api/agent/conversations", params={"queue": queue})

    async def conversation(self, conversation_id: str) -> httpx.Response:
        return await self.http.get(f"/api/agent/conversations/{conversation_id}")

    async def post(self, path: str, body: Any = None, *, csrf: bool = True) -> httpx.Response:
        headers = self.write_headers() if csrf else {}
        return await self.http.post(path, json=body if body is not None else {}, headers=headers)

    async def claim(self, conversation_id: str) -> httpx.Response:
        return await self.post(f"/api/agent/conversations/{conversation_id}/claim")

    async def send(self, conversation_id: str, text: str, *, internal: bool = False) -> httpx.Response:
        return await self.post(
            f"/api/agent/conversations/{conversation_id}/messages", {"text": text, "internal": internal}
        )

    async def resolve(self, conversation_id: str) -> httpx.Response:
        return await self.post(f"/api/agent/conversations/{conversation_id}/resolve")

    async def handback(self, conversation_id: str) -> httpx.Response:
        return await self.post(f"/api/agent/conversations/{conversation_id}/handback")

    async def connect(self) -> FrameStream:
        """Open /ws/agent/ with the session cookie."""
        cookie = "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.http.cookies.jar)
        websocket_url = self.base_url.replace("http://", "ws://", 1) + "/ws/agent/"
        self.stream = await open_stream(websocket_url, origin=self.base_url, headers={"Cookie": cookie})
        return self.stream

    @property
    def socket(self) -> FrameStream:
        assert self.stream is not None, "the agent's socket is not open"
        return self.stream

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.close()
        await self.http.aclose()


def matching(frames: list[Frame], predicate: FramePredicate) -> list[Frame]:
    """The frames that match, in the order they came (to check what came, and what never did)."""
    return [frame for frame in frames if predicate(frame)]


async def agent_open(agent: AgentClient, conversation_id: str) -> Frame:
    """Open a conversation on the agent's socket (README: `open` a conversation to get its live
    messages); the `conversation.opened` frame that answers it."""
    mark = agent.socket.mark()
    await agent.socket.send({"type": "open", "conversation": conversation_id})
    return await agent.socket.wait_for(of_type("conversation.opened"), after=mark)
