"""Enforcing the IP rules: a Django middleware for HTTP, an ASGI middleware for websockets.

Both take the client's address from cs_platform/client_ip.py (the TCP peer, X-Forwarded-For only
through TRUSTED_PROXIES), find the path's scope and ask access/rules.py for the verdict. Paths in no
scope (/healthz, /readyz, /static/, ...) are not looked at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from access.rules import Scope, Verdict, ip_verdict, refusal_detail, rule_cache, scope_for_path
from cs_platform.client_ip import client_ip_from_request, client_ip_from_scope

logger = logging.getLogger(__name__)

REFUSED_CODE = "ip_not_allowed"
# The websocket close code of a refused address (HTTP's 403, in the 4000s applications may use).
REFUSED_CLOSE_CODE = 4403


def request_verdict(request: HttpRequest, *, scope: Scope) -> Verdict:
    """The verdict IpRulesMiddleware reached for `request`, or reaches now for `scope` if it did not run.

    For a view that combines the rules with a check of its own (/metrics), so that the rules hold even
    were the middleware left out of MIDDLEWARE.
    """
    verdict: Verdict | None = getattr(request, "ip_verdict", None)
    if verdict is None:
        verdict = ip_verdict(scope=scope, address=client_ip_from_request(request), rules=rule_cache.current())
    return verdict


class IpRulesMiddleware:
    """Refuse an HTTP request from an address its path's scope does not admit: 403 `ip_not_allowed`.

    Placed before the session and authentication middleware, so that a refused address costs no session
    read; after CorsMiddleware, so that a browser on another origin can read why it was refused.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        scope = scope_for_path(request.path_info)
        if scope is None:
            return self.get_response(request)
        address = client_ip_from_request(request)
        verdict = ip_verdict(scope=scope, address=address, rules=rule_cache.current())
        request.ip_verdict = verdict  # type: ignore[attr-defined]  # read by /metrics (request_verdict)
        if not verdict.admitted:
            logger.info(
                "IP rules refused %s %s from %s (%s scope: %s%s).",
                request.method,
                request.path_info,
                address or "an unknown address",
                scope,
                verdict.reason,
                f", rule {verdict.rule_id}" if verdict.rule_id is not None else "",
            )
            detail = refusal_detail(scope=scope, address=address)
            body: dict[str, Any] = {"code": REFUSED_CODE, "detail": detail}
            if scope == Scope.API:
                # The gateway's callers use OpenAI clients, which read the reason from `error`.
                body["error"] = {
                    "message": detail,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": REFUSED_CODE,
                }
            return JsonResponse(body, status=403)
        return self.get_response(request)


# channels.testing's WebsocketCommunicator builds a scope with no "client" key at all, where every ASGI
# server names one (daphne: [host, port], or None on a unix socket, which is then an unknown address).
# Such a scope comes from code in the same process, as local as it gets: it is read as 127.0.0.1, the
# address Django's test client gives its requests.
IN_PROCESS_PEER = "127.0.0.1"


def websocket_client_ip(scope: dict[str, Any]) -> str | None:
    """The client's address for a websocket, resolved as for HTTP (cs_platform/client_ip.py)."""
    if "client" not in scope:
        scope = {**scope, "client": [IN_PROCESS_PEER, 0]}
    return client_ip_from_scope(scope)


class IpRulesWebsocketMiddleware:
    """Close a websocket from an address its path's scope does not admit, with code 4403.

    The socket is accepted first and closed at once: a close sent before the accept makes daphne refuse
    the handshake with HTTP 403 (WebSocketServerProtocol.serverReject), which a browser's WebSocket
    reports as code 1006 with no reason, so the client could not tell a refused address from a network
    failure. Accepted, the close frame carries 4403 to the client.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        ip_scope = scope_for_path(scope.get("path", ""))
        if ip_scope is None:
            return await self.inner(scope, receive, send)
        address = websocket_client_ip(scope)
        verdict = ip_verdict(scope=ip_scope, address=address, rules=await rule_cache.current_async())
        if verdict.admitted:
            return await self.inner(scope, receive, send)
        logger.info(
            "IP rules refused the websocket %s from %s (%s scope: %s%s).",
            scope.get("path"),
            address or "an unknown address",
            ip_scope,
            verdict.reason,
            f", rule {verdict.rule_id}" if verdict.rule_id is not None else "",
        )
        message = await receive()
        if message["type"] != "websocket.connect":
            return None  # the client went before asking to connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": REFUSED_CLOSE_CODE})
        return None
