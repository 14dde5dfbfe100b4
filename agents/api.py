"""The agent console's REST API (staff session, CSRF on writes): queues, transcripts, claim, reply."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import authenticate, login, logout
from django.middleware.csrf import get_token
from django.utils.decorators import method_decorator
from django_ratelimit.core import get_usage
from django_ratelimit.decorators import ratelimit
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import console, selectors
from agents.permissions import AgentPermission, AgentSessionAuthentication, csrf_check, user_is_agent
from agents.serializers import (
    agent_data,
    agent_message_data,
    canned_reply_data,
    conversation_detail_data,
    queue_item_data,
    ticket_data,
)
from agents.services import TicketAlreadyClaimed
from conversations.api import RATELIMIT_KEY, ApiError, rate_window_seconds, setting_rate
from conversations.errors import ServiceError
from conversations.models import Conversation

# Refusals that are about the conversation's state or another agent, not a malformed request.
CONFLICT_CODES = frozenset(
    {"already_claimed", "claimed_by_other", "not_claimed", "no_ticket", "ticket_resolved"}
)


def _service_error(error: ServiceError) -> ApiError:
    status_code = status.HTTP_409_CONFLICT if error.code in CONFLICT_CODES else status.HTTP_400_BAD_REQUEST
    return ApiError(error.code, error.detail, status_code)


# Sign-ins to the console and to admin count together (cs_platform/staff_login.py): one budget per address.
LOGIN_GROUP = "staff-login"
LOGIN_RATE = setting_rate("RATE_LIMIT_STAFF_LOGINS")


def login_retry_after(request: Any) -> int:
    """Seconds until this address may try to sign in again (its window's end, or a whole window)."""
    window = rate_window_seconds(LOGIN_RATE(LOGIN_GROUP, request))
    usage = get_usage(request, group=LOGIN_GROUP, key=RATELIMIT_KEY, rate=LOGIN_RATE, increment=False)
    time_left = usage["time_left"] if usage else 0
    return int(time_left) if 0 < time_left <= window else window


def _login_rate_limited(request: Request) -> ApiError:
    error = ApiError(
        "rate_limited", "Too many login attempts; wait a minute.", status.HTTP_429_TOO_MANY_REQUESTS
    )
    error.wait = login_retry_after(request)
    return error


def _agent_groups(user: Any) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


class AgentApiView(APIView):
    """Every agent endpoint: the staff session, CSRF on unsafe methods, agents only."""

    authentication_classes = [AgentSessionAuthentication]
    permission_classes = [AgentPermission]

    def conversation(self, conversation_id: uuid.UUID) -> Conversation:
        conversation = selectors.conversation_get(conversation_id=conversation_id)
        if conversation is None:
            raise ApiError("not_found", "There is no such conversation.", status.HTTP_404_NOT_FOUND)
        return conversation


class LoginInput(serializers.Serializer[Any]):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


@method_decorator(ratelimit(group=LOGIN_GROUP, key=RATELIMIT_KEY, rate=LOGIN_RATE, block=False), name="post")
class SessionApi(APIView):
    """Log in and out of the console; GET also hands out the CSRF cookie the writes need."""

    authentication_classes = [AgentSessionAuthentication]
    permission_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        user = request.user
        signed_in = user is not None and user.is_authenticated
        return Response(
            {
                "authenticated": bool(signed_in),
                "agent": agent_data(user) if signed_in else None,
                "is_agent": bool(signed_in and user_is_agent(user)),
                # Also set as the csrftoken cookie; send it back as X-CSRFToken on every POST.
                "csrf_token": get_token(request._request),
            }
        )

    def post(self, request: Request) -> Response:
        if getattr(request, "limited", False):
            raise _login_rate_limited(request)
        # Login CSRF too: a forged login would sign the agent's browser into someone else's account.
        csrf_check(request)
        payload = LoginInput(data=request.data)
        payload.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=payload.validated_data["username"],
            password=payload.validated_data["password"],
        )
        if user is None:
            raise ApiError("invalid_credentials", "The username or password is wrong.", 400)
        if not user_is_agent(user):
            raise ApiError(
                "not_an_agent",
                "Only people in the Agent, Supervisor or Manager group may use the agent console.",
                status.HTTP_403_FORBIDDEN,
            )
        login(request._request, user)
        return Response(
            {
                "agent": agent_data(user),
                "groups": _agent_groups(user),
                "csrf_token": get_token(request._request),
            }
        )

    def delete(self, request: Request) -> Response:
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConversationListApi(AgentApiView):
    def get(self, request: Request) -> Response:
        queue = request.query_params.get("queue", "waiting")
        if queue not in selectors.QUEUES:
            raise ApiError("invalid_queue", f"queue must be one of {', '.join(selectors.QUEUES)}.")
        items = selectors.queue_list(queue=queue, user=request.user)
        return Response(
            {
                "queue": queue,
                "conversations": [
                    queue_item_data(item.conversation, ticket=item.ticket, last_message=item.last_message)
                    for item in items
                ],
                "counts": selectors.queue_counts_get(user=request.user),
            }
        )


class ConversationDetailApi(AgentApiView):
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        detail = selectors.conversation_detail_get(conversation=self.conversation(conversation_id))
        return Response(
            conversation_detail_data(
                detail.conversation, messages=detail.messages, tickets=detail.tickets, csat=detail.csat
            )
        )


class ClaimApi(AgentApiView):
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        try:
            outcome = console.conversation_claim(
                conversation=self.conversation(conversation_id), agent=request.user
            )
        except TicketAlreadyClaimed as error:
            # The loser sees who has it: named in the detail, and as an agent for the console to show.
            return Response(
                {"code": error.code, "detail": error.detail, "assignee": agent_data(error.holder)},
                status=status.HTTP_409_CONFLICT,
            )
        except ServiceError as error:
            raise _service_error(error) from error
        return Response({"ticket": ticket_data(outcome.ticket), "claimed_here": outcome.claimed_here})


class MessageInput(serializers.Serializer[Any]):
    text = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=100_000)
    internal = serializers.BooleanField(default=False)


class MessageCreateApi(AgentApiView):
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation = self.conversation(conversation_id)
        if not isinstance(request.data, dict):
            raise ApiError("invalid_request", 'Send a JSON object: {"text": "...", "internal": false}.')
        payload = MessageInput(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            message = console.agent_message_post(
                conversation=conversation,
                agent=request.user,
                text=payload.validated_data["text"],
                internal=payload.validated_data["internal"],
            )
        except ServiceError as error:
            raise _service_error(error) from error
        return Response(agent_message_data(message), status=status.HTTP_201_CREATED)


class ResolveApi(AgentApiView):
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        try:
            ticket = console.conversation_resolve(
                conversation=self.conversation(conversation_id), agent=request.user
            )
        except ServiceError as error:
            raise _service_error(error) from error
        return Response({"ticket": ticket_data(ticket)})


class HandBackApi(AgentApiView):
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        try:
            ticket = console.conversation_hand_back(
                conversation=self.conversation(conversation_id), agent=request.user
            )
        except ServiceError as error:
            raise _service_error(error) from error
        return Response({"ticket": ticket_data(ticket)})


class CannedReplyListApi(AgentApiView):
    def get(self, request: Request) -> Response:
        return Response(
            {"canned_replies": [canned_reply_data(reply) for reply in selectors.canned_replies_list()]}
        )
