"""Admin's sign-in page, rate-limited per address together with the agent console's sign-in, and the
answer to a sign-in of an account locked out by django-axes (repeated failures, settings AXES_*).

Both forms take a password for a staff account; one budget (RATE_LIMIT_STAFF_LOGINS, counted in
Redis across every web process) makes guessing no faster through one than through the other. Only
POSTs count: opening the page costs nothing. Over the limit, the page answers 429 with Retry-After and
says so, without checking the password.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import format_html
from django_ratelimit.core import is_ratelimited

from agents.api import LOGIN_GROUP, LOGIN_RATE, login_retry_after
from conversations.api import RATELIMIT_KEY


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """django-axes' answer to a sign-in of a locked account: 429 with Retry-After, as JSON
    (`{"code": "locked_out", "detail"}`) for the console's API and as a page for admin."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    detail = (
        f"Too many failed sign-ins to this account from this address: it is locked here for "
        f"{minutes} minutes. Ask an administrator to unlock it sooner."
    )
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"code": "locked_out", "detail": detail}, status=429)
    else:
        response = HttpResponse(
            format_html(
                "<!doctype html><title>Account locked</title><h1>Account locked</h1><p>{}</p>"
                '<p><a href="{}">Back to the sign-in page</a></p>',
                detail,
                request.get_full_path(),
            ),
            status=429,
        )
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response


def admin_login(request: HttpRequest) -> HttpResponse:
    # Counted by hand for POSTs only: django-ratelimit's key includes its `method` filter, and the
    # console's count (every method) must be this one.
    if request.method == "POST" and is_ratelimited(
        request, group=LOGIN_GROUP, key=RATELIMIT_KEY, rate=LOGIN_RATE, increment=True
    ):
        wait = login_retry_after(request)
        response = HttpResponse(
            format_html(
                "<!doctype html><title>Too many sign-in attempts</title>"
                "<h1>Too many sign-in attempts</h1><p>Too many sign-in attempts came from this address. "
                'Try again in {} seconds: <a href="{}">back to the sign-in page</a>.</p>',
                wait,
                request.get_full_path(),
            ),
            status=429,
        )
        response["Retry-After"] = str(wait)
        return response
    return admin.site.login(request)
