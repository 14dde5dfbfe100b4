"""Refuse an upload over the size limit before Django reads it: the second line of defence.

The first is the front proxy (deploy/nginx), which refuses such a body before daphne reads any of
it. Nothing here can spare daphne that memory: daphne reads a request's whole body before any ASGI
code runs. What this still does, behind a proxy whose cap was raised or removed, or with none (the
embedded `make run`): Django's ASGI handler would spool the whole body again and parse it before any
view could look at its size, so a declared Content-Length over the limit is answered at once, and a
body that grows past it (chunked, or a lying header) is cut off as soon as it does, with the
contract's 413 `too_large`. Straight at daphne, a 100 MB body left it at 101 MB afterwards with
this, and at 208 MB without.
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
