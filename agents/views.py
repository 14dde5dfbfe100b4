"""The agent console page, /agent/: the sign-in form, the console itself, or a refusal."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.utils.translation import get_language_from_request
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from agents.permissions import user_is_agent, user_is_supervisor
from agents.serializers import agent_data

__all__ = ["CONSOLE_LOCALES", "console_locale", "console_page"]

# The console's languages, as the widget and the conversations name them.
CONSOLE_LOCALES = ("en", "zh-Hans")

# Django's language codes are lower-case (zh-hans); the console's strings use the BCP 47 case.
_DJANGO_TO_CONSOLE = {"en": "en", "zh-hans": "zh-Hans"}

# Only the console's own modules, the vendored libraries and its own socket: nothing from elsewhere.
CONSOLE_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def console_locale(request: HttpRequest) -> str:
    """The console's language before the agent picks one: `?lang=`, else Accept-Language, else
    LANGUAGE_CODE (the page remembers a choice made with its switch in the browser)."""
    asked = request.GET.get("lang")
    if asked in CONSOLE_LOCALES:
        return asked
    return _DJANGO_TO_CONSOLE.get(get_language_from_request(request).lower(), "en")


def _console_config(user: Any) -> dict[str, Any]:
    return {
        "apiBase": "/api/agent",
        "wsPath": "/ws/agent/",
        "agent": agent_data(user),
        "supervisor": user_is_supervisor(user),
        "assist": settings.AGENT_ASSIST_ENABLED,
    }


@require_safe
@never_cache
def console_page(request: HttpRequest) -> HttpResponse:
    """The console for agents; a sign-in form for nobody; 403 for everyone else signed in.

    The sign-in form posts to /api/agent/session rather than sending people to admin's login page,
    which turns away the agents who are not staff (the demo's lin and sam among them). All three are
    the same page, drawn by static/agent/ in the language the agent chose.
    """
    user = request.user
    locale = console_locale(request)
    config: dict[str, Any] = {"locale": locale, "csrfToken": get_token(request)}
    status = 200
    if not user.is_authenticated:
        config["page"] = "login"
    elif not user_is_agent(user):
        config.update(page="forbidden", username=user.get_username())
        status = 403
    else:
        config.update(page="console", **_console_config(user))
    response = render(
        request, "agents/console.html", {"locale": locale, "console_config": config}, status=status
    )
    response["Content-Security-Policy"] = CONSOLE_CONTENT_SECURITY_POLICY
    return response
