"""Template context for staff pages: whether the reader may open the reports (admin's top links)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from agents.permissions import user_is_supervisor


def staff_links(request: HttpRequest) -> dict[str, Any]:
    """`reports_readable`, asked only when a template uses it (a callable: the widget never pays for it)."""
    return {"reports_readable": lambda: user_is_supervisor(getattr(request, "user", None))}
