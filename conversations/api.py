"""The widget's REST API: conversations, history, attachments, ratings, quick entries."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import FileResponse, HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django_ratelimit.core import get_usage
from django_ratelimit.decorators import ratelimit
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from conversations import selectors, services
from conversations.images import ImageRejected
from conversations.models import Attachment, Conversation
from conversations.serializers import ATTACHMENT_SIGNING_SALT, attachment_data, message_data
from conversations.uploads import UploadsBusy
from cs_platform.client_ip import client_ip_from_request
from knowledge.selectors import quick_entry_list

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error with our own code, rendered as {"code", "detail"}."""

    # Seconds; DRF's exception handler sends it as Retry-After.
    wait: int | None = None

    def __init__(self, code: str, detail: str, status_code: int = status.HTTP_400_BAD_REQUEST) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = status_code


def exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    """Every API error as {"code": ..., "detail": ...}."""
    response = drf_exception_handler(error, context)
    if response is None:
        return None
    if isinstance(error, exceptions.ParseError) and str(error.detail).startswith("JSON parse error"):
        # DRF's own code (parse_error) is not one the contract names; the frames say invalid_json too.
        response.data = {"code": "invalid_json", "detail": "The request body is not valid JSON."}
    elif isinstance(error, exceptions.ValidationError):
        from conversations.frames import first_error

        response.data = {"code": "invalid_request", "detail": first_error(error.detail)}
    elif isinstance(error, exceptions.APIException):
        codes = error.get_codes()
        response.data = {"code": codes if isinstance(codes, str) else "error", "detail": str(error.detail)}
    return response


RATELIMIT_KEY = "cs_platform.client_ip.ratelimit_key"
_RATE_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def setting_rate(name: str) -> Callable[[str, Any], str]:
    """A django-ratelimit rate read from the setting `name` on every request (so that a test or a
    deployment's override applies without re-importing the views)."""

    def rate(group: str, request: Any) -> str:
        return str(getattr(settings, name))

    rate.__name__ = f"rate_{name.lower()}"
    return rate


def rate_window_seconds(rate: str) -> int:
    """The window of a rate such as "30/m" or "100/5m", in seconds."""
    period = rate.partition("/")[2]
    count = int(period[:-1] or 1)
    return count * _RATE_UNIT_SECONDS[period[-1]]


def conversation_key(group: str, request: Any) -> str:
    """django-ratelimit key: the conversation in the address (/conversations/<id>/...)."""
    return str(request.resolver_match.kwargs.get("conversation_id", ""))


NEW_CONVERSATION_RATE = setting_rate("RATE_LIMIT_NEW_CONVERSATIONS")
UPLOAD_RATE_PER_IP = setting_rate("RATE_LIMIT_UPLOADS_PER_IP")
UPLOAD_RATE_PER_CONVERSATION = setting_rate("RATE_LIMIT_UPLOADS_PER_CONVERSATION")
CSAT_RATE = setting_rate("RATE_LIMIT_CSAT")


def _rate_limited(
    request: Request,
    group: str,
    rate: Callable[[str, Any], str],
    detail: str,
    key: str | Callable[[str, Any], str] = RATELIMIT_KEY,
) -> ApiError:
    """429 `rate_limited`, with Retry-After: the seconds until the client's window ends."""
    window = rate_window_seconds(rate(group, request))
    usage = get_usage(request, group=group, key=key, rate=rate, increment=False)
    time_left = usage["time_left"] if usage else 0
    error = ApiError("rate_limited", detail, status.HTTP_429_TOO_MANY_REQUESTS)
    error.wait = time_left if 0 < time_left <= window else window
    return error


def _bearer_token(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            "not_authenticated", "Send the conversation's token as 'Authorization: Bearer <token>'.", 401
        )
    return token.strip()


def authorised_conversation(request: Request, conversation_id: uuid.UUID) -> Conversation:
    """The conversation named in the URL, if the request carries its token; else 401."""
    conversation = selectors.conversation_get_by_token(
        conversation_id=conversation_id, token=_bearer_token(request)
    )
    if conversation is None:
        raise ApiError("invalid_token", "This token does not open this conversation.", 401)
    return conversation


def _locale_from_accept_language(header: str) -> str:
    for part in header.split(","):
        language = part.split(";")[0].strip().lower()
        if language.startswith("zh"):
            return Conversation.Locale.ZH_HANS
        if language.startswith("en"):
            return Conversation.Locale.EN
    return Conversation.Locale.EN


CUSTOMER_ID_MAX_LENGTH = Conversation._meta.get_field("verified_customer_id").max_length or 128


def customer_hash(*, customer_id: str, secret: str) -> str:
    """What the host site sends as `customer.hash`: the hex HMAC-SHA256 of the id, keyed with the secret."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def customer_hash_matches(*, customer_id: str, given_hash: str, secret: str) -> bool:
    """Whether `given_hash` is the id's HMAC, in either case of hex, compared in constant time."""
    given = given_hash.lower()
    # compare_digest refuses a str with other than ASCII in it (a TypeError): such a hash is just wrong.
    if not given.isascii():
        return False
    return hmac.compare_digest(customer_hash(customer_id=customer_id, secret=secret), given)


class ConversationCreateInput(serializers.Serializer[Any]):
    locale = serializers.ChoiceField(choices=Conversation.Locale.choices, required=False)
    metadata = serializers.DictField(required=False, default=dict)
    # {"id", "hash"}: who the host site says its signed-in customer is. Checked in the view, which can
    # answer 403 (a wrong hash is not a malformed request); here only its shape.
    customer = serializers.JSONField(required=False, allow_null=True, default=None)

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        import json

        if len(json.dumps(value)) > 4000:
            raise serializers.ValidationError("Metadata is limited to 4000 characters of JSON.")
        return value

    def validate_customer(self, value: Any) -> tuple[str, str] | None:
        """The customer's (id, hash), or None for an anonymous one; a missing hash is ""."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise serializers.ValidationError('Send the customer as {"id": "...", "hash": "..."}.')
        customer_id = value.get("id")
        # A JSON whole number stands for its decimal string, which is what the host site signed (an id
        # read from a number column); true and 4.5 are not ids.
        if isinstance(customer_id, int) and not isinstance(customer_id, bool):
            customer_id = str(customer_id)
        if not isinstance(customer_id, str) or not customer_id:
            raise serializers.ValidationError("The customer's id is a non-empty string.")
        if len(customer_id) > CUSTOMER_ID_MAX_LENGTH:
            raise serializers.ValidationError(
                f"The customer's id is at most {CUSTOMER_ID_MAX_LENGTH} characters."
            )
        # PostgreSQL cannot store NUL, and no real id holds a control character.
        if any(ord(character) < 32 or ord(character) == 127 for character in customer_id):
            raise serializers.ValidationError("The customer's id cannot contain control characters.")
        given_hash = value.get("hash")
        if given_hash is None:
            given_hash = ""
        if not isinstance(given_hash, str):
            raise serializers.ValidationError("The customer's hash is a string of hex digits.")
        return customer_id, given_hash


def verified_customer_id(customer: tuple[str, str]) -> str:
    """The customer's id if its hash is the one WIDGET_IDENTITY_SECRET makes; else 403 invalid_identity."""
    customer_id, given_hash = customer
    secret = settings.WIDGET_IDENTITY_SECRET
    if not secret:
        # Refused rather than opened unverified: the host site means its customer to be known, and a
        # chat that silently lost who they are (and every tool for their own orders) is harder to notice
        # and diagnose than one refused with the reason.
        logger.warning("A widget conversation named a customer, but WIDGET_IDENTITY_SECRET is not set")
        raise ApiError(
            "invalid_identity",
            "This platform cannot verify customers: it has no WIDGET_IDENTITY_SECRET.",
            status.HTTP_403_FORBIDDEN,
        )
    if not given_hash:
        raise ApiError(
            "invalid_identity",
            "The customer's id came without its hash (the HMAC-SHA256 of the id, in hex).",
            status.HTTP_403_FORBIDDEN,
        )
    if not customer_hash_matches(customer_id=customer_id, given_hash=given_hash, secret=secret):
        raise ApiError(
            "invalid_identity", "The customer's hash does not match its id.", status.HTTP_403_FORBIDDEN
        )
    return customer_id


@method_decorator(
    ratelimit(group="widget-conversation-create", key=RATELIMIT_KEY, rate=NEW_CONVERSATION_RATE, block=False),
    name="post",
)
class ConversationCreateApi(APIView):
    def post(self, request: Request) -> Response:
        if getattr(request, "limited", False):
            raise _rate_limited(
                request,
                "widget-conversation-create",
                NEW_CONVERSATION_RATE,
                "Too many new conversations from this address; try again shortly.",
            )
        payload = ConversationCreateInput(data=request.data or {})
        payload.is_valid(raise_exception=True)
        locale = payload.validated_data.get("locale") or _locale_from_accept_language(
            request.headers.get("Accept-Language", "")
        )
        customer = payload.validated_data.get("customer")
        conversation, token = services.conversation_create(
            locale=locale,
            metadata=payload.validated_data["metadata"],
            customer_ip=client_ip_from_request(request),
            customer_user_agent=request.headers.get("User-Agent", ""),
            verified_customer_id=verified_customer_id(customer) if customer is not None else "",
        )
        return Response(
            {
                "id": str(conversation.pk),
                "token": token,
                "ws_path": f"/ws/conversations/{conversation.pk}/",
                # An extension: the widget remembers whose conversation it keeps (a page signed in as
                # someone else starts a new one).
                "customer_verified": bool(conversation.verified_customer_id),
            },
            status=status.HTTP_201_CREATED,
        )


class MessageListApi(APIView):
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation = authorised_conversation(request, conversation_id)
        messages = selectors.message_list(conversation=conversation)
        return Response({"messages": [message_data(message) for message in messages]})


@method_decorator(
    ratelimit(group="widget-attachment-upload", key=RATELIMIT_KEY, rate=UPLOAD_RATE_PER_IP, block=False),
    name="post",
)
@method_decorator(
    ratelimit(
        group="widget-attachment-upload-conversation",
        key=conversation_key,
        rate=UPLOAD_RATE_PER_CONVERSATION,
        block=False,
    ),
    name="post",
)
class AttachmentUploadApi(APIView):
    parser_classes = [MultiPartParser, JSONParser]

    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation = authorised_conversation(request, conversation_id)
        if getattr(request, "limited", False):
            per_ip = _rate_limited(
                request,
                "widget-attachment-upload",
                UPLOAD_RATE_PER_IP,
                "Too many uploads; please wait a minute.",
            )
            per_conversation = _rate_limited(
                request,
                "widget-attachment-upload-conversation",
                UPLOAD_RATE_PER_CONVERSATION,
                "Too many uploads; please wait a minute.",
                key=conversation_key,
            )
            # Whichever limit was reached, the client may try again once both windows allow it.
            per_ip.wait = max(per_ip.wait or 0, per_conversation.wait or 0)
            raise per_ip
        upload = request.FILES.get("file")
        if upload is None:
            raise ApiError("no_file", "Send the image as multipart form data in the field 'file'.")
        try:
            attachment = services.attachment_create(
                conversation=conversation,
                source=upload,
                original_name=upload.name or "",
                original_content_type=upload.content_type or "",
            )
        except ImageRejected as error:
            raise ApiError(error.code, error.detail, error.http_status) from error
        except UploadsBusy as error:
            busy = ApiError(error.code, error.detail, error.http_status)
            busy.wait = error.retry_after
            raise busy from error
        return Response(attachment_data(attachment), status=status.HTTP_201_CREATED)


class CsatInput(serializers.Serializer[Any]):
    comment = serializers.CharField(allow_blank=True, max_length=2000, default="")


@method_decorator(ratelimit(group="widget-csat", key=RATELIMIT_KEY, rate=CSAT_RATE, block=False), name="post")
class CsatApi(APIView):
    """The customer's 1–5 rating of a conversation, for one no longer on a socket (an earlier one)."""

    parser_classes = [JSONParser]

    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation = authorised_conversation(request, conversation_id)
        if getattr(request, "limited", False):
            raise _rate_limited(
                request, "widget-csat", CSAT_RATE, "Too many ratings from this address; try again shortly."
            )
        body = request.data
        if not isinstance(body, dict):
            raise ApiError("invalid_request", 'Send a JSON object: {"score": 1..5, "comment": "..."}.')
        score = body.get("score")
        # A JSON whole number only: "5", 4.5 and true are refused here, 0 and 6 by the service.
        if not isinstance(score, int) or isinstance(score, bool):
            raise ApiError("invalid_score", "A satisfaction score is a whole number from 1 to 5.")
        payload = CsatInput(data=body)
        payload.is_valid(raise_exception=True)
        try:
            rating = services.csat_record(
                conversation=conversation, score=score, comment=payload.validated_data["comment"]
            )
        except services.ServiceError as error:
            raise ApiError(error.code, error.detail) from error
        return Response(
            {
                "conversation": str(conversation.pk),
                "score": rating.score,
                "comment": rating.comment,
                "created_at": rating.created_at.isoformat(),
                "updated_at": rating.updated_at.isoformat(),
            }
        )


class FaqListApi(APIView):
    def get(self, request: Request) -> Response:
        locale = request.query_params.get("locale") or _locale_from_accept_language(
            request.headers.get("Accept-Language", "")
        )
        if locale not in Conversation.Locale.values:
            raise ApiError(
                "invalid_locale", f"locale must be one of {', '.join(Conversation.Locale.values)}."
            )
        entries = quick_entry_list(locale=locale)
        return Response({"entries": [{"id": entry.pk, "question": entry.question} for entry in entries]})


def attachment_file(
    request: HttpRequest, attachment_id: uuid.UUID, variant: str
) -> FileResponse | JsonResponse:
    """Serve an attachment's image or thumbnail to whoever holds a valid, unexpired signed link."""
    signature = request.GET.get("signature", "")
    signer = signing.TimestampSigner(salt=ATTACHMENT_SIGNING_SALT)
    try:
        value = signer.unsign(
            f"{attachment_id}.{variant}:{signature}", max_age=settings.ATTACHMENT_URL_MAX_AGE_SECONDS
        )
    except signing.SignatureExpired:
        return JsonResponse(
            {"code": "link_expired", "detail": "This link has expired; reload the conversation."}, status=403
        )
    except signing.BadSignature:
        return JsonResponse({"code": "invalid_signature", "detail": "This link is not valid."}, status=403)
    if value != f"{attachment_id}.{variant}":
        return JsonResponse({"code": "invalid_signature", "detail": "This link is not valid."}, status=403)
    attachment = Attachment.objects.filter(pk=attachment_id).first()
    if attachment is None:
        return JsonResponse({"code": "not_found", "detail": "No such attachment."}, status=404)
    field = attachment.thumbnail if variant == "thumbnail" else attachment.image
    if not field:
        return JsonResponse({"code": "not_found", "detail": "No such file."}, status=404)
    response = FileResponse(field.open("rb"), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Disposition"] = "inline"
    return response
