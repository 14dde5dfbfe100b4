"""The model's handoff_to_human tool: offered through OpenAI tool calling, called from a scripted
server's `tool_calls` stream (or written as Hermes text), and handled as a handoff: the reply saved,
one ticket with trigger model_tool and the model's reason, the AI paused, the call never shown.

Real PostgreSQL and Redis, as in test_generation: the reply runs on the test's loop and the customer's
frames are read from the conversation's group on the Redis channel layer.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from agents.models import HandoffSettings
from conversations import replies, services
from conversations.models import Conversation, Message, Ticket
from inference import generation
from inference.generation import (
    HANDOFF_DEFAULT_REASON,
    HANDOFF_SENTENCES,
    HANDOFF_TOOL,
    HANDOFF_TOOL_INSTRUCTIONS,
    model_tool_handoff,
)
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer, ScriptedToolCall
from tests.test_generation import GroupListener, generate, queued_reply, reload

pytestmark = pytest.mark.django_db(transaction=True)

ConversationFactory: Any = factories.ConversationFactory


@pytest.fixture
def tool_on(settings: Any) -> None:
    settings.INFERENCE_HANDOFF_TOOL = True


def handoff_call(*arguments: str) -> ScriptedToolCall:
    return ScriptedToolCall(name="handoff_to_human", arguments=list(arguments))


@database_sync_to_async
def tickets_of(conversation: Conversation) -> list[Ticket]:
    return list(Ticket.objects.filter(conversation=conversation).order_by("id"))


@database_sync_to_async
def status_of(conversation: Conversation) -> str:
    return Conversation.objects.get(pk=conversation.pk).status


@database_sync_to_async
def trigger_switch(*, enabled: bool) -> None:
    handoff_settings = HandoffSettings.current()
    handoff_settings.model_tool_trigger_enabled = enabled
    handoff_settings.save()


@database_sync_to_async
def customer_writes_again(conversation: Conversation) -> Message | None:
    return services.message_post(conversation=conversation, text="Hello? Anyone there?").reply


def types_of(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["type"] for frame in frames]


def shown_text(frames: list[dict[str, Any]]) -> str:
    return "".join(frame["text"] for frame in frames if frame["type"] == "reply.delta")


def assert_no_tool_call_shown(frames: list[dict[str, Any]], *secrets: str) -> None:
    """Nothing the customer's sockets got names the tool, its arguments or the Hermes tags."""
    everything = json.dumps(frames, ensure_ascii=False)
    for secret in ("handoff_to_human", "tool_call", '"reason"', HANDOFF_TOOL_INSTRUCTIONS, *secrets):
        assert secret not in everything, f"the customer was shown {secret!r}: {everything}"


# --- a call streamed as tool_calls --------------------------------------------------------------------


async def test_a_streamed_tool_call_hands_off_once_with_the_models_reason_and_pauses_the_ai(
    tool_on: None, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.enqueue(
        Script(
            tokens=["I'll get", " you a person", "."],
            # The arguments arrive in pieces, as vLLM's parser streams them.
            tool_calls=[handoff_call('{"rea', 'son": "Wants a refund ', 'above the limit"}')],
        )
    )
    reply = await queued_reply(text="I want a refund of 900 euros.")
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    saved = await reload(reply)
    [ticket] = await tickets_of(reply.conversation)
    assert (ticket.trigger, ticket.reason) == (Ticket.Trigger.MODEL_TOOL, "Wants a refund above the limit")
    assert await status_of(reply.conversation) == Conversation.Status.HANDED_OFF
    # The reply is saved whole, told, and then the handoff.
    assert (saved.status, saved.text) == (Message.Status.COMPLETE, "I'll get you a person.")
    assert shown_text(frames) == "I'll get you a person."
    kinds = types_of(frames)
    assert kinds.count("handoff.started") == 1
    assert kinds.index("reply.done") < kinds.index("handoff.started")
    started = frames[kinds.index("handoff.started")]
    assert started["ticket_id"] == ticket.pk
    assert_no_tool_call_shown(frames, "Wants a refund")
    # The AI is paused: the customer's next message gets no reply.
    assert await customer_writes_again(reply.conversation) is None


async def test_it_offers_the_tool_with_auto_choice_and_says_in_the_system_message_when_to_call_it(
    tool_on: None, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.enqueue(Script(tokens=["Your", " parcel", " ships", " today."]))
    reply = await queued_reply()

    await generate(reply)

    [request] = scripted_inference.chat_requests
    assert request.json["tools"] == [HANDOFF_TOOL]
    assert request.json["tool_choice"] == "auto"
    system = request.json["messages"][0]
    assert system["role"] == "system"
    assert system["content"].endswith(HANDOFF_TOOL_INSTRUCTIONS)
    # No call, no handoff: an ordinary reply.
    assert (await reload(reply)).text == "Your parcel ships today."
    assert await tickets_of(reply.conversation) == []
    assert await status_of(reply.conversation) == Conversation.Status.OPEN


async def test_a_call_without_a_word_gets_a_sentence_in_the_conversations_language(
    tool_on: None, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.enqueue(Script(tokens=[], tool_calls=[handoff_call('{"reason": "要求人工"}')]))
    reply = await queued_reply(locale=Conversation.Locale.ZH_HANS, text="我要投诉")
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    sentence = HANDOFF_SENTENCES[Conversation.Locale.ZH_HANS]
    saved = await reload(reply)
    assert (saved.status, saved.text) == (Message.Status.COMPLETE, sentence)
    assert shown_text(frames) == sentence
    done = frames[types_of(frames).index("reply.done")]
    assert done["message"]["text"] == sentence
    [ticket] = await tickets_of(reply.conversation)
    assert (ticket.trigger, ticket.reason) == (Ticket.Trigger.MODEL_TOOL, "要求人工")
    assert_no_tool_call_shown(frames, "要求人工")


async def test_arguments_that_are_not_json_still_hand_off_with_the_default_reason(
    tool_on: None, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.enqueue(
        Script(tokens=["One moment."], tool_calls=[handoff_call('{"reason": "cut sho', "rt")])
    )
    reply = await queued_reply()

    await generate(reply)

    [ticket] = await tickets_of(reply.conversation)
    assert (ticket.trigger, ticket.reason) == (Ticket.Trigger.MODEL_TOOL, HANDOFF_DEFAULT_REASON)
    assert (await reload(reply)).text == "One moment."


async def test_a_tool_called_twice_opens_one_ticket_and_announces_it_once(
    tool_on: None, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.enqueue(
        Script(
            tokens=["Connecting you."],
            tool_calls=[handoff_call('{"reason": "first"}'), handoff_call('{"reason": "second"}')],
        )
    )
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    [ticket] = await tickets_of(reply.conversation)
    assert ticket.reason == "first"
    assert types_of(frames).count("handoff.started") == 1


async def test_an_unknown_tool_is_ignored_and_never_shown(
    tool_on: None, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.enqueue(
        Script(
            tokens=[
                "Sure",
                ".",
                "<tool_call>",
                '{"name": "refund_order", "arguments": {"order": 7}}',
                "</tool_call>",
            ],
            tool_calls=[ScriptedToolCall(name="cancel_order", arguments=['{"order": 7}'])],
        )
    )
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    assert (await reload(reply)).text == "Sure."
    assert await tickets_of(reply.conversation) == []
    assert await status_of(reply.conversation) == Conversation.Status.OPEN
    assert_no_tool_call_shown(frames, "refund_order", "cancel_order", '"order"')


# --- a call written as Hermes text ---------------------------------------------------------------------


async def test_a_call_written_as_hermes_text_split_over_tokens_is_hidden_and_hands_off(
    tool_on: None, scripted_inference: ScriptedInferenceServer
) -> None:
    # vLLM without --tool-call-parser (or a parser miss): Qwen's call arrives in the content.
    scripted_inference.enqueue(
        Script(
            tokens=[
                "I'll connect you",
                " with a person.",
                "\n\n",
                "<tool",
                '_call>\n{"name": "handoff_',
                'to_human", "arguments": {"reason": "Asks for a ',
                'manager"}}\n</tool_',
                "call>",
            ]
        )
    )
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    saved = await reload(reply)
    assert (saved.status, saved.text) == (Message.Status.COMPLETE, "I'll connect you with a person.")
    assert shown_text(frames) == "I'll connect you with a person."
    assert_no_tool_call_shown(frames, "Asks for a manager", "<tool", "_call>")
    [ticket] = await tickets_of(reply.conversation)
    assert (ticket.trigger, ticket.reason) == (Ticket.Trigger.MODEL_TOOL, "Asks for a manager")
    assert await status_of(reply.conversation) == Conversation.Status.HANDED_OFF


async def test_a_hermes_call_when_the_tool_is_not_offered_is_hidden_but_hands_nothing_off(
    scripted_inference: ScriptedInferenceServer,
) -> None:
    scripted_inference.enqueue(
        Script(tokens=["Hi.", "<tool_call>", '{"name": "handoff_to_human", "arguments": {}}', "</tool_call>"])
    )
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    assert (await reload(reply)).text == "Hi."
    assert_no_tool_call_shown(frames)
    assert await tickets_of(reply.conversation) == []


# --- when the tool is not offered ------------------------------------------------------------------------


async def test_the_setting_off_offers_no_tool_and_a_streamed_call_hands_nothing_off(
    settings: Any, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.INFERENCE_HANDOFF_TOOL = False
    scripted_inference.enqueue(Script(tokens=["Hello."], tool_calls=[handoff_call('{"reason": "x"}')]))
    reply = await queued_reply()

    await generate(reply)

    [request] = scripted_inference.chat_requests
    assert "tools" not in request.json
    assert "tool_choice" not in request.json
    assert HANDOFF_TOOL_INSTRUCTIONS not in json.dumps(request.json["messages"])
    assert (await reload(reply)).text == "Hello."
    assert await tickets_of(reply.conversation) == []


async def test_the_trigger_switched_off_offers_no_tool(
    tool_on: None, scripted_inference: ScriptedInferenceServer
) -> None:
    await trigger_switch(enabled=False)
    scripted_inference.enqueue(Script(tokens=["Hello."]))
    reply = await queued_reply()

    await generate(reply)

    [request] = scripted_inference.chat_requests
    assert "tools" not in request.json
    assert "tool_choice" not in request.json
    assert HANDOFF_TOOL_INSTRUCTIONS not in json.dumps(request.json["messages"])


# --- one ticket per conversation -------------------------------------------------------------------------


async def test_a_call_after_the_customer_pressed_the_button_keeps_the_one_ticket(
    tool_on: None, scripted_inference: ScriptedInferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish = generation.reply_finish

    def finish_then_press_the_button(**fields: Any) -> Message | None:
        saved = real_finish(**fields)
        assert saved is not None
        # The customer presses the button between the reply's save and the model's handoff.
        services.handoff_request(conversation=saved.conversation, reason="Pressed the button")
        return saved

    monkeypatch.setattr(generation, "reply_finish", finish_then_press_the_button)
    scripted_inference.enqueue(
        Script(tokens=["Connecting."], tool_calls=[handoff_call('{"reason": "model"}')])
    )
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    [ticket] = await tickets_of(reply.conversation)
    assert (ticket.trigger, ticket.reason) == (Ticket.Trigger.CUSTOMER_BUTTON, "Pressed the button")
    # The button's own socket is answered by its consumer; the model's handoff announced nothing new.
    assert "handoff.started" not in types_of(frames)
    assert await status_of(reply.conversation) == Conversation.Status.HANDED_OFF


def test_the_models_handoff_keeps_an_existing_ticket_and_writes_nothing_new() -> None:
    conversation = factories.handed_off(reason="Wants a person")
    [ticket] = conversation.tickets.all()
    messages_before = conversation.messages.count()

    again = model_tool_handoff(conversation_id=conversation.pk, reason="The model asks too")

    assert again is not None
    assert again.pk == ticket.pk
    assert list(Ticket.objects.filter(conversation=conversation).values_list("trigger", "reason")) == [
        (Ticket.Trigger.CUSTOMER_BUTTON, "Wants a person")
    ]
    assert conversation.messages.count() == messages_before


def test_the_model_and_the_button_at_once_open_one_ticket() -> None:
    conversation = ConversationFactory()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(hand_off: Any) -> None:
        try:
            barrier.wait(timeout=10)
            hand_off()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(
            target=run, args=(lambda: model_tool_handoff(conversation_id=conversation.pk, reason="model"),)
        ),
        threading.Thread(target=run, args=(lambda: services.handoff_request(conversation=conversation),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert errors == []
    assert Ticket.objects.filter(conversation=conversation).count() == 1
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.HANDED_OFF


def test_a_closed_conversation_is_not_handed_off() -> None:
    conversation = ConversationFactory(status=Conversation.Status.CLOSED)

    assert model_tool_handoff(conversation_id=conversation.pk, reason="model") is None
    assert not Ticket.objects.filter(conversation=conversation).exists()


def test_the_reply_finished_rules_are_not_asked_when_the_reply_hands_off_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []
    monkeypatch.setattr(
        replies.handoff_rules, "reply_finished_handoff", lambda *, reply: asked.append(reply.pk)
    )
    conversation = ConversationFactory()
    posted = services.message_post(conversation=conversation, text="Anyone?")
    assert posted.reply is not None

    replies.reply_finish(
        reply_id=posted.reply.pk,
        outcome=replies.ReplyOutcome.COMPLETE,
        text="Connecting.",
        consult_handoff_rules=False,
    )

    assert asked == []
