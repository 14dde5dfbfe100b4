"""Who may use the agent console: people in the Agent, Supervisor or Manager group, and superusers.

One rule for the REST API and the websocket, so that a person the API refuses cannot watch the
queue over `/ws/agent/` either (and the reverse). Staff status alone is not enough: it lets a person
into admin, which is a different job.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import CSRFCheck, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

__all__ = [
    "AGENT_GROUPS",
    "SUPERVISING_GROUPS",
    "AgentPermission",
    "AgentSessionAuthentication",
    "CsrfFailed",
    "StaffGroupPermission",
    "csrf_check",
    "user_is_agent",
    "user_is_supervisor",
]

AGENT_GROUPS = ("Agent", "Supervisor", "Manager")
# May act on a conversation another agent holds (resolve it, hand it back, answer in it).
SUPERVISING_GROUPS = ("Supervisor", "Manager")


def _user_in_groups(user: Any, groups: tuple[str, ...]) -> bool:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return bool(user.groups.filter(name__in=groups).exists())


def user_is_agent(user: Any) -> bool:
    """Whether this user may use the agent console (REST and websocket)."""
    return _user_in_groups(user, AGENT_GROUPS)


def user_is_supervisor(user: Any) -> bool:
    """Whether this user may act on conversations other agents hold."""
    return _user_in_groups(user, SUPERVISING_GROUPS)


class CsrfFailed(exceptions.APIException):
    """A POST without a valid CSRF token: the session cookie alone never authorises a write."""

    status_code = 403
    default_code = "csrf_failed"


def _no_response(request: Any) -> Any:
    return None


def csrf_check(request: Request) -> None:
    """Refuse a request whose CSRF token is missing or wrong (Django's own check, as DRF runs it)."""
    check = CSRFCheck(_no_response)
    # As DRF's SessionAuthentication does it: process_request reads the cookie process_view checks.
    check.process_request(request)
    reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
    if reason is not None:
        raise CsrfFailed(
            detail="CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header.",
            code="csrf_failed",
        )


class AgentSessionAuthentication(SessionAuthentication):
    """Django's session, with CSRF enforced on every unsafe method and refused as `csrf_failed`."""

    def enforce_csrf(self, request: Request) -> None:
        csrf_check(request)


class StaffGroupPermission(BasePermission):
    """Logged in (else 403 `not_authenticated`) and admitted by `admits` (else 403 `refusal_code`
    with `refusal_detail`): the staff APIs' rule, each with its own groups."""

    refusal_code = "not_an_agent"
    refusal_detail = "Only people in the Agent, Supervisor or Manager group may use the agent console."

    def admits(self, user: Any) -> bool:
        return user_is_agent(user)

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            raise exceptions.NotAuthenticated(
                detail="Log in with a staff account first (POST /api/agent/session).",
                code="not_authenticated",
            )
        if not self.admits(user):
            raise exceptions.PermissionDenied(detail=self.refusal_detail, code=self.refusal_code)
        return True


class AgentPermission(StaffGroupPermission):
    """Logged in (else 403 `not_authenticated`) and in an agent group (else 403 `not_an_agent`)."""
