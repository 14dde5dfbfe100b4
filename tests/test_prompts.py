"""Text prompts: the assistant's instructions and as much of the history as the context window holds."""

from __future__ import annotations

from typing import Any

import pytest

from conversations import services
from conversations.models import Conversation, Message
from inference.models import AssistantProfile
from inference.prompts import (
    DEFAULT_INSTRUCTIONS,
    TOKENS_PER_MESSAGE_OVERHEAD,
    ProfileSettings,
    active_profile,
    estimate_tokens,
    prompt_build,
    system_prompt,
)
from tests import factories

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
AssistantProfileFactory: Any = factories.AssistantProfileFactory
ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

DEFAULT_SYSTEM = (
    "Your name is Support assistant.\n"
    f"{DEFAULT_INSTRUCTIONS}\n"
    "Always answer in the language of the customer's latest message (Simplified Chinese or English)."
)
TEST_SYSTEM = (
    "Your name is Test Assistant.\n"
    "You help customers of the test shop.\n"
    "Always answer in the language of the customer's latest message (Simplified Chinese or English)."
)


def conversation_with(*turns: tuple[str, str], locale: str = "en") -> tuple[Conversation, int]:
    """A conversation with `turns` of (role, text), the last a customer message whose reply is queued."""
    conversation = ConversationFactory(locale=locale)
    *earlier, (last_role, last_text) = turns
    assert last_role == "customer"
    for role, text in earlier:
        MessageFactory(conversation=conversation, role=role, text=text)
    posted = services.message_post(conversation=conversation, text=last_text)
    assert posted.reply is not None
    return conversation, posted.reply.pk


def profile_settings(**overrides: Any) -> ProfileSettings:
    fields: dict[str, Any] = {
        "name": "Ava",
        "instructions": "  Help with orders.  ",
        "language_policy": AssistantProfile.LanguagePolicy.MATCH_CUSTOMER,
        "temperature": 0.3,
        "max_tokens": 256,
    }
    return ProfileSettings(**{**fields, **overrides})


def history_budget(max_tokens: int, system: str, turns: int, turn_cost: int) -> int:
    """The INFERENCE_CONTEXT_TOKENS that leaves room for exactly `turns` turns of `turn_cost`."""
    return max_tokens + estimate_tokens(system) + TOKENS_PER_MESSAGE_OVERHEAD + turns * turn_cost


# --- estimates and the system message -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abc", 1),
        ("abcd", 2),
        ("Where is my parcel?", 7),
        ("你好", 2),
        ("我的包裹在哪里？", 8),
        ("订单 12345", 2 + 2),
    ],
)
def test_it_estimates_one_token_per_cjk_character_and_one_per_three_others(text: str, tokens: int):
    assert estimate_tokens(text) == tokens


@pytest.mark.parametrize(
    ("policy", "locale", "sentence"),
    [
        (
            "match_customer",
            "zh-Hans",
            "Always answer in the language of the customer's latest message (Simplified Chinese or English).",
        ),
        ("conversation_locale", "zh-Hans", "Always answer in Simplified Chinese."),
        ("conversation_locale", "en", "Always answer in English."),
        ("always_zh_hans", "en", "Always answer in Simplified Chinese."),
        ("always_en", "zh-Hans", "Always answer in English."),
    ],
)
def test_it_names_the_assistant_and_its_language_in_the_system_message(
    policy: str, locale: str, sentence: str
):
    prompt = system_prompt(profile=profile_settings(language_policy=policy), locale=locale)

    assert prompt == f"Your name is Ava.\nHelp with orders.\n{sentence}"


def test_it_uses_the_built_in_profile_when_none_is_active():
    AssistantProfileFactory(name="Retired", is_active=False, max_tokens=99)

    assert active_profile() == ProfileSettings(
        name="Support assistant",
        instructions=DEFAULT_INSTRUCTIONS,
        language_policy="match_customer",
        temperature=0.3,
        max_tokens=512,
    )


def test_it_uses_the_active_profile():
    AssistantProfileFactory(name="Retired", is_active=False)
    AssistantProfileFactory(
        name="Ava",
        system_instructions="Be kind.",
        language_policy="always_en",
        temperature=0.9,
        max_tokens=64,
    )

    assert active_profile() == ProfileSettings(
        name="Ava", instructions="Be kind.", language_policy="always_en", temperature=0.9, max_tokens=64
    )


# --- the request -------------------------------------------------------------------------------------


def test_it_builds_the_request_from_the_built_in_profile_and_the_customer_message():
    _, reply_id = conversation_with(("customer", "Where is my parcel?"))

    request = prompt_build(reply_id=reply_id)

    assert request.messages == [
        {"role": "system", "content": DEFAULT_SYSTEM},
        {"role": "user", "content": "Where is my parcel?"},
    ]
    assert (request.max_tokens, request.temperature) == (512, 0.3)


def test_it_sends_the_history_oldest_first_with_user_and_assistant_roles():
    AssistantProfileFactory(max_tokens=200, temperature=0.5)
    _, reply_id = conversation_with(
        ("customer", "Hi"),
        ("assistant", "Hello! How can I help?"),
        ("customer", "我的包裹在哪里？"),
        ("assistant", "请提供订单号。"),
        ("customer", "12345"),
    )

    request = prompt_build(reply_id=reply_id)

    assert request.messages == [
        {"role": "system", "content": TEST_SYSTEM},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "我的包裹在哪里？"},
        {"role": "assistant", "content": "请提供订单号。"},
        {"role": "user", "content": "12345"},
    ]
    assert (request.max_tokens, request.temperature) == (200, 0.5)


def test_it_leaves_out_system_notes_and_empty_replies_and_marks_agents():
    AssistantProfileFactory()
    _, reply_id = conversation_with(
        ("customer", "Refund please"),
        ("assistant", ""),
        ("system", "A person will join this conversation shortly."),
        ("agent", "  Hi, I am Lee. I can refund it.  "),
        ("customer", "Thanks!"),
    )

    request = prompt_build(reply_id=reply_id)

    assert request.messages == [
        {"role": "system", "content": TEST_SYSTEM},
        {"role": "user", "content": "Refund please"},
        {"role": "assistant", "content": "[A human agent wrote:] Hi, I am Lee. I can refund it."},
        {"role": "user", "content": "Thanks!"},
    ]


def test_it_leaves_out_failed_replies_but_keeps_cancelled_ones_and_turns_still_alternate():
    AssistantProfileFactory()
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, role="customer", text="First")
    MessageFactory(conversation=conversation, role="assistant", text="Half an ans", status="failed")
    MessageFactory(conversation=conversation, role="customer", text="Second")
    MessageFactory(conversation=conversation, role="assistant", text="Stopped here", status="cancelled")
    posted = services.message_post(conversation=conversation, text="Third")
    assert posted.reply is not None

    request = prompt_build(reply_id=posted.reply.pk)

    assert request.messages == [
        {"role": "system", "content": TEST_SYSTEM},
        {"role": "user", "content": "First\n\nSecond"},
        {"role": "assistant", "content": "Stopped here"},
        {"role": "user", "content": "Third"},
    ]


def test_it_leaves_out_messages_sent_after_the_reply_was_queued():
    AssistantProfileFactory()
    conversation, reply_id = conversation_with(("customer", "First question"))
    services.message_post(conversation=conversation, text="A second question, while waiting")

    request = prompt_build(reply_id=reply_id)

    assert request.messages == [
        {"role": "system", "content": TEST_SYSTEM},
        {"role": "user", "content": "First question"},
    ]


def test_it_starts_the_history_with_the_customer_even_after_an_assistant_greeting():
    AssistantProfileFactory()
    _, reply_id = conversation_with(
        ("assistant", "Welcome! Ask me anything."),
        ("agent", "An agent is here too."),
        ("customer", "Hello"),
    )

    request = prompt_build(reply_id=reply_id)

    assert request.messages == [
        {"role": "system", "content": TEST_SYSTEM},
        {"role": "user", "content": "Hello"},
    ]


def test_it_puts_the_instructions_into_the_first_user_turn_when_configured(settings: Any):
    settings.INFERENCE_SYSTEM_PROMPT_IN_USER_TURN = True
    AssistantProfileFactory()
    _, reply_id = conversation_with(
        ("assistant", "Welcome!"), ("customer", "Hi"), ("assistant", "Hello!"), ("customer", "Bye")
    )

    request = prompt_build(reply_id=reply_id)

    assert request.messages == [
        {"role": "user", "content": f"{TEST_SYSTEM}\n\nHi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    assert [message["role"] for message in request.messages].count("system") == 0


def test_it_uses_the_conversation_locale_when_the_profile_says_so():
    AssistantProfileFactory(language_policy="conversation_locale")
    _, reply_id = conversation_with(("customer", "Hello"), locale="zh-Hans")

    request = prompt_build(reply_id=reply_id)

    assert request.messages[0] == {
        "role": "system",
        "content": "Your name is Test Assistant.\nYou help customers of the test shop.\n"
        "Always answer in Simplified Chinese.",
    }


# --- the context window ----------------------------------------------------------------------------------


# Ten ASCII characters per turn cost (10 + 2) // 3 = 4 tokens, plus 6 of overhead: 10.
TURNS = [("customer", "question 1"), ("assistant", "answer   1"), ("customer", "question 2")]
TURNS += [("assistant", "answer   2"), ("customer", "question 3")]
TURN_COST = 10


def test_it_keeps_the_whole_history_when_it_fits_exactly(settings: Any):
    AssistantProfileFactory(max_tokens=100)
    settings.INFERENCE_CONTEXT_TOKENS = history_budget(100, TEST_SYSTEM, 5, TURN_COST)
    _, reply_id = conversation_with(*TURNS)

    request = prompt_build(reply_id=reply_id)

    assert [message["content"] for message in request.messages[1:]] == [text for _, text in TURNS]


def test_it_drops_the_oldest_turns_first_when_the_history_does_not_fit(settings: Any):
    AssistantProfileFactory(max_tokens=100)
    # One token short of all five turns: the oldest goes, and the assistant's answer it left first too.
    settings.INFERENCE_CONTEXT_TOKENS = history_budget(100, TEST_SYSTEM, 5, TURN_COST) - 1
    _, reply_id = conversation_with(*TURNS)

    request = prompt_build(reply_id=reply_id)

    assert request.messages == [
        {"role": "system", "content": TEST_SYSTEM},
        {"role": "user", "content": "question 2"},
        {"role": "assistant", "content": "answer   2"},
        {"role": "user", "content": "question 3"},
    ]


def test_it_stops_at_the_first_turn_that_does_not_fit_even_if_an_older_one_would(settings: Any):
    AssistantProfileFactory(max_tokens=100)
    # Room for three turns and "short" (8), but not for the long answer between them.
    settings.INFERENCE_CONTEXT_TOKENS = history_budget(100, TEST_SYSTEM, 3, TURN_COST) + 8
    _, reply_id = conversation_with(
        ("customer", "short"),
        ("assistant", "A long answer that is well over the ten tokens left for it."),
        ("customer", "question 2"),
        ("assistant", "answer   2"),
        ("customer", "question 3"),
    )

    request = prompt_build(reply_id=reply_id)

    # The history is cut where it stops fitting: no gap in the middle of the conversation.
    assert [message["content"] for message in request.messages[1:]] == [
        "question 2",
        "answer   2",
        "question 3",
    ]


def test_it_keeps_the_most_recent_part_of_a_customer_message_that_alone_is_over_the_budget(settings: Any):
    AssistantProfileFactory(max_tokens=100)
    settings.INFERENCE_CONTEXT_TOKENS = history_budget(100, TEST_SYSTEM, 1, 40)
    text = "Beginning. " + "x" * 300 + " The actual question?"
    _, reply_id = conversation_with(
        ("customer", "Earlier"), ("assistant", "Earlier answer"), ("customer", text)
    )

    request = prompt_build(reply_id=reply_id)

    system, newest = request.messages
    assert system == {"role": "system", "content": TEST_SYSTEM}
    assert newest["role"] == "user"
    assert newest["content"].endswith("x The actual question?")
    assert text.endswith(newest["content"])
    assert 0 < estimate_tokens(newest["content"]) <= 40


def test_it_counts_chinese_text_at_one_token_a_character(settings: Any):
    AssistantProfileFactory(max_tokens=100)
    settings.INFERENCE_CONTEXT_TOKENS = history_budget(100, TEST_SYSTEM, 1, 20)
    # 30 characters: 10 tokens if they were English letters, which would fit; as Chinese, 30 do not.
    text = "请帮我查一下订单号一二三四五的物流信息谢谢你们的帮助祝好再见"
    assert len(text) == 30
    _, reply_id = conversation_with(("customer", text))

    request = prompt_build(reply_id=reply_id)

    newest = request.messages[-1]["content"]
    assert text.endswith(newest)
    assert 0 < len(newest) <= 20


def test_it_saves_nothing_while_building_a_prompt():
    AssistantProfileFactory()
    conversation, reply_id = conversation_with(
        ("customer", "Hi"), ("assistant", "Hello"), ("customer", "Bye")
    )
    before = list(Message.objects.filter(conversation=conversation).values())

    prompt_build(reply_id=reply_id)

    assert list(Message.objects.filter(conversation=conversation).values()) == before
