"""Reads of conversations: every query the views, consumers, tasks and prompt building need."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet, prefetch_related_objects

from conversations import progress
from conversations.models import Attachment, Conversation, Message, Ticket, token_hash
from conversations.progress import ReplyText


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


@dataclass(frozen=True)
class PostedMessage:
    """A customer message and the reply queued for it; `created` is False for a repeated client_id."""

    message: Message
    reply: Message | None
    created: bool


def message_posted_get(*, conversation: Conversation, client_id: uuid.UUID) -> PostedMessage | None:
    """The message the browser already sent with this client_id, and its reply; None if it is new."""
    message = conversation.messages.filter(client_id=client_id).prefetch_related("attachments").first()
    if message is None:
        return None
    reply = Message.objects.filter(reply_to=message, role=Message.Role.ASSISTANT).order_by("-id").first()
    return PostedMessage(message=message, reply=reply, created=False)


def message_list(*, conversation: Conversation) -> list[Message]:
    """The conversation's messages as the customer sees them, oldest first, with their attachments.

    Agents' internal notes are never among them.
    """
    return list(
        conversation.messages.filter(internal=False)
        .order_by("created_at", "id")
        # Agents' messages name their author: in the same query, not one per message.
        .select_related("author")
        .prefetch_related("attachments")
    )


def ticket_unresolved_get(*, conversation: Conversation) -> Ticket | None:
    """The conversation's ticket still open or assigned (at most one), with its assignee; else None."""
    return (
        Ticket.objects.filter(conversation=conversation)
        .exclude(status=Ticket.Status.RESOLVED)
        .select_related("assignee")
        .first()
    )


def reply_pending_get(*, messages: list[Message]) -> Message | None:
    """The assistant reply still being generated among a conversation's messages, if any."""
    streaming = [
        message
        for message in messages
        if message.role == Message.Role.ASSISTANT and message.status == Message.Status.STREAMING
    ]
    return max(streaming, key=lambda message: message.pk, default=None)


def reply_text_get(*, reply_id: int) -> ReplyText | None:
    """The text generated so far for a reply in progress and the last delta it includes."""
    return progress.reply_text_get(reply_id)


def message_attachments_load(*, message: Message) -> Message:
    """The message, with its attachments loaded as frames show them (one query, the message is in hand)."""
    prefetch_related_objects([message], "attachments")
    return message


def reply_get_for_prompt(*, reply_id: int) -> Message:
    """A reply with its conversation, as prompt building needs it."""
    return Message.objects.select_related("conversation").get(pk=reply_id)


def prompt_history_list(*, reply: Message) -> list[Message]:
    """The messages a reply's prompt may show, newest first, with their attachments in order.

    System notes are left out, and so are failed replies: their partial text was never a real
    answer (a cancelled one was seen by the customer and is kept), and agents' internal notes.
    """
    return list(_prompt_messages(reply.conversation_id).filter(id__lt=reply.pk))


def draft_history_list(*, conversation_id: uuid.UUID) -> list[Message]:
    """The messages an agent's draft (agent assist) is written from, newest first: what a reply's
    prompt would show, up to now, less a reply still streaming."""
    return list(_prompt_messages(conversation_id).exclude(status=Message.Status.STREAMING))


def latest_customer_message_id(*, conversation_id: uuid.UUID) -> int | None:
    """The id of the conversation's newest customer message (what a draft answers), or None."""
    return (
        Message.objects.filter(conversation_id=conversation_id, role=Message.Role.CUSTOMER)
        .order_by("-id")
        .values_list("pk", flat=True)
        .first()
    )


def _prompt_messages(conversation_id: uuid.UUID) -> QuerySet[Message]:
    return (
        Message.objects.filter(conversation_id=conversation_id, internal=False)
        .exclude(role=Message.Role.SYSTEM)
        .exclude(status=Message.Status.FAILED)
        .order_by("-id")
        .prefetch_related(Prefetch("attachments", queryset=Attachment.objects.order_by("position")))
    )


def attachments_ocr_pending_list(*, reply: Message) -> list[uuid.UUID]:
    """The images of the message a reply answers whose OCR has not run yet."""
    if reply.reply_to_id is None:
        return []
    return list(
        Attachment.objects.filter(
            message_id=reply.reply_to_id, ocr_status=Attachment.OcrStatus.NOT_READ
        ).values_list("pk", flat=True)
    )
