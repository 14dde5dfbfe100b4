"""Keeping what the gateway did: a row per request, and the conversation when the key keeps them."""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from access.models import ApiKey
from conversations import services as conversation_services
from conversations.images import ImageRejected
from conversations.models import Conversation, Message
from gateway.models import ApiRequest
from gateway.parsing import ChatCall, text_of

logger = logging.getLogger(__name__)


@dataclass
class Exchange:
    """A request as it ended: what was asked, what was answered, how long it took."""

    api_key: ApiKey | None
    client_ip: str | None
    user_agent: str = ""
    model: str = ""
    served_model: str = ""
    mode: str = ""
    stream: bool = False
    status_code: int = 200
    error_code: str = ""
    first_token_ms: int | None = None
    duration_ms: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    client_disconnected: bool = False
    request_id: str = ""
    # For a kept conversation: the call, the answer and how it was made.
    call: ChatCall | None = None
    locale: str = Conversation.Locale.EN
    answer: str = ""
    source: str = Message.Source.MODEL
    citations: list[dict[str, Any]] = field(default_factory=list)
    is_unanswered: bool = False
    truncated: bool = False
    error_detail: str = ""


def _image_bytes(url: str) -> bytes | None:
    """The normalised JPEG a part carries by now (every image URL became a data: URL before the model)."""
    if not url.startswith("data:"):
        return None
    _, _, encoded = url.partition(",")
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:
        return None


def _conversation_keep(exchange: Exchange) -> Conversation:
    call = exchange.call
    assert call is not None
    conversation, _token = conversation_services.conversation_create(
        locale=exchange.locale,
        channel=Conversation.Channel.API,
        customer_ip=exchange.client_ip,
        customer_user_agent=exchange.user_agent,
        metadata={
            "api_key": exchange.api_key.prefix if exchange.api_key else "",
            "api_key_name": exchange.api_key.name if exchange.api_key else "",
            "model": exchange.model,
            **({"user": call.user} if call.user else {}),
        },
    )
    last: Message | None = None
    for entry in call.messages:
        role = entry["role"]
        if role in ("system", "developer"):
            last = Message.objects.create(
                conversation=conversation,
                role=Message.Role.SYSTEM,
                source=Message.Source.SYSTEM,
                text=text_of(entry["content"]),
                internal=True,
            )
        elif role == "assistant":
            last = Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                source=Message.Source.MODEL,
                text=text_of(entry["content"]),
            )
        else:
            last = Message.objects.create(
                conversation=conversation, role=Message.Role.CUSTOMER, text=text_of(entry["content"]).strip()
            )
            content = entry["content"]
            parts = content if isinstance(content, list) else []
            position = 0
            for part in parts:
                data = _image_bytes(part["image_url"]["url"]) if part["type"] == "image_url" else None
                if data is None:
                    continue
                try:
                    attachment = conversation_services.attachment_create(
                        conversation=conversation, source=io.BytesIO(data), original_content_type="image/jpeg"
                    )
                except ImageRejected:
                    continue
                attachment.message, attachment.position = last, position
                attachment.save(update_fields=["message", "position"])
                position += 1
    failed = exchange.status_code >= 400 or bool(exchange.error_code and exchange.error_code != "blocked")
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=exchange.source,
        text=exchange.answer,
        status=Message.Status.FAILED
        if failed
        else Message.Status.CANCELLED
        if exchange.client_disconnected
        else Message.Status.COMPLETE,
        reply_to=last if last is not None and last.role == Message.Role.CUSTOMER else None,
        model=exchange.served_model,
        prompt_tokens=exchange.prompt_tokens,
        completion_tokens=exchange.completion_tokens,
        first_token_latency_ms=exchange.first_token_ms,
        total_latency_ms=exchange.duration_ms,
        citations=exchange.citations,
        is_unanswered=exchange.is_unanswered,
        truncated=exchange.truncated,
        error_code=exchange.error_code,
        error_detail=exchange.error_detail,
    )
    conversation.last_message_at = reply.created_at
    # A call is over when it is answered: nobody waits in it, and no person is asked to take it.
    conversation.status = Conversation.Status.CLOSED
    conversation.save(update_fields=["last_message_at", "status", "updated_at"])
    return conversation


def exchange_record(exchange: Exchange) -> ApiRequest:
    """Keep a request's row and, when its key keeps conversations and it got as far as an answer, the
    conversation (channel API); a failure to keep the conversation never loses the row."""
    conversation: Conversation | None = None
    if exchange.api_key is not None and exchange.api_key.keeps_conversations and exchange.call is not None:
        try:
            with transaction.atomic():
                conversation = _conversation_keep(exchange)
        except Exception:
            logger.exception("The conversation of a gateway request could not be kept")
    return ApiRequest.objects.create(
        api_key=exchange.api_key,
        client_ip=exchange.client_ip,
        model=exchange.model[:200],
        served_model=exchange.served_model[:200],
        mode=exchange.mode,
        stream=exchange.stream,
        status_code=exchange.status_code,
        error_code=exchange.error_code,
        first_token_ms=exchange.first_token_ms,
        duration_ms=exchange.duration_ms,
        prompt_tokens=exchange.prompt_tokens,
        completion_tokens=exchange.completion_tokens,
        client_disconnected=exchange.client_disconnected,
        request_id=exchange.request_id[:64],
        conversation=conversation,
    )
