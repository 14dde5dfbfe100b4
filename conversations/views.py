"""Pages: the customer's full-page chat (also the widget's iframe)."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_exempt

from inference.prompts import active_profile

_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")


def _widget_config(request: HttpRequest) -> dict[str, Any]:
    language = request.GET.get("lang")
    colour = request.GET.get("color", "")
    embedded = request.GET.get("embed") == "1"
    return {
        "apiBase": "/api/widget",
        "locale": language if language in {"zh-Hans", "en"} else None,
        "maxAttachmentsPerMessage": settings.ATTACHMENT_MAX_PER_MESSAGE,
        "maxUploadBytes": settings.ATTACHMENT_MAX_BYTES,
        "maxImageSide": settings.ATTACHMENT_MAX_SIDE,
        "acceptedTypes": ["image/jpeg", "image/png", "image/webp", "image/gif"],
        "embedded": embedded,
        # Only the embedding site chooses a greeting or a title, and not through this page's URL
        # (a crafted link to /chat/ must not put words in the company's mouth): embed.js sends them
        # by postMessage, and the widget listens only to a parent page on one of these origins.
        "allowedOrigins": list(settings.WIDGET_ALLOWED_ORIGINS),
        "brandColor": colour if _COLOUR.match(colour) else None,
        "title": active_profile().name,
        # The widget gives up on a reply that shows no sign of life a little after the server would.
        "replyTimeoutSeconds": int(settings.INFERENCE_FIRST_TOKEN_TIMEOUT) + 30,
    }


@xframe_options_exempt
def chat_page(request: HttpRequest) -> HttpResponse:
    """The customer chat; framed by embed.js on the origins in WIDGET_ALLOWED_ORIGINS."""
    response = render(request, "widget/chat.html", {"widget_config": _widget_config(request)})
    ancestors = " ".join(["'self'", *settings.WIDGET_ALLOWED_ORIGINS])
    response["Content-Security-Policy"] = (
        f"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        f"connect-src 'self' ws: wss:; frame-ancestors {ancestors}; base-uri 'none'; form-action 'none'"
    )
    return response
