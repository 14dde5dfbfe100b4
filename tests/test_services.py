"""The conversation services: what they save, what they refuse, and what they queue."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import progress, replies, services
from conversations.errors import ServiceError
from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from conversations.selectors import PostedMessage
from tests import factories

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory


def post(capture_on_commit: Any, conversation: Conversation, text: str, **options: Any) -> PostedMessage:
    """message_post, with the callbacks it leaves for the commit run as a real commit would."""
    with capture_on_commit(execute=True):
        return services.message_post(conversation=conversation, text=text, **options)


def reply_of(posted: PostedMessage) -> Message:
    assert posted.reply is not None
    return posted.reply


def snapshot(conversation: Conversation) -> tuple[Any, ...]:
    conversation.refresh_from_db()
    return (
        list(Message.objects.order_by("pk").values_list("pk", "text", "status")),
        conversation.status,
        conversation.last_message_at,
    )


# --- conversation_create -------------------------------------------------------------------------


def test_it_opens_a_conversation_and_keeps_only_the_tokens_hash() -> None:
    conversation, token = services.conversation_create(
        locale="zh-Hans",
        metadata={"order": "A-1"},
        customer_ip="203.0.113.9",
        customer_user_agent="U" * 600,
    )

    conversation.refresh_from_db()
    assert conversation.token_hash == services.token_hash(token)
    assert token not in conversation.token_hash
    assert (conversation.locale, conversation.metadata, conversation.customer_ip) == (
        "zh-Hans",
        {"order": "A-1"},
        "203.0.113.9",
    )
    assert conversation.customer_user_agent == "U" * 512
    assert conversation.status == Conversation.Status.OPEN


# --- message_post ---------------------------------------------------------------------------------


def test_it_saves_a_message_and_queues_one_reply_after_the_commit(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    conversation = ConversationFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        posted = services.message_post(conversation=conversation, text="  Where is my order?  ")
    assert enqueued_replies == []  # nothing is queued before the commit
    for callback in callbacks:
        callback()

    reply = reply_of(posted)
    assert posted.created is True
    assert (posted.message.role, posted.message.text, posted.message.status) == (
        Message.Role.CUSTOMER,
        "Where is my order?",
        Message.Status.COMPLETE,
    )
    assert (reply.role, reply.status, reply.text, reply.reply_to_id) == (
        Message.Role.ASSISTANT,
        Message.Status.STREAMING,
        "",
        posted.message.pk,
    )
    assert enqueued_replies == [reply.pk]
    conversation.refresh_from_db()
    assert conversation.last_message_at == posted.message.created_at


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_it_refuses_an_empty_message(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int], text: str
) -> None:
    conversation = ConversationFactory()
    before = snapshot(conversation)

    with pytest.raises(ServiceError) as caught:
        post(django_capture_on_commit_callbacks, conversation, text)

    assert (caught.value.code, caught.value.detail) == (
        "empty_message",
        "A message needs text or at least one image.",
    )
    assert snapshot(conversation) == before
    assert Message.objects.count() == 0
    assert enqueued_replies == []


def test_it_refuses_a_message_over_4000_characters(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    conversation = ConversationFactory()
    before = snapshot(conversation)

    with pytest.raises(ServiceError) as caught:
        post(django_capture_on_commit_callbacks, conversation, "x" * 4001)

    assert (caught.value.code, caught.value.detail) == (
        "message_too_long",
        "A message can be at most 4000 characters.",
    )
    assert snapshot(conversation) == before
    assert enqueued_replies == []


def test_the_longest_message_is_the_message_max_chars_setting(
    settings: Any, django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    settings.MESSAGE_MAX_CHARS = 10
    conversation = ConversationFactory()
    post(django_capture_on_commit_callbacks, conversation, "x" * 10)

    with pytest.raises(ServiceError) as caught:
        post(django_capture_on_commit_callbacks, conversation, "x" * 11)

    assert (caught.value.code, caught.value.detail) == (
        "message_too_long",
        "A message can be at most 10 characters.",
    )
    assert Message.objects.filter(conversation=conversation, role=Message.Role.CUSTOMER).count() == 1


def test_it_accepts_4000_characters_once_surrounding_whitespace_is_trimmed(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    conversation = ConversationFactory()

    posted = post(django_capture_on_commit_callbacks, conversation, "  " + "字" * 4000 + "\n")

    assert posted.message.text == "字" * 4000
    assert enqueued_replies == [reply_of(posted).pk]


def test_it_saves_a_message_to_a_handed_off_conversation_without_a_reply(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    conversation = ConversationFactory(status=Conversation.Status.HANDED_OFF)

    posted = post(django_capture_on_commit_callbacks, conversation, "Hello? Is a person there?")

    assert posted.created is True
    assert posted.reply is None
    assert list(Message.objects.values_list("role", "text")) == [("customer", "Hello? Is a person there?")]
    assert enqueued_replies == []


def test_it_stops_replying_once_the_conversation_is_handed_off(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    conversation = ConversationFactory()
    first = post(django_capture_on_commit_callbacks, conversation, "My parcel is late")
    services.handoff_request(conversation=conversation)

    second = post(django_capture_on_commit_callbacks, conversation, "Still waiting")

    assert second.reply is None
    assert enqueued_replies == [reply_of(first).pk]


def test_it_returns_the_saved_message_for_a_repeated_client_id_and_queues_nothing_more(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    conversation = ConversationFactory()
    client_id = uuid.uuid4()
    first = post(django_capture_on_commit_callbacks, conversation, "Refund please", client_id=client_id)

    again = post(
        django_capture_on_commit_callbacks, conversation, "Refund please (resent)", client_id=client_id
    )

    assert again.created is False
    assert again.message.pk == first.message.pk
    assert again.message.text == "Refund please"
    assert reply_of(again).pk == reply_of(first).pk
    assert Message.objects.count() == 2
    assert enqueued_replies == [reply_of(first).pk]


def test_it_saves_a_new_message_without_looking_up_its_client_id(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    # The consumer has already looked for a resend (to spare it the rate limit): a second lookup here
    # cost every new message a query. A repeat is caught by the unique constraint instead.
    conversation = ConversationFactory()
    client_id = uuid.uuid4()

    with CaptureQueriesContext(connection) as queries:
        posted = post(django_capture_on_commit_callbacks, conversation, "Hello", client_id=client_id)

    lookups = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].startswith("SELECT") and '"client_id" =' in query["sql"]
    ]
    assert lookups == []
    assert posted.created is True
    assert enqueued_replies == [reply_of(posted).pk]


def test_it_returns_the_saved_message_for_a_repeated_client_id_even_if_now_invalid(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    conversation = ConversationFactory()
    client_id = uuid.uuid4()
    first = post(django_capture_on_commit_callbacks, conversation, "Hi", client_id=client_id)

    again = post(django_capture_on_commit_callbacks, conversation, "", client_id=client_id)

    assert (again.created, again.message.pk) == (False, first.message.pk)
    assert enqueued_replies == [reply_of(first).pk]


def test_it_saves_the_same_client_id_in_another_conversation_as_another_message(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    client_id = uuid.uuid4()
    first = post(django_capture_on_commit_callbacks, ConversationFactory(), "One", client_id=client_id)

    second = post(django_capture_on_commit_callbacks, ConversationFactory(), "Two", client_id=client_id)

    assert second.created is True
    assert second.message.pk != first.message.pk
    assert enqueued_replies == [reply_of(first).pk, reply_of(second).pk]


# --- handoff_request -----------------------------------------------------------------------------------


def test_it_hands_off_once_however_often_it_is_asked() -> None:
    conversation = ConversationFactory()

    first = services.handoff_request(conversation=conversation, reason="  Wants a refund  ")
    second = services.handoff_request(conversation=conversation, reason="Asked again")

    assert second.pk == first.pk
    assert list(Ticket.objects.values_list("conversation_id", "status", "reason")) == [
        (conversation.pk, Ticket.Status.OPEN, "Wants a refund")
    ]
    assert list(Message.objects.values_list("role", "text")) == [
        ("system", "A person will join this conversation shortly.")
    ]
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.HANDED_OFF


@pytest.mark.parametrize("locale", ["en", "zh-Hans"])
def test_it_saves_the_handoff_sentence_the_widget_says_live(locale: str) -> None:
    widget_strings = (Path(settings.BASE_DIR) / "static" / "widget" / "chat" / "messages.js").read_text()
    # The widget's STRINGS table: the English block comes first, the Chinese one after `"zh-Hans": {`.
    english, chinese = widget_strings.split('"zh-Hans": {', 1)
    live = re.findall(r'handoffStarted: "([^"]*)"', english if locale == "en" else chinese)[0]
    conversation = ConversationFactory(locale=locale)

    services.handoff_request(conversation=conversation, reason="customer_request")

    assert list(Message.objects.filter(role=Message.Role.SYSTEM).values_list("text", flat=True)) == [live]


def test_it_returns_the_assigned_ticket_instead_of_opening_another() -> None:
    conversation = ConversationFactory()
    ticket = services.handoff_request(conversation=conversation)
    Ticket.objects.filter(pk=ticket.pk).update(status=Ticket.Status.ASSIGNED)

    again = services.handoff_request(conversation=conversation)

    assert again.pk == ticket.pk
    assert Ticket.objects.count() == 1
    assert Message.objects.filter(role=Message.Role.SYSTEM).count() == 1


def test_it_opens_a_new_ticket_after_the_last_one_was_resolved() -> None:
    conversation = ConversationFactory(locale="zh-Hans")
    resolved = services.handoff_request(conversation=conversation)
    Ticket.objects.filter(pk=resolved.pk).update(status=Ticket.Status.RESOLVED)

    fresh = services.handoff_request(conversation=conversation)

    assert fresh.pk != resolved.pk
    assert list(Ticket.objects.order_by("pk").values_list("status", flat=True)) == ["resolved", "open"]
    assert list(Message.objects.values_list("text", flat=True)) == ["已为您转接人工客服，请稍候。"] * 2


# --- feedback_record and csat_record --------------------------------------------------------------


def test_it_changes_the_feedback_on_a_reply_instead_of_adding_more() -> None:
    conversation = ConversationFactory()
    reply = MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, text="Try restarting.")

    first = services.feedback_record(conversation=conversation, message_id=reply.pk, rating=1)
    second = services.feedback_record(
        conversation=conversation, message_id=reply.pk, rating=-1, comment="  It did not work  "
    )

    assert second.pk == first.pk
    assert list(Feedback.objects.values_list("message_id", "rating", "comment")) == [
        (reply.pk, -1, "It did not work")
    ]


@pytest.mark.parametrize("rating", [0, 2, -2])
def test_it_refuses_a_rating_other_than_up_or_down(rating: int) -> None:
    conversation = ConversationFactory()
    reply = MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT)

    with pytest.raises(ServiceError) as caught:
        services.feedback_record(conversation=conversation, message_id=reply.pk, rating=rating)

    assert caught.value.code == "invalid_rating"
    assert Feedback.objects.count() == 0


def test_it_refuses_feedback_on_a_customer_message_or_another_conversations_reply() -> None:
    conversation = ConversationFactory()
    own_message = MessageFactory(conversation=conversation, role=Message.Role.CUSTOMER)
    other_reply = MessageFactory(conversation=ConversationFactory(), role=Message.Role.ASSISTANT)

    codes = []
    for message_id in (own_message.pk, other_reply.pk, 999_999_999):
        with pytest.raises(ServiceError) as caught:
            services.feedback_record(conversation=conversation, message_id=message_id, rating=1)
        codes.append(caught.value.code)

    assert codes == ["unknown_message"] * 3
    assert Feedback.objects.count() == 0


def test_it_changes_the_satisfaction_rating_instead_of_adding_more() -> None:
    conversation = ConversationFactory()

    first = services.csat_record(conversation=conversation, score=2, comment="slow")
    second = services.csat_record(conversation=conversation, score=5, comment="  sorted in the end ")

    assert second.pk == first.pk
    assert list(SatisfactionRating.objects.values_list("conversation_id", "score", "comment")) == [
        (conversation.pk, 5, "sorted in the end")
    ]


@pytest.mark.parametrize("score", [0, 6, -1])
def test_it_refuses_a_satisfaction_score_outside_1_to_5(score: int) -> None:
    conversation = ConversationFactory()
    services.csat_record(conversation=conversation, score=4)

    with pytest.raises(ServiceError) as caught:
        services.csat_record(conversation=conversation, score=score)

    assert caught.value.code == "invalid_score"
    assert list(SatisfactionRating.objects.values_list("score", flat=True)) == [4]


# --- one reply at a time ---------------------------------------------------------------------------


def test_it_cancels_a_queued_reply_when_the_customer_sends_another_message(
    django_capture_on_commit_callbacks: Any, enqueued_replies: list[int]
) -> None:
    conversation = ConversationFactory()
    first = post(django_capture_on_commit_callbacks, conversation, "Hello")

    second = post(django_capture_on_commit_callbacks, conversation, "My parcel is late")

    first_reply, second_reply = reply_of(first), reply_of(second)
    first_reply.refresh_from_db()
    second_reply.refresh_from_db()
    assert first_reply.status == Message.Status.CANCELLED
    assert first_reply.cancel_requested_at is not None
    assert second_reply.status == Message.Status.STREAMING
    assert enqueued_replies == [first_reply.pk, second_reply.pk]
    # The superseded reply's job finds it no longer wanted.
    assert replies.reply_claim(reply_id=first_reply.pk) is False


def test_it_asks_a_running_reply_to_stop_when_the_customer_sends_another_message(
    django_capture_on_commit_callbacks: Any,
) -> None:
    conversation = ConversationFactory()
    first = post(django_capture_on_commit_callbacks, conversation, "Hello")
    assert replies.reply_claim(reply_id=reply_of(first).pk) is True

    post(django_capture_on_commit_callbacks, conversation, "Another question")

    running = reply_of(first)
    running.refresh_from_db()
    # Its worker stops at its next look at the flag and sends reply.done itself.
    assert running.status == Message.Status.STREAMING
    assert running.cancel_requested_at is not None
    assert progress.reply_cancel_flagged(running.pk) is True


def test_it_stops_the_reply_in_progress_when_a_person_takes_over(
    django_capture_on_commit_callbacks: Any,
) -> None:
    conversation = ConversationFactory()
    posted = post(django_capture_on_commit_callbacks, conversation, "My parcel is late")

    with django_capture_on_commit_callbacks(execute=True):
        services.handoff_request(conversation=conversation, reason="asked")

    reply = reply_of(posted)
    reply.refresh_from_db()
    assert reply.status == Message.Status.CANCELLED
