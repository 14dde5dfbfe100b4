"""The one shape of a message (and its attachments) used by REST responses and websocket frames."""

from __future__ import annotations

from typing import Any

from django.core import signing
from django.urls import reverse

from conversations.models import Attachment, Message

ATTACHMENT_SIGNING_SALT = "conversations.attachment"


def attachment_url(attachment: Attachment, *, variant: str = "image") -> str:
    """A signed link to an attachment's file that expires (ATTACHMENT_URL_MAX_AGE_SECONDS)."""
    signed = signing.TimestampSigner(salt=ATTACHMENT_SIGNING_SALT).sign(f"{attachment.pk}.{variant}")
    path = reverse("widget-attachment-file", kwargs={"attachment_id": attachment.pk, "variant": variant})
    return f"{path}?signature={signed.split(':', 1)[1]}"


def attachment_data(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": str(attachment.pk),
        "content_type": attachment.content_type,
        "width": attachment.width,
        "height": attachment.height,
        "url": attachment_url(attachment),
        "thumbnail_url": attachment_url(attachment, variant="thumbnail") if attachment.thumbnail else None,
    }


def author_display_name(user: Any) -> str:
    """What customers and colleagues see of an agent: the full name, or the username without one.

    Here, not in agents, because the widget's history names agents as the live frames do; the agents
    app uses this one too.
    """
    return str(user.get_full_name().strip() or user.get_username())


def message_data(message: Message) -> dict[str, Any]:
    """A message as clients see it; attachments should be prefetched, and an agent message's author
    selected, by the caller (selectors do)."""
    data: dict[str, Any] = {
        "id": message.pk,
        "role": message.role,
        "text": message.text,
        "status": message.status,
        # In the order the customer sent them, not the order they were uploaded in.
        "attachments": [
            attachment_data(attachment)
            for attachment in sorted(message.attachments.all(), key=lambda attachment: attachment.position)
        ],
        # model | faq | knowledge | agent | system for what the assistant side says; customer otherwise.
        "source": message.source,
        "citations": message.citations,
        # The model stopped at its max_tokens (finish_reason "length"): the reply is cut short.
        "truncated": message.truncated,
        # A failed reply keeps why, so a reloaded widget says what it said live (reply.error's code and
        # detail, the detail being the customer's sentence saved in the conversation's language).
        "error": (
            {"code": message.error_code, "detail": message.error_detail}
            if message.status == Message.Status.FAILED
            else None
        ),
        "created_at": message.created_at.isoformat(),
    }
    if message.role == Message.Role.AGENT:
        # Who wrote it, as the live agent.message names them; null for an author deleted since.
        data["agent"] = (
            {"name": author_display_name(message.author)} if message.author_id is not None else None
        )
    return data
