"""Refuse an upload (or a gateway request) over its size limit before Django reads it: the second line
of defence.

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
from collections.abc import Callable
from dataclasses import dataclass
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


def _gateway_too_large_body() -> bytes:
    """The gateway's own 413 (gateway/views.py), in OpenAI's shape as its callers read errors."""
    message = f"The request body is over {settings.GATEWAY_MAX_REQUEST_BYTES} bytes."
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": "request_too_large"}
    return json.dumps({"error": error}).encode()


@dataclass(frozen=True)
class BodyLimit:
    """The paths whose bodies may be larger than a small JSON document, how large, and the refusal."""

    path_pattern: re.Pattern[str]
    limit: Callable[[], int]
    refusal: Callable[[], bytes]


UPLOAD_LIMIT = BodyLimit(
    re.compile(r"^/api/widget/conversations/[^/]+/attachments/?$"),
    lambda: settings.ATTACHMENT_MAX_BYTES + MULTIPART_OVERHEAD_BYTES,
    _too_large_body,
)
# The OpenAI-compatible gateway: images come inline, as base64 in the JSON body.
GATEWAY_LIMIT = BodyLimit(
    re.compile(r"^/v1/"), lambda: settings.GATEWAY_MAX_REQUEST_BYTES, _gateway_too_large_body
)


class UploadSizeLimitMiddleware:
    """ASGI middleware capping request bodies on the upload path at ATTACHMENT_MAX_BYTES (+ multipart room)
    and on the gateway's at GATEWAY_MAX_REQUEST_BYTES."""

    def __init__(self, app: Any, limits: tuple[BodyLimit, ...] = (UPLOAD_LIMIT, GATEWAY_LIMIT)) -> None:
        self.app = app
        self.limits = limits

    async def __call__(
        self, scope: dict[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        rule = (
            next((rule for rule in self.limits if rule.path_pattern.match(scope["path"])), None)
            if scope["type"] == "http"
            else None
        )
        if rule is None:
            await self.app(scope, receive, send)
            return
        limit = rule.limit()
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, rule)
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
                    await self._refuse(send, rule)
                    # Django sees a disconnect and drops the request without answering it.
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: ASGISendCallable, rule: BodyLimit) -> None:
        body = rule.refusal()
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
