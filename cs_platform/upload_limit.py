"""Refuse an upload over the size limit while its body streams in, before it is read whole.

Django's ASGI handler reads a request's whole body before any view runs, so the limit must sit in
front of it: a declared Content-Length over the limit is refused at once, and a body that grows past
it (chunked, or a lying header) is cut off as soon as it does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable
from django.conf import settings

# Room for the multipart boundary and part headers around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def _too_large_body() -> bytes:
    limit_mb = settings.ATTACHMENT_MAX_BYTES / (1024 * 1024)
    return json.dumps(
        {"code": "too_large", "detail": f"The file is larger than the {limit_mb:g} MB limit."}
    ).encode()


class UploadSizeLimitMiddleware:
    """ASGI middleware capping request bodies on upload paths at ATTACHMENT_MAX_BYTES (+ multipart room)."""

    def __init__(
        self, app: Any, path_pattern: str = r"^/api/widget/conversations/[^/]+/attachments/?$"
    ) -> None:
        self.app = app
        self.path_pattern = re.compile(path_pattern)

    async def __call__(
        self, scope: dict[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or not self.path_pattern.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        limit = settings.ATTACHMENT_MAX_BYTES + MULTIPART_OVERHEAD_BYTES
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Any:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await self._refuse(send)
                    # Django sees a disconnect and drops the request without answering it.
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: ASGISendCallable) -> None:
        body = _too_large_body()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
                "trailers": False,
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
