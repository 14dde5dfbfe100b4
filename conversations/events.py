"""Channel-layer group names and the events sent through them to a conversation's sockets."""

from __future__ import annotations

import uuid
from typing import Any

from conversations.models import Message
from conversations.serializers import message_data


def conversation_group(conversation_id: uuid.UUID | str) -> str:
    """The group every socket of one conversation joins."""
    return f"conversation.{uuid.UUID(str(conversation_id)).hex}"


def reply_cancel_key(reply_id: int) -> str:
    """Cache key of the flag that tells a reply's generator to stop."""
    return f"reply-cancel:{reply_id}"


def reply_progress_key(reply_id: int) -> str:
    """Cache key of the text generated so far, for sockets that join mid-reply."""
    return f"reply-progress:{reply_id}"


def reply_done_event(reply: Message) -> dict[str, Any]:
    return {"type": "reply.done", "reply_id": reply.pk, "message": message_data(reply)}


def reply_error_event(reply: Message, *, code: str, detail: str) -> dict[str, Any]:
    return {
        "type": "reply.error",
        "reply_id": reply.pk,
        "code": code,
        "detail": detail,
        "message": message_data(reply),
    }
