"""Handoff triggers (phrase, knowledge miss, thumbs-down, the button), what the customer is told, one
ticket per conversation under concurrency, and internal notes kept out of everything customer-facing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import close_old_connections, connection

from agents.demo import handoff_demo_load
from agents.models import HandoffSettings, Holiday, WeeklyHours
from conversations import events, handoff_rules, replies, selectors, services
from conversations.models import Conversation, Feedback, Message, Ticket
from knowledge.models import Article
from tests import factories

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

SHANGHAI = ZoneInfo("Asia/Shanghai")


def settings_save(**fields: Any) -> HandoffSettings:
    handoff_settings = HandoffSettings.current()
    for name, value in fields.items():
        setattr(handoff_settings, name, value)
    handoff_settings.save()
    return handoff_settings


def reply_answered(conversation: Conversation, *, text: str, unanswered: bool) -> Message | None:
    """A customer message and its reply, finished as the generator would finish it."""
    posted = services.message_post(conversation=conversation, text=text)
    assert posted.reply is not None
    return replies.reply_finish(
        reply_id=posted.reply.pk, outcome=replies.ReplyOutcome.COMPLETE, text="…", is_unanswered=unanswered
    )


def assert_one_ticket(conversation: Conversation, trigger: str) -> Ticket:
    tickets = list(Ticket.objects.filter(conversation=conversation))
    assert [ticket.trigger for ticket in tickets] == [trigger]
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.HANDED_OFF
    return tickets[0]


# --- the phrase trigger ----------------------------------------------------------------------------


def test_it_hands_off_instead_of_replying_when_the_customer_asks_for_a_person(
    enqueued_replies: list[int],
) -> None:
    conversation = ConversationFactory(locale=Conversation.Locale.ZH_HANS)

    posted = services.message_post(conversation=conversation, text="转人工")

    assert posted.reply is None
    assert enqueued_replies == []
    ticket = assert_one_ticket(conversation, Ticket.Trigger.CUSTOMER_PHRASE)
    assert ticket.reason == "Asked for a person: 转人工"
    assert list(conversation.messages.values_list("role", "text")) == [
        ("customer", "转人工"),
        ("system", "已为您转接人工客服，请稍候。"),
    ]


def test_it_tells_the_conversations_sockets_and_the_agents_queue(
    django_capture_on_commit_callbacks: Any,
) -> None:
    conversation = ConversationFactory()
    layer = get_channel_layer()
    customer_channel = async_to_sync(layer.new_channel)()
    agents_channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.conversation_group(conversation.pk), customer_channel)
    async_to_sync(layer.group_add)(events.AGENTS_QUEUE_GROUP, agents_channel)

    with django_capture_on_commit_callbacks(execute=True):
        services.message_post(conversation=conversation, text="Can I talk to a real person?")

    ticket = Ticket.objects.get(conversation=conversation)
    notice = conversation.messages.get(role=Message.Role.SYSTEM)
    frame = async_to_sync(layer.receive)(customer_channel)
    assert frame == {
        "type": "handoff.started",
        "ticket_id": ticket.pk,
        "ticket": ticket.pk,
        "position": 1,
        "expected_wait_minutes": 5,
        "business_hours_open": True,
        "opens_at": None,
        "time_zone": "Asia/Shanghai",
        "message": {**frame["message"], "id": notice.pk, "role": "system"},
    }
    assert frame["message"]["text"] == "A person will join this conversation shortly."
    assert async_to_sync(layer.receive)(agents_channel) == {"type": "queue.changed"}


def test_it_answers_a_negated_request_with_the_assistant(
    enqueued_replies: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    conversation = ConversationFactory()

    with django_capture_on_commit_callbacks(execute=True):
        posted = services.message_post(
            conversation=conversation, text="I am not asking for a human, what is the price?"
        )

    assert posted.reply is not None
    assert enqueued_replies == [posted.reply.pk]
    assert Ticket.objects.count() == 0


def test_it_answers_with_the_assistant_when_the_phrase_trigger_is_off(enqueued_replies: list[int]) -> None:
    settings_save(phrase_trigger_enabled=False)
    conversation = ConversationFactory()

    posted = services.message_post(conversation=conversation, text="human please")

    assert posted.reply is not None
    assert Ticket.objects.count() == 0
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN


def test_it_does_not_open_a_second_ticket_when_a_handed_off_customer_asks_again() -> None:
    conversation = ConversationFactory()
    services.message_post(conversation=conversation, text="人工客服")

    services.message_post(conversation=conversation, text="人工客服!!")

    assert_one_ticket(conversation, Ticket.Trigger.CUSTOMER_PHRASE)
    assert conversation.messages.filter(role=Message.Role.SYSTEM).count() == 1


# --- the knowledge-miss trigger ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def knowledge_base() -> None:
    """A knowledge base to miss: one published article (the knowledge-miss rule needs one)."""
    factories.ArticleFactory()


def test_it_does_not_count_misses_when_there_is_no_knowledge_base_at_all() -> None:
    Article.objects.all().delete()
    conversation = ConversationFactory()

    reply_answered(conversation, text="Do you sell boats?", unanswered=True)
    reply_answered(conversation, text="And planes?", unanswered=True)
    third = reply_answered(conversation, text="And trains?", unanswered=True)

    assert Ticket.objects.count() == 0
    assert third is not None
    assert conversation.status == Conversation.Status.OPEN


def test_it_hands_off_after_the_second_reply_in_a_row_the_knowledge_base_could_not_answer() -> None:
    conversation = ConversationFactory()

    reply_answered(conversation, text="Do you sell boats?", unanswered=True)
    assert Ticket.objects.count() == 0
    second = reply_answered(conversation, text="And planes?", unanswered=True)

    ticket = assert_one_ticket(conversation, Ticket.Trigger.KNOWLEDGE_MISS)
    assert ticket.reason == "The knowledge base had nothing for 2 replies in a row."
    assert second is not None
    assert second.status == Message.Status.COMPLETE
    # The notice follows the reply it was caused by.
    assert conversation.messages.order_by("-id").values_list("role", flat=True)[0] == Message.Role.SYSTEM


def test_an_answered_reply_between_two_misses_breaks_the_run() -> None:
    conversation = ConversationFactory()

    reply_answered(conversation, text="Boats?", unanswered=True)
    reply_answered(conversation, text="Shipping time?", unanswered=False)
    reply_answered(conversation, text="Planes?", unanswered=True)

    assert Ticket.objects.count() == 0
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN


def test_it_waits_for_as_many_misses_as_the_settings_say() -> None:
    settings_save(knowledge_miss_turns=3)
    conversation = ConversationFactory()

    reply_answered(conversation, text="One?", unanswered=True)
    reply_answered(conversation, text="Two?", unanswered=True)
    assert Ticket.objects.count() == 0
    reply_answered(conversation, text="Three?", unanswered=True)

    assert_one_ticket(conversation, Ticket.Trigger.KNOWLEDGE_MISS)


def test_it_ignores_knowledge_misses_when_the_trigger_is_off() -> None:
    settings_save(knowledge_miss_trigger_enabled=False)
    conversation = ConversationFactory()

    reply_answered(conversation, text="One?", unanswered=True)
    reply_answered(conversation, text="Two?", unanswered=True)

    assert Ticket.objects.count() == 0


def test_the_run_of_misses_starts_again_after_a_resolved_ticket() -> None:
    conversation = ConversationFactory()
    reply_answered(conversation, text="One?", unanswered=True)
    reply_answered(conversation, text="Two?", unanswered=True)
    services.ticket_resolve(ticket=Ticket.objects.get(conversation=conversation))

    reply_answered(conversation, text="Three?", unanswered=True)

    assert list(Ticket.objects.filter(conversation=conversation).values_list("status", flat=True)) == [
        "resolved"
    ]
    reply_answered(conversation, text="Four?", unanswered=True)
    assert (
        Ticket.objects.filter(conversation=conversation).exclude(status=Ticket.Status.RESOLVED).count() == 1
    )


def test_a_failed_reply_is_not_judged() -> None:
    conversation = ConversationFactory()
    reply_answered(conversation, text="One?", unanswered=True)
    posted = services.message_post(conversation=conversation, text="Two?")
    assert posted.reply is not None

    replies.reply_finish(
        reply_id=posted.reply.pk, outcome=replies.ReplyOutcome.FAILED, text="", is_unanswered=True
    )

    assert Ticket.objects.count() == 0


# --- the thumbs-down trigger ------------------------------------------------------------------------


def rated_reply(conversation: Conversation, rating: int) -> Feedback:
    reply = MessageFactory(
        conversation=conversation, role=Message.Role.ASSISTANT, source=Message.Source.MODEL
    )
    return services.feedback_record(conversation=conversation, message_id=reply.pk, rating=rating)


def test_it_hands_off_after_two_thumbs_down_in_a_row() -> None:
    conversation = ConversationFactory()

    rated_reply(conversation, Feedback.Rating.DOWN)
    assert Ticket.objects.count() == 0
    rated_reply(conversation, Feedback.Rating.DOWN)

    ticket = assert_one_ticket(conversation, Ticket.Trigger.THUMBS_DOWN)
    assert ticket.reason == "2 thumbs-down in a row."


def test_a_thumbs_up_between_two_thumbs_down_breaks_the_run() -> None:
    conversation = ConversationFactory()

    rated_reply(conversation, Feedback.Rating.DOWN)
    rated_reply(conversation, Feedback.Rating.UP)
    rated_reply(conversation, Feedback.Rating.DOWN)

    assert Ticket.objects.count() == 0


def test_it_ignores_thumbs_down_when_the_trigger_is_off() -> None:
    settings_save(thumbs_down_trigger_enabled=False)
    conversation = ConversationFactory()

    rated_reply(conversation, Feedback.Rating.DOWN)
    rated_reply(conversation, Feedback.Rating.DOWN)

    assert Ticket.objects.count() == 0


# --- the button and explicit requests ---------------------------------------------------------------


def test_the_button_records_its_trigger_and_the_model_tool_its_own() -> None:
    pressed, tool = ConversationFactory(), ConversationFactory()

    services.handoff_request(conversation=pressed, reason="  Wants a refund ")
    services.handoff_request(conversation=tool, reason="Model asked", trigger=Ticket.Trigger.MODEL_TOOL)

    assert assert_one_ticket(pressed, Ticket.Trigger.CUSTOMER_BUTTON).reason == "Wants a refund"
    assert_one_ticket(tool, Ticket.Trigger.MODEL_TOOL)


def test_the_settings_say_which_triggers_are_on() -> None:
    settings_save(model_tool_trigger_enabled=False)

    assert handoff_rules.handoff_trigger_enabled(Ticket.Trigger.MODEL_TOOL) is False
    assert handoff_rules.handoff_trigger_enabled(Ticket.Trigger.CUSTOMER_PHRASE) is True
    assert handoff_rules.handoff_trigger_enabled(Ticket.Trigger.CUSTOMER_BUTTON) is True


@pytest.mark.django_db(transaction=True)
def test_two_handoffs_at_once_open_one_ticket() -> None:
    conversation = ConversationFactory()
    barrier = threading.Barrier(2)
    tickets: list[int] = []
    errors: list[BaseException] = []

    def hand_off(trigger: str) -> None:
        try:
            barrier.wait(timeout=10)
            tickets.append(services.handoff_request(conversation=conversation, trigger=trigger).pk)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=hand_off, args=(trigger,))
        for trigger in (Ticket.Trigger.CUSTOMER_BUTTON, Ticket.Trigger.MODEL_TOOL)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert errors == []
    assert len(tickets) == 2
    assert tickets[0] == tickets[1]
    assert Ticket.objects.filter(conversation=conversation).count() == 1
    assert Message.objects.filter(conversation=conversation, role=Message.Role.SYSTEM).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_phrase_and_the_button_at_once_open_one_ticket() -> None:
    conversation = ConversationFactory()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def act(action: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=10)
            action()
        except BaseException as error:
            errors.append(error)
        finally:
            close_old_connections()
            connection.close()

    threads = [
        threading.Thread(
            target=act, args=(lambda: services.message_post(conversation=conversation, text="转人工"),)
        ),
        threading.Thread(target=act, args=(lambda: services.handoff_request(conversation=conversation),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert errors == []
    assert Ticket.objects.filter(conversation=conversation).count() == 1
    assert Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT).count() == 0


# --- what the customer is told ----------------------------------------------------------------------


def test_the_queue_position_counts_the_unclaimed_tickets_opened_before() -> None:
    first, second, third = ConversationFactory(), ConversationFactory(), ConversationFactory()
    services.handoff_request(conversation=first)
    claimed = services.handoff_request(conversation=second)
    Ticket.objects.filter(pk=claimed.pk).update(status=Ticket.Status.ASSIGNED)

    ticket = services.handoff_request(conversation=third)
    status = handoff_rules.handoff_status_get(ticket=ticket)

    assert (status.position, status.expected_wait_minutes, status.business_hours_open) == (2, 10, True)
    claimed.refresh_from_db()
    assert handoff_rules.handoff_status_get(ticket=claimed).position == 0


def test_the_expected_wait_is_the_recent_mean_first_response() -> None:
    for seconds in (120, 240):
        answered = services.handoff_request(conversation=ConversationFactory())
        Ticket.objects.filter(pk=answered.pk).update(
            status=Ticket.Status.RESOLVED,
            first_response_seconds=seconds,
            first_response_at=answered.created_at,
        )
    ticket = services.handoff_request(conversation=ConversationFactory())

    payload = handoff_rules.handoff_started_payload(ticket=ticket)

    # One waiting customer × a mean of 3 minutes.
    assert (payload["position"], payload["expected_wait_minutes"]) == (1, 3)


def test_outside_hours_the_customer_is_told_when_the_team_is_back_in_english(
    frozen_now: Callable[[datetime], None],
) -> None:
    handoff_demo_load()
    # Friday 22:30 Beijing time: the demo team opens at 09:00 every day.
    frozen_now(datetime(2026, 12, 4, 22, 30, tzinfo=SHANGHAI))
    conversation = ConversationFactory(locale=Conversation.Locale.EN)

    ticket = services.handoff_request(conversation=conversation)
    payload = handoff_rules.handoff_started_payload(ticket=ticket)

    assert conversation.messages.get(role=Message.Role.SYSTEM).text == (
        "Our team is back at 09:00 tomorrow (Beijing time). "
        "Leave your message here and a person will answer it then."
    )
    assert payload["business_hours_open"] is False
    assert payload["expected_wait_minutes"] is None
    assert payload["opens_at"] == "2026-12-05T09:00:00+08:00"


def test_outside_hours_the_customer_is_told_when_the_team_is_back_in_chinese(
    frozen_now: Callable[[datetime], None],
) -> None:
    handoff_demo_load()
    frozen_now(datetime(2026, 12, 4, 22, 30, tzinfo=SHANGHAI))
    conversation = ConversationFactory(locale=Conversation.Locale.ZH_HANS)

    services.handoff_request(conversation=conversation)

    assert conversation.messages.get(role=Message.Role.SYSTEM).text == (
        "人工客服将于 明天 09:00（北京时间）上线，您可以先留言，我们上线后会尽快回复。"
    )


def test_early_in_the_morning_the_team_is_back_today_and_after_a_holiday_on_its_weekday(
    frozen_now: Callable[[datetime], None],
) -> None:
    handoff_demo_load()
    Holiday.objects.create(date=datetime(2026, 12, 5).date(), name="Company day")
    frozen_now(datetime(2026, 12, 4, 7, 0, tzinfo=SHANGHAI))
    early = ConversationFactory()
    services.handoff_request(conversation=early)
    frozen_now(datetime(2026, 12, 4, 21, 30, tzinfo=SHANGHAI))
    late = ConversationFactory(locale=Conversation.Locale.ZH_HANS)
    services.handoff_request(conversation=late)

    assert early.messages.get(role=Message.Role.SYSTEM).text.startswith(
        "Our team is back at 09:00 today (Beijing time)."
    )
    assert late.messages.get(role=Message.Role.SYSTEM).text.startswith(
        "人工客服将于 后天 09:00（北京时间）上线"
    )


def test_inside_hours_the_widget_sentence_is_saved(frozen_now: Callable[[datetime], None]) -> None:
    handoff_demo_load()
    frozen_now(datetime(2026, 12, 4, 10, 0, tzinfo=SHANGHAI))
    conversation = ConversationFactory()

    ticket = services.handoff_request(conversation=conversation)

    assert (
        conversation.messages.get(role=Message.Role.SYSTEM).text
        == "A person will join this conversation shortly."
    )
    payload = handoff_rules.handoff_started_payload(ticket=ticket)
    assert payload["business_hours_open"] is True
    # The consumer answering the button gets the saved notice too, as a reload shows it.
    assert payload["message"]["text"] == "A person will join this conversation shortly."
    assert payload["message"]["role"] == "system"


def test_the_demo_hours_are_loaded_once_and_never_over_an_operators() -> None:
    WeeklyHours.objects.create(weekday=0, opens=time(8), closes=time(12))

    assert handoff_demo_load() is True
    assert handoff_demo_load() is False

    assert list(WeeklyHours.objects.values_list("weekday", "opens", "closes")) == [(0, time(8), time(12))]
    assert HandoffSettings.objects.get().time_zone == "Asia/Shanghai"


def test_the_demo_hours_are_every_day_nine_to_nine() -> None:
    handoff_demo_load()

    assert list(WeeklyHours.objects.values_list("weekday", "opens", "closes")) == [
        (weekday, time(9), time(21)) for weekday in range(7)
    ]


# --- internal notes -----------------------------------------------------------------------------------


@pytest.fixture
def conversation_with_a_note() -> tuple[Any, Message]:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="Where is my order?")
    note = MessageFactory(
        conversation=conversation,
        role=Message.Role.AGENT,
        source=Message.Source.AGENT,
        text="VIP, refund ok",
        internal=True,
    )
    return conversation, note


def test_internal_notes_are_not_in_the_customers_history(
    conversation_with_a_note: tuple[Any, Message],
) -> None:
    conversation, _ = conversation_with_a_note

    assert [message.text for message in selectors.message_list(conversation=conversation)] == [
        "Where is my order?"
    ]


def test_internal_notes_are_not_in_the_history_api(
    client: Any, conversation_with_a_note: tuple[Any, Message]
) -> None:
    conversation, _ = conversation_with_a_note

    response = client.get(
        f"/api/widget/conversations/{conversation.pk}/messages",
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
    )

    assert response.status_code == 200
    assert [message["text"] for message in response.json()["messages"]] == ["Where is my order?"]


def test_internal_notes_are_not_in_a_prompt(conversation_with_a_note: tuple[Any, Message]) -> None:
    conversation, _ = conversation_with_a_note
    posted = services.message_post(conversation=conversation, text="Any news?")
    assert posted.reply is not None

    history = selectors.prompt_history_list(reply=posted.reply)

    assert [message.text for message in history] == ["Any news?", "Where is my order?"]


def test_a_rule_that_crashes_does_not_lose_the_message(
    enqueued_replies: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    def broken(conversation: Conversation, message: Message) -> None:
        raise RuntimeError("bug in a rule")

    handoff_rules.handoff_rules_register(handoff_rules.HandoffMoment.CUSTOMER_MESSAGE, broken)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            posted = services.message_post(conversation=ConversationFactory(), text="Hello")
    finally:
        handoff_rules._rules[handoff_rules.HandoffMoment.CUSTOMER_MESSAGE].remove(broken)

    assert posted.reply is not None
    assert enqueued_replies == [posted.reply.pk]


def test_a_wait_started_now_counts_from_now(frozen_now: Callable[[datetime], None]) -> None:
    at = datetime(2026, 12, 4, 10, 0, tzinfo=SHANGHAI)
    frozen_now(at)
    schedule = handoff_rules.team_schedule_get()

    assert schedule.business_seconds_between(at, at + timedelta(minutes=3)) == 180


@pytest.mark.parametrize(
    ("opens_at", "locale", "sentence_start"),
    [
        (
            datetime(2026, 12, 4, 9, 0, tzinfo=SHANGHAI),
            "en",
            "Our team is back at 09:00 today (Beijing time).",
        ),
        (
            datetime(2026, 12, 7, 9, 30, tzinfo=SHANGHAI),
            "en",
            "Our team is back on Monday at 09:30 (Beijing time).",
        ),
        (
            datetime(2026, 12, 25, 9, 0, tzinfo=SHANGHAI),
            "en",
            "Our team is back on 25 December at 09:00 (Beijing time).",
        ),
        (datetime(2026, 12, 7, 9, 30, tzinfo=SHANGHAI), "zh-Hans", "人工客服将于 周一 09:30（北京时间）上线"),
        (
            datetime(2026, 12, 25, 9, 0, tzinfo=SHANGHAI),
            "zh-Hans",
            "人工客服将于 12月25日 09:00（北京时间）上线",
        ),
        (None, "en", "Our team is away for now."),
        (None, "zh-Hans", "人工客服暂未上线"),
    ],
)
def test_it_says_when_the_team_is_back_in_words(
    opens_at: datetime | None, locale: str, sentence_start: str
) -> None:
    # Friday 2026-12-04, 06:00 Beijing time.
    now = datetime(2026, 12, 4, 6, 0, tzinfo=SHANGHAI)

    sentence = handoff_rules.team_back_sentence(
        opens_at=opens_at, now=now, time_zone="Asia/Shanghai", locale=locale
    )

    assert sentence.startswith(sentence_start)


def test_a_zone_without_a_name_is_named_by_its_identifier() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 12, 4, 20, 0, tzinfo=berlin)

    sentence = handoff_rules.team_back_sentence(
        opens_at=datetime(2026, 12, 5, 8, 0, tzinfo=berlin), now=now, time_zone="Europe/Berlin", locale="en"
    )

    assert sentence.startswith("Our team is back at 08:00 tomorrow (Europe/Berlin).")
