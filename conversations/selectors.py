"""Reads of conversations: every query the views, consumers and tasks need."""

from __future__ import annotations

import hmac
import uuid
from typing import Any

from django.core.cache import cache

from conversations import events
from conversations.models import Conversation, Message
from conversations.services import token_hash


def conversation_get_by_token(*, conversation_id: uuid.UUID | str, token: str) -> Conversation | None:
    """The conversation, if `token` is its customer's token; else None."""
    if not token:
        return None
    try:
        conversation = Conversation.objects.get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValueError):
        return None
    if not hmac.compare_digest(conversation.token_hash, token_hash(token)):
        return None
    return conversation


def message_list(*, conversation: Conversation) -> list[Message]:
    """The conversation's messages, oldest first, with their attachments."""
    return list(conversation.messages.order_by("created_at", "id").prefetch_related("attachments"))


def reply_pending_get(*, conversation: Conversation) -> Message | None:
    """The assistant reply still being generated in this conversation, if any."""
    return (
        conversation.messages.filter(role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)
        .order_by("-id")
        .first()
    )


def reply_progress_get(*, reply_id: int) -> dict[str, Any] | None:
    """The text generated so far for a reply in progress and the last delta it includes."""
    progress: dict[str, Any] | None = cache.get(events.reply_progress_key(reply_id))
    return progress


def reply_pending_snapshot(*, conversation: Conversation) -> dict[str, Any] | None:
    """`pending_reply` of the ready frame: the reply in progress with all its text so far."""
    reply = reply_pending_get(conversation=conversation)
    if reply is None:
        return None
    progress = reply_progress_get(reply_id=reply.pk) or {"text": "", "seq": -1}
    return {"reply_id": reply.pk, "text": progress["text"], "seq": progress["seq"]}


def message_list_by_ids(*, ids: list[int]) -> list[Message]:
    """Messages by id, with their attachments."""
    return list(Message.objects.filter(pk__in=ids).order_by("id").prefetch_related("attachments"))


def message_client_id_exists(*, conversation: Conversation, client_id: uuid.UUID) -> bool:
    """Whether the conversation already has the message the browser sent with this client_id."""
    return conversation.messages.filter(client_id=client_id).exists()
