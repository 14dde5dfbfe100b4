"""Status changes by staff go through services that keep tickets, conversation and assistant in step."""

from __future__ import annotations

from typing import Any

import pytest

from conversations import services
from conversations.models import Conversation, Message, Ticket
from tests import factories

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
ConversationFactory: Any = factories.ConversationFactory

HANDOFF_NOTICE = "A person will join this conversation shortly."
HANDED_BACK_NOTICE = "The person helping you has finished; the assistant answers again."


def system_texts(conversation: Conversation) -> list[str]:
    return list(conversation.messages.filter(role="system").order_by("id").values_list("text", flat=True))


def handed_off() -> tuple[Conversation, Ticket]:
    conversation = ConversationFactory()
    ticket = services.handoff_request(conversation=conversation, reason="Wants a person")
    conversation.refresh_from_db()
    assert conversation.status == "handed_off"
    return conversation, ticket


def test_it_resolves_a_ticket_and_hands_the_conversation_back_to_the_assistant() -> None:
    conversation, ticket = handed_off()
    assert services.message_post(conversation=conversation, text="Anyone?").reply is None

    assert services.ticket_resolve(ticket=ticket) is True

    ticket.refresh_from_db()
    conversation.refresh_from_db()
    assert ticket.status == "resolved"
    assert ticket.resolved_at is not None
    assert conversation.status == "open"
    assert system_texts(conversation) == [HANDOFF_NOTICE, HANDED_BACK_NOTICE]
    assert services.message_post(conversation=conversation, text="Thanks").reply is not None


def test_it_changes_nothing_when_the_ticket_is_already_resolved() -> None:
    conversation, ticket = handed_off()
    services.ticket_resolve(ticket=ticket)
    resolved_at = Ticket.objects.get().resolved_at
    message_count = Message.objects.count()

    assert services.ticket_resolve(ticket=ticket) is False

    assert Ticket.objects.get().resolved_at == resolved_at
    assert Message.objects.count() == message_count
    conversation.refresh_from_db()
    assert conversation.status == "open"


def test_it_hands_back_a_conversation_left_handed_off_without_an_open_ticket() -> None:
    # What an edit of the ticket's status in admin used to leave behind: handed off for good.
    conversation, ticket = handed_off()
    Ticket.objects.filter(pk=ticket.pk).update(status=Ticket.Status.RESOLVED)

    assert services.ticket_resolve(ticket=ticket) is True

    conversation.refresh_from_db()
    assert conversation.status == "open"
    assert system_texts(conversation) == [HANDOFF_NOTICE, HANDED_BACK_NOTICE]


def test_it_leaves_a_closed_conversation_closed_when_its_ticket_is_resolved() -> None:
    conversation, ticket = handed_off()
    Conversation.objects.filter(pk=conversation.pk).update(status=Conversation.Status.CLOSED)

    services.ticket_resolve(ticket=ticket)

    conversation.refresh_from_db()
    assert conversation.status == "closed"
    assert system_texts(conversation) == [HANDOFF_NOTICE]


def test_it_closes_a_conversation_resolving_its_ticket_and_the_assistant_stops_answering() -> None:
    conversation, ticket = handed_off()

    assert services.conversation_close(conversation=conversation) is True

    conversation.refresh_from_db()
    ticket.refresh_from_db()
    assert conversation.status == "closed"
    assert ticket.status == "resolved"
    assert ticket.resolved_at is not None
    assert system_texts(conversation) == [HANDOFF_NOTICE, "This conversation was closed."]
    assert services.message_post(conversation=conversation, text="Hello?").reply is None


def test_it_changes_nothing_when_closing_a_closed_conversation() -> None:
    conversation = ConversationFactory()
    services.conversation_close(conversation=conversation)
    message_count = Message.objects.count()

    assert services.conversation_close(conversation=conversation) is False

    assert Message.objects.count() == message_count


def test_it_reopens_a_closed_conversation_for_the_assistant() -> None:
    conversation = ConversationFactory(locale="zh-Hans")
    services.conversation_close(conversation=conversation)

    assert services.conversation_reopen(conversation=conversation) is True

    conversation.refresh_from_db()
    assert conversation.status == "open"
    assert system_texts(conversation) == ["本次会话已结束。", "本次会话已重新开启，智能助手将继续为您服务。"]
    assert services.message_post(conversation=conversation, text="你好").reply is not None


def test_it_changes_nothing_when_reopening_a_conversation_that_is_not_closed() -> None:
    conversation, _ticket = handed_off()
    message_count = Message.objects.count()

    assert services.conversation_reopen(conversation=conversation) is False

    conversation.refresh_from_db()
    assert conversation.status == "handed_off"
    assert Message.objects.count() == message_count
