"""Safety of what the assistant says: blocked terms never reach the customer, and the disclaimer.

The filter is tested alone over every way of splitting a text into deltas; then replies are generated
against the scripted inference server and heard through the real Redis channel layer (a listener in
the conversation's group, and a customer's own websocket), as tests/test_generation.py does.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.test import Client

from conversations import replies
from conversations.admin import transcript_html
from conversations.models import Conversation, Message, Ticket
from cs_platform.asgi import application
from inference.generation import reply_generate
from knowledge.retrieval import FaqMatch
from safety import policy
from safety.models import DEFAULT_DISCLAIMERS, DEFAULT_REPLACEMENTS, BlockedTerm, SafetySettings
from safety.terms import BlockedTermFilter, TermMatcher, normalise
from tests import factories
from tests.factories import make_user
from tests.scripted_inference import Script, ScriptedInferenceServer
from tests.test_generation import GroupListener, deltas_of, generate, queued_reply, reload
from tests.test_grounding import KnowledgeStub

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

REPLACEMENT_EN = DEFAULT_REPLACEMENTS["en"]
REPLACEMENT_ZH = DEFAULT_REPLACEMENTS["zh-Hans"]


@pytest.fixture(autouse=True)
def _fresh_policy() -> Iterator[None]:
    """Each test reads the terms it made: no cached policy from another test, and none left behind."""
    policy.policy_forget()
    yield
    policy.policy_forget()


# --- the filter alone, over every split ----------------------------------------------------------------


# Up to this length every composition is tried; a longer text is cut at up to three places, in every
# combination of places (a term is at most a few characters: three cuts split it in every way there is).
EXHAUSTIVE_UP_TO = 12


def splits(text: str) -> Iterator[list[str]]:
    """Ways of cutting `text` into consecutive non-empty deltas: all 2^(n-1) of a short text."""
    positions = range(1, len(text))
    most = len(text) - 1 if len(text) <= EXHAUSTIVE_UP_TO else 3
    for count in range(most + 1):
        for cuts in itertools.combinations(positions, count):
            bounds = [0, *cuts, len(text)]
            yield [text[start:end] for start, end in itertools.pairwise(bounds)]


def filtered(matcher: TermMatcher, parts: list[str]) -> tuple[str, str | None]:
    """What the customer would be sent of `parts`, and the term that stopped them (None: none)."""
    term_filter = BlockedTermFilter(matcher)
    shown = "".join(term_filter.feed(part) for part in parts) + term_filter.flush()
    return shown, term_filter.blocked


def test_splits_are_every_composition_of_a_short_text() -> None:
    assert list(splits("abc")) == [["abc"], ["a", "bc"], ["ab", "c"], ["a", "b", "c"]]
    assert len(list(splits("x" * EXHAUSTIVE_UP_TO))) == 2 ** (EXHAUSTIVE_UP_TO - 1)


BLOCKED_TEXTS = [
    "It is bad.",
    "It is BAD!",
    "Bad news",
    "It is ＢＡＤ.",
    "so Ｂａｄ",
    "bad",
    "a \u200bbad day",
    "b\u200bad stuff",
]


@pytest.mark.parametrize("text", BLOCKED_TEXTS)
def test_a_term_split_in_any_way_never_gets_through(text: str) -> None:
    matcher = TermMatcher(["bad"])
    ways = 0
    for parts in splits(text):
        shown, blocked = filtered(matcher, parts)
        ways += 1
        assert blocked == "bad", parts
        assert "bad" not in normalise(shown)[0], parts
        # What was let through is the text before the term and nothing else.
        assert text.startswith(shown), parts
    assert ways == 2 ** (len(text) - 1)  # every way there is


CLEAN_TEXTS = ["A badge for the class.", "Assist the Bass player", "b a d", "ba-d", "ＢＡＤＧＥ ok", "a"]


@pytest.mark.parametrize("text", CLEAN_TEXTS)
def test_a_text_without_the_term_gets_through_whole_in_any_split(text: str) -> None:
    matcher = TermMatcher(["bad", "ass"])
    for parts in splits(text):
        assert filtered(matcher, parts) == (text, None), parts


@pytest.mark.parametrize("text", ["这是坏话吗", "坏话", "你说坏话了", "我不说ｂａｄ"])
def test_a_chinese_term_matches_inside_words_in_any_split(text: str) -> None:
    matcher = TermMatcher(["坏话", "bad"])
    for parts in splits(text):
        shown, blocked = filtered(matcher, parts)
        assert blocked in {"坏话", "bad"}, parts
        assert "坏话" not in shown, parts
        assert "bad" not in normalise(shown)[0], parts


def test_a_latin_term_next_to_chinese_characters_is_a_whole_word() -> None:
    matcher = TermMatcher(["bad"])

    assert filtered(matcher, ["这个", "bad", "很"])[1] == "bad"
    assert filtered(matcher, ["这个badge很好"]) == ("这个badge很好", None)


def test_a_phrase_matches_across_white_space_of_any_kind() -> None:
    matcher = TermMatcher(["bad  Word"])

    for parts in splits("a bad\n word!"):
        assert filtered(matcher, parts)[1] == "bad  Word", parts
    assert filtered(matcher, ["a bad wordsmith"]) == ("a bad wordsmith", None)


def test_it_holds_back_only_what_may_still_become_a_term() -> None:
    term_filter = BlockedTermFilter(TermMatcher(["bad", "terrible"]))

    assert term_filter.feed("It was b") == "It was "
    assert term_filter.feed("e") == "be"
    assert term_filter.feed("tter than terr") == "tter than "
    # The longest term is eight characters: nothing longer is ever held back.
    assert term_filter.feed("ific") == "terrific"
    assert term_filter.feed(" bad") == " "
    assert term_filter.feed("ly") == "badly"
    assert term_filter.flush() == ""
    assert term_filter.blocked is None


def test_a_whole_word_term_at_the_very_end_of_the_reply_is_blocked_at_the_end() -> None:
    term_filter = BlockedTermFilter(TermMatcher(["bad"]))

    assert term_filter.feed("That is bad") == "That is "
    assert term_filter.blocked is None
    assert term_filter.flush() == ""
    assert term_filter.blocked == "bad"


def test_a_matcher_without_terms_lets_everything_through() -> None:
    assert filtered(TermMatcher(["", "  ", "\u200b"]), ["bad", " ", "words"]) == ("bad words", None)


# --- replies generated for real ------------------------------------------------------------------------


@database_sync_to_async
def block(*terms: str, locale: str = BlockedTerm.Locale.ANY, enabled: bool = True) -> None:
    for term in terms:
        BlockedTerm.objects.create(term=term, locale=locale, enabled=enabled)


@database_sync_to_async
def safety_settings(**fields: Any) -> None:
    row = SafetySettings.current()
    for name, value in fields.items():
        setattr(row, name, value)
    row.save()


def assert_blocked_reply(
    received: list[dict[str, Any]], saved: Message, *, replacement: str, term: str
) -> None:
    streamed = "".join(delta["text"] for delta in deltas_of(received))
    assert term.casefold() not in normalise(streamed)[0]
    done = received[-1]
    assert done["type"] == "reply.done"
    assert done["message"]["text"] == replacement
    assert (done["message"]["status"], done["message"]["error"], done["message"]["citations"]) == (
        "complete",
        None,
        [],
    )
    # Kept so: the replacement as the text, the term only where staff read it, the model's text nowhere.
    assert (saved.text, saved.status, saved.error_code, saved.error_detail) == (
        replacement,
        Message.Status.COMPLETE,
        "blocked",
        term,
    )


TOKEN_SPLITS = [
    ["Sure, that is ", "b", "ad", ". More text."],
    ["Sure, that is ", "ba", "d", ". More text."],
    ["Sure, that is ", "B", "AD", ". More text."],
    ["Sure, that is ", "Ｂ", "ａ", "ｄ", ". More text."],
    ["Sure, that is b", "a", "d", ". More text."],
    ["Sure, that is bad. More text."],
    ["S", "ure, that is ", "bA", "D. More", " text."],
    # The term is the reply's last word: it is known complete only when the stream ends.
    ["Sure, that is ", "ba", "d"],
]


live_db = pytest.mark.django_db(transaction=True)


@live_db
@pytest.mark.parametrize("tokens", TOKEN_SPLITS)
async def test_a_blocked_term_split_over_deltas_never_reaches_the_group_and_the_reply_is_replaced(
    tokens: list[str], scripted_inference: ScriptedInferenceServer
) -> None:
    await block("bad")
    scripted_inference.enqueue(Script(tokens=tokens))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    received = await listener.rest()
    assert_blocked_reply(received, await reload(reply), replacement=REPLACEMENT_EN, term="bad")
    # Nothing after the term went out either.
    assert "More" not in "".join(delta["text"] for delta in deltas_of(received))


@live_db
async def test_a_blocked_reply_stops_the_models_stream(scripted_inference: ScriptedInferenceServer) -> None:
    await block("bad")
    # The server would hold the rest back for 30 s: the reply ends without waiting for it.
    scripted_inference.enqueue(
        Script(tokens=["That is ", "b", "ad.", " And then more"], stall_after=3, stall_seconds=30)
    )
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    await scripted_inference.wait_for_disconnects_async(1, timeout=5)
    [request] = scripted_inference.chat_requests
    assert not request.completed
    assert_blocked_reply(await listener.rest(), await reload(reply), replacement=REPLACEMENT_EN, term="bad")


@live_db
async def test_a_customers_socket_never_sees_a_chinese_term_and_reads_the_chinese_sentence(
    live_replies: ScriptedInferenceServer,
) -> None:
    await block("坏话", locale=BlockedTerm.Locale.ZH_HANS)
    live_replies.enqueue(Script(tokens=["您好，", "这是", "坏", "话", "，以及", "更多"]))
    conversation = await database_sync_to_async(ConversationFactory)(locale=Conversation.Locale.ZH_HANS)
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": conversation.token})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"

    await communicator.send_json_to({"type": "message", "client_id": str(uuid.uuid4()), "text": "你好"})
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in ("reply.done", "reply.error"):
        frames.append(await communicator.receive_json_from(timeout=10))
    await communicator.disconnect()

    everything = "".join(str(frame) for frame in frames)
    assert "坏话" not in everything
    assert "更多" not in everything
    reply = await database_sync_to_async(Message.objects.get)(pk=frames[-1]["reply_id"])
    assert_blocked_reply(frames, reply, replacement=REPLACEMENT_ZH, term="坏话")


@live_db
async def test_it_says_the_replacement_sentence_the_supervisor_wrote(
    scripted_inference: ScriptedInferenceServer,
) -> None:
    await block("bad")
    await safety_settings(replacement_en="Let me get a colleague for this one.")
    scripted_inference.enqueue(Script(tokens=["bad", " idea"]))
    reply = await queued_reply()

    await generate(reply)

    saved = await reload(reply)
    assert (saved.text, saved.error_code) == ("Let me get a colleague for this one.", "blocked")


@live_db
@pytest.mark.parametrize(
    ("term_locale", "enabled", "conversation_locale", "blocked"),
    [
        (BlockedTerm.Locale.EN, True, "en", True),
        (BlockedTerm.Locale.EN, True, "zh-Hans", False),
        (BlockedTerm.Locale.ZH_HANS, True, "en", False),
        (BlockedTerm.Locale.ANY, True, "zh-Hans", True),
        (BlockedTerm.Locale.ANY, False, "en", False),
    ],
)
async def test_a_term_applies_in_its_language_and_only_while_enabled(
    term_locale: str,
    enabled: bool,
    conversation_locale: str,
    blocked: bool,
    scripted_inference: ScriptedInferenceServer,
) -> None:
    await block("bad", locale=term_locale, enabled=enabled)
    scripted_inference.enqueue(Script(tokens=["Not ", "bad", " at all"]))
    reply = await queued_reply(locale=conversation_locale)

    await generate(reply)

    saved = await reload(reply)
    assert (saved.error_code == "blocked") is blocked
    assert saved.text == (
        {"en": REPLACEMENT_EN, "zh-Hans": REPLACEMENT_ZH}[conversation_locale]
        if blocked
        else "Not bad at all"
    )


@live_db
async def test_a_term_added_in_this_process_applies_to_the_next_reply_at_once(
    scripted_inference: ScriptedInferenceServer, settings: Any
) -> None:
    settings.SAFETY_CACHE_SECONDS = 3600
    scripted_inference.enqueue(Script(tokens=["bad", " luck"]), Script(tokens=["bad", " luck"]))
    first = await queued_reply()
    await generate(first)
    await block("bad")  # its save forgets the cache of this process
    second = await queued_reply()

    await generate(second)

    assert ((await reload(first)).text, (await reload(second)).text) == ("bad luck", REPLACEMENT_EN)


@live_db
def test_another_process_reads_the_terms_again_once_its_copy_is_older_than_the_ttl(settings: Any) -> None:
    # What another process sees of an edit made elsewhere: no signal, only the age of its copy.
    term = BlockedTerm.objects.create(term="bad", enabled=False)
    settings.SAFETY_CACHE_SECONDS = 3600
    assert policy.policy_get().term_filter("en") is None
    BlockedTerm.objects.filter(pk=term.pk).update(enabled=True)  # no save signal: as in another process

    kept = policy.policy_get().term_filter("en")
    settings.SAFETY_CACHE_SECONDS = 0
    read_again = policy.policy_get().term_filter("en")

    assert kept is None
    assert read_again is not None
    assert read_again.feed("bad.") == ""
    assert read_again.blocked == "bad"


@live_db
def test_it_reads_the_policy_from_the_database_once_per_ttl(
    settings: Any, django_assert_num_queries: Any
) -> None:
    settings.SAFETY_CACHE_SECONDS = 3600
    BlockedTerm.objects.create(term="bad")

    with django_assert_num_queries(2):
        policy.policy_get()
    with django_assert_num_queries(0):
        for _ in range(5):
            assert policy.policy_get().term_filter("en") is not None


# --- the disclaimer ------------------------------------------------------------------------------------


@live_db
@pytest.mark.parametrize("locale", ["en", "zh-Hans"])
async def test_the_disclaimer_follows_a_model_answer_as_its_own_last_delta(
    locale: str, scripted_inference: ScriptedInferenceServer
) -> None:
    await safety_settings(disclaimer_enabled=True)
    scripted_inference.enqueue(Script(tokens=["Your parcel", " arrives tomorrow."]))
    reply = await queued_reply(locale=locale)
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    received = await listener.rest()
    deltas = deltas_of(received)
    disclaimer = DEFAULT_DISCLAIMERS[locale]
    expected = f"Your parcel arrives tomorrow.\n\n{disclaimer}"
    assert deltas[-1]["text"] == f"\n\n{disclaimer}"
    assert "".join(delta["text"] for delta in deltas) == expected
    assert received[-1]["message"]["text"] == expected
    assert (await reload(reply)).text == expected


@live_db
async def test_no_disclaimer_unless_switched_on(scripted_inference: ScriptedInferenceServer) -> None:
    scripted_inference.enqueue(Script(tokens=["Your parcel", " arrives tomorrow."]))
    reply = await queued_reply()

    await generate(reply)

    assert (await reload(reply)).text == "Your parcel arrives tomorrow."


@live_db
async def test_no_disclaimer_after_the_replacement_sentence(
    scripted_inference: ScriptedInferenceServer,
) -> None:
    await block("bad")
    await safety_settings(disclaimer_enabled=True)
    scripted_inference.enqueue(Script(tokens=["bad", " idea"]))
    reply = await queued_reply()

    await generate(reply)

    assert (await reload(reply)).text == REPLACEMENT_EN


@live_db
async def test_no_disclaimer_after_a_cancelled_reply(scripted_inference: ScriptedInferenceServer) -> None:
    await safety_settings(disclaimer_enabled=True)
    scripted_inference.enqueue(Script(tokens=["Half", " way"], stall_after=1, stall_seconds=30))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)
    running = asyncio.create_task(reply_generate(reply_id=reply.pk))
    assert (await listener.next())["text"] == "Half"

    await database_sync_to_async(replies.reply_cancel)(conversation=reply.conversation, reply_id=reply.pk)
    await asyncio.wait_for(running, 10)

    saved = await reload(reply)
    assert (saved.status, saved.text) == (Message.Status.CANCELLED, "Half")


@live_db
async def test_no_disclaimer_after_an_faq_answer(
    scripted_inference: ScriptedInferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    knowledge = KnowledgeStub().install(monkeypatch)
    knowledge.faq = FaqMatch(
        entry_id=3, question="Returns?", answer="Within 30 days.", locale="en", score=0.96
    )
    await safety_settings(disclaimer_enabled=True)
    reply = await queued_reply(text="Returns?")

    await generate(reply)

    saved = await reload(reply)
    assert (saved.source, saved.text) == ("faq", "Within 30 days.")
    assert scripted_inference.chat_requests == []


# --- admin ---------------------------------------------------------------------------------------------


@pytest.fixture
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def signed_in(group: str | None, **fields: Any) -> Client:
    client = Client()
    client.force_login(make_user(group, is_staff=True, **fields))
    return client


def group_permissions(name: str) -> set[str]:
    return {
        f"{app_label}.{codename}"
        for app_label, codename in Group.objects.get(name=name).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


@pytest.mark.django_db
def test_supervisors_keep_the_terms_and_settings_and_managers_read_them() -> None:
    supervisor, manager, agent = (group_permissions(name) for name in ("Supervisor", "Manager", "Agent"))

    assert {
        "safety.view_blockedterm",
        "safety.add_blockedterm",
        "safety.change_blockedterm",
        "safety.delete_blockedterm",
        "safety.view_safetysettings",
        "safety.change_safetysettings",
    } <= supervisor
    assert {p for p in manager if p.startswith("safety.")} == {
        "safety.view_blockedterm",
        "safety.view_safetysettings",
    }
    assert not any(p.startswith("safety.") for p in agent)


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_password_hashing")
@pytest.mark.parametrize(
    ("role", "add_term", "term_list", "settings_page"),
    [("Supervisor", 200, 200, 302), ("Manager", 403, 200, 200), ("Agent", 403, 403, 403)],
)
def test_each_role_opens_only_its_safety_pages(
    role: str, add_term: int, term_list: int, settings_page: int
) -> None:
    client = signed_in(role)

    assert client.get("/admin/safety/blockedterm/add/").status_code == add_term
    assert client.get("/admin/safety/blockedterm/").status_code == term_list
    assert client.get("/admin/safety/safetysettings/").status_code == settings_page


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_password_hashing")
def test_a_supervisor_adds_a_term_and_saves_the_settings_in_admin() -> None:
    client = signed_in("Supervisor")

    added = client.post(
        "/admin/safety/blockedterm/add/", {"term": " Bad ", "locale": "en", "enabled": "on", "note": "rude"}
    )
    duplicate = client.post(
        "/admin/safety/blockedterm/add/", {"term": "ＢＡＤ", "locale": "en", "enabled": "on"}
    )
    empty = client.post("/admin/safety/blockedterm/add/", {"term": "\u200b", "locale": "en", "enabled": "on"})
    opened = client.get("/admin/safety/safetysettings/")
    saved = client.post(
        opened["Location"],
        {
            "replacement_en": "Let me fetch a colleague.",
            "replacement_zh_hans": REPLACEMENT_ZH,
            "disclaimer_enabled": "on",
            "disclaimer_en": "Written by AI.",
            "disclaimer_zh_hans": "",
        },
    )

    assert added.status_code == 302
    assert list(BlockedTerm.objects.values_list("term", "locale", "note")) == [("Bad", "en", "rude")]
    assert "already blocked" in duplicate.content.decode()
    assert "visible character" in empty.content.decode()
    assert saved.status_code == 302
    row = SafetySettings.current()
    assert (row.replacement_for("en"), row.disclaimer_for("en"), row.disclaimer_for("zh-Hans")) == (
        "Let me fetch a colleague.",
        "Written by AI.",
        "",
    )


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_password_hashing")
def test_the_transcript_marks_a_blocked_reply_and_names_the_term_only_to_supervisors() -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="Tell me something rude")
    reply = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=Message.Source.MODEL,
        text=REPLACEMENT_EN,
        error_code="blocked",
        error_detail="bad",
    )
    agent = make_user("Agent", is_staff=True)
    Ticket.objects.create(conversation=conversation, assignee=agent, status=Ticket.Status.ASSIGNED)
    url = f"/admin/conversations/conversation/{conversation.pk}/change/"
    agents_client = Client()
    agents_client.force_login(agent)

    for_supervisor = signed_in("Supervisor").get(url).content.decode()
    for_agent = agents_client.get(url).content.decode()
    message_for_agent = agents_client.get(f"/admin/conversations/message/{reply.pk}/change/").content.decode()

    assert "transcript-blocked" in for_supervisor
    assert "transcript-blocked" in for_agent
    assert "term: “bad”" in for_supervisor
    assert "term:" not in for_agent
    assert not re.search(r">\s*bad\s*<", message_for_agent)
    assert "term: “bad”" not in transcript_html(conversation)
