"""Which pages may open the platform's websockets: the Origin a browser sends, checked per route.

The agent console's socket (/ws/agent/) opens only from the platform's own pages (ALLOWED_HOSTS),
as every staff page is served by it. A customer's conversation socket (/ws/conversations/) opens from
those and from the pages that embed the widget (WIDGET_ALLOWED_ORIGINS, the same list CORS admits to
the widget's REST API), so that a page of the company's own that talks to the platform directly
works, while any other site's page cannot open a customer's socket in its visitor's browser. A
socket with no Origin (not a browser) is refused, as Channels' validator does.
"""

from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings

__all__ = ["CONVERSATION_SOCKETS", "websocket_origin_validated"]

CONVERSATION_SOCKETS = "/ws/conversations/"


def _own_hosts() -> list[str]:
    """ALLOWED_HOSTS, as Channels' AllowedHostsOriginValidator reads them (localhost with DEBUG)."""
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = ["localhost", "127.0.0.1", "[::1]"]
    return hosts


def websocket_origin_validated(application: Any) -> Any:
    """`application` behind the Origin check of its route (this module's docstring)."""

    async def validated(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        # Built per connection (a list and an object): the settings as they are now, overrides included.
        allowed = _own_hosts()
        if str(scope.get("path", "")).startswith(CONVERSATION_SOCKETS):
            allowed += settings.WIDGET_ALLOWED_ORIGINS
        return await OriginValidator(application, allowed)(scope, receive, send)

    return validated
