"""Transcripts in admin: every fact about each message and ticket on the page, and the list's filters."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.admin import INTERNAL_NOTE_LABEL
from conversations.models import Attachment, Conversation, Feedback, Message, SatisfactionRating, Ticket
from tests import factories
from tests.factories import attachment_for, make_user

# The admin tests' helpers (the autouse fixture applies here once imported).
from tests.test_admin import _fast_password_hashing, change_url, transcript_of  # noqa: F401

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

CONVERSATION_LINK = r'href="/admin/conversations/conversation/([0-9a-f-]{36})/change/'


def blocks_of(transcript: str) -> list[str]:
    """Each message's HTML, in order."""
    return transcript.split('<div class="transcript-message ')[1:]


def block_with(transcript: str, text: str) -> str:
    [block] = [block for block in blocks_of(transcript) if text in block]
    return block


def header_of(block: str) -> str:
    """The line above a message's text: who, when, status and the reply's facts."""
    match = re.search(r"<strong>.*?</div>", block, re.DOTALL)
    assert match is not None
    return match.group(0)


def inline_cells(page: str, name: str) -> list[str]:
    """The tickets inline's read-only cells of one column, tags stripped."""
    cells = re.findall(rf'<td class="field-{name}">(.*?)</td>', page, re.DOTALL)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def a_conversation_with_every_kind_of_message() -> dict[str, Any]:
    """One conversation holding every source, every reply fact, a note, ratings and a timed ticket."""
    agent = make_user("Agent", username="mei-agent", first_name="Mei", last_name="Chen", is_staff=True)
    conversation = ConversationFactory(locale="en")
    question = MessageFactory(conversation=conversation, text="My parcel arrived damaged")
    photo = attachment_for(conversation, width=64, height=48)
    Attachment.objects.filter(pk=photo.pk).update(message=question)
    model_reply = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        text="Sorry! We resend damaged parcels [1].",
        source=Message.Source.MODEL,
        model="qwen2.5-vl-7b",
        prompt_tokens=812,
        completion_tokens=14,
        first_token_latency_ms=350,
        total_latency_ms=900,
        truncated=True,
        citations=[{"article": 7, "title": "Damaged parcels", "url": "/kb/damaged/"}],
    )
    Feedback.objects.create(message=model_reply, rating=Feedback.Rating.DOWN, comment="Wrong size")
    faq_reply = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text="Shipping is free over 99 yuan.",
        source=Message.Source.FAQ,
    )
    Feedback.objects.create(message=faq_reply, rating=Feedback.Rating.UP)
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text="Returns are accepted within 30 days.",
        source=Message.Source.KNOWLEDGE,
        citations=[{"article": 9, "title": "Returns", "url": "/kb/returns/"}],
    )
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text="",
        source=Message.Source.MODEL,
        model="qwen2.5-vl-7b",
        status=Message.Status.FAILED,
        error_code="inference_timeout",
        error_detail="The assistant is busy, please try again.",
    )
    MessageFactory(
        conversation=conversation,
        role=Message.Role.SYSTEM,
        text="Connecting you to a person.",
        source="system",
    )
    MessageFactory(
        conversation=conversation,
        role=Message.Role.AGENT,
        author=agent,
        text="Customer sent a photo, resend size M.",
        source=Message.Source.AGENT,
        internal=True,
    )
    MessageFactory(
        conversation=conversation,
        role=Message.Role.AGENT,
        author=agent,
        text="Hi, I am resending it today.",
        source=Message.Source.AGENT,
    )
    SatisfactionRating.objects.create(conversation=conversation, score=2, comment="Still waiting")
    opened = timezone.now() - timedelta(hours=2)
    ticket = Ticket.objects.create(
        conversation=conversation,
        status=Ticket.Status.RESOLVED,
        trigger=Ticket.Trigger.KNOWLEDGE_MISS,
        reason="customer_request",
        assignee=agent,
        claimed_at=opened + timedelta(minutes=1),
        first_response_at=opened + timedelta(minutes=2),
        first_response_seconds=125,
        resolved_at=opened + timedelta(hours=1),
        resolution_seconds=3720,
    )
    return {"conversation": conversation, "photo": photo, "agent": agent, "ticket": ticket}


# --- the transcript page ---------------------------------------------------------------------------


def test_it_shows_every_fact_of_every_message_on_the_transcript(admin_client: Client) -> None:
    rows = a_conversation_with_every_kind_of_message()

    response = admin_client.get(change_url(rows["conversation"]))

    assert response.status_code == 200
    page = response.content.decode()
    transcript = transcript_of(page)
    roles = re.findall(r'<div class="transcript-message transcript-(\w+)"', transcript)
    assert roles == [
        "customer",
        "assistant",
        "assistant",
        "assistant",
        "assistant",
        "system",
        "agent",
        "agent",
    ]

    question = block_with(transcript, "My parcel arrived damaged")
    assert f"/api/widget/attachments/{rows['photo'].pk}/thumbnail?signature=" in question
    assert 'alt="Image 64×48"' in question

    model_reply = block_with(transcript, "We resend damaged parcels")
    assert header_of(model_reply).endswith(
        " · written by the model · qwen2.5-vl-7b · 812 prompt tokens, 14 reply tokens"
        " · first token 350 ms · total 900 ms · 👎 rated not helpful: Wrong size</div>"
    )
    assert '<a href="/kb/damaged/" target="_blank" rel="noopener">Damaged parcels</a>' in model_reply
    assert "⚠ cut short (max tokens)" in model_reply

    faq_reply = block_with(transcript, "Shipping is free")
    assert header_of(faq_reply).endswith(" · FAQ answer (no model) · 👍 rated helpful</div>")
    knowledge_reply = block_with(transcript, "Returns are accepted")
    assert "quoted from the knowledge base (no model)" in header_of(knowledge_reply)
    assert ">Returns</a>" in knowledge_reply

    failed = block_with(transcript, "Failed: ")
    assert "· Failed · written by the model · qwen2.5-vl-7b</div>" in header_of(failed)
    assert "<strong>Failed: the assistant took too long</strong> (inference_timeout)" in failed
    assert "The customer was told: “The assistant is busy, please try again.”" in failed

    assert header_of(block_with(transcript, "Connecting you")).endswith(
        " · automatic notice (no model)</div>"
    )
    note = block_with(transcript, "resend size M")
    public = block_with(transcript, "resending it today")
    assert header_of(note).endswith(" · written by an agent · Mei Chen</div>")
    assert INTERNAL_NOTE_LABEL in note
    assert "dashed" in note
    assert INTERNAL_NOTE_LABEL not in public
    assert header_of(public).endswith(" · written by an agent · Mei Chen</div>")
    assert transcript.count(INTERNAL_NOTE_LABEL) == 1

    assert "2/5: “Still waiting”" in page
    assert inline_cells(page, "trigger") == ["Knowledge base had nothing"]
    assert inline_cells(page, "reason_label") == ["The customer asked for a person"]
    assert inline_cells(page, "first_response") == ["2 min 5 s"]
    assert inline_cells(page, "resolution") == ["1 h 2 min"]
    assert inline_cells(page, "status") == ["Resolved"]
    assert re.search(rf'<option value="{rows["agent"].pk}" selected>mei-agent</option>', page)


def test_it_shows_a_tickets_timers_as_unknown_until_they_are_known(admin_client: Client) -> None:
    conversation = ConversationFactory()
    Ticket.objects.create(conversation=conversation, trigger=Ticket.Trigger.CUSTOMER_BUTTON)

    page = admin_client.get(change_url(conversation)).content.decode()

    assert inline_cells(page, "trigger") == ["Customer pressed the button"]
    assert inline_cells(page, "first_response") == ["–"]
    assert inline_cells(page, "resolution") == ["–"]


def test_a_view_only_reader_sees_the_assignee_as_text(client: Client) -> None:
    rows = a_conversation_with_every_kind_of_message()
    client.force_login(make_user("Manager", is_staff=True))

    page = client.get(change_url(rows["conversation"])).content.decode()

    assert inline_cells(page, "assignee") == ["mei-agent"]
    assert "<select" not in page.split('id="tickets-group"')[1]


# --- the list's filters and search ----------------------------------------------------------------


def listed(client: Client, query: str = "") -> list[str]:
    """The conversations a changelist URL lists, in order (each row links to its change page once)."""
    response = client.get(f"/admin/conversations/conversation/{query}")
    assert response.status_code == 200
    page = response.content.decode()
    body = page.split('id="result_list"')[1] if 'id="result_list"' in page else ""
    return re.findall(CONVERSATION_LINK, body)


@pytest.fixture
def three_conversations() -> dict[str, Conversation]:
    """Unhappy (CSAT 2, thumbs-down, handed off, unanswered, en, widget, qwen-a, ten days old), happy
    (CSAT 5, thumbs-up, zh-Hans, api, qwen-b) and unrated (no rating, no reply, no ticket)."""
    unhappy = ConversationFactory(locale="en", channel=Conversation.Channel.WIDGET)
    question = MessageFactory(conversation=unhappy, text="Where is my parcel 4821?")
    reply = MessageFactory(
        conversation=unhappy,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        text="I found nothing about that.",
        model="qwen-a",
        is_unanswered=True,
    )
    MessageFactory(conversation=unhappy, text="Still no parcel, the tracking says delivered")
    Feedback.objects.create(message=reply, rating=Feedback.Rating.DOWN)
    SatisfactionRating.objects.create(conversation=unhappy, score=2)
    Ticket.objects.create(conversation=unhappy, status=Ticket.Status.RESOLVED, resolved_at=timezone.now())
    Conversation.objects.filter(pk=unhappy.pk).update(created_at=timezone.now() - timedelta(days=10))

    happy = ConversationFactory(locale="zh-Hans", channel=Conversation.Channel.API)
    question = MessageFactory(conversation=happy, text="退货要多久？")
    reply = MessageFactory(
        conversation=happy, role=Message.Role.ASSISTANT, reply_to=question, text="30 天内。", model="qwen-b"
    )
    Feedback.objects.create(message=reply, rating=Feedback.Rating.UP)
    SatisfactionRating.objects.create(conversation=happy, score=5)

    unrated = ConversationFactory(locale="en", channel=Conversation.Channel.WIDGET)
    MessageFactory(conversation=unrated, text="Hello?")
    return {"unhappy": unhappy, "happy": happy, "unrated": unrated}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["unrated", "happy", "unhappy"]),
        ("?csat=2", ["unhappy"]),
        ("?csat=5", ["happy"]),
        ("?csat=1", []),
        ("?csat=none", ["unrated"]),
        ("?thumbs_down=yes", ["unhappy"]),
        ("?thumbs_down=no", ["unrated", "happy"]),
        ("?handed_off=yes", ["unhappy"]),
        ("?handed_off=no", ["unrated", "happy"]),
        ("?unanswered=yes", ["unhappy"]),
        ("?unanswered=no", ["unrated", "happy"]),
        ("?channel__exact=api", ["happy"]),
        ("?channel__exact=widget", ["unrated", "unhappy"]),
        ("?locale__exact=zh-Hans", ["happy"]),
        ("?locale__exact=en", ["unrated", "unhappy"]),
        ("?model=qwen-a", ["unhappy"]),
        ("?model=qwen-b", ["happy"]),
        ("?csat=none&handed_off=no", ["unrated"]),
        ("?thumbs_down=no&locale__exact=en", ["unrated"]),
    ],
)
def test_each_filter_narrows_the_list(
    admin_client: Client, three_conversations: dict[str, Conversation], query: str, expected: list[str]
) -> None:
    names = {str(conversation.pk): name for name, conversation in three_conversations.items()}

    assert [names[pk] for pk in listed(admin_client, query)] == expected


def test_it_filters_by_the_date_a_conversation_started(
    admin_client: Client, three_conversations: dict[str, Conversation]
) -> None:
    names = {str(conversation.pk): name for name, conversation in three_conversations.items()}
    today = timezone.localdate()
    week_ago, tomorrow = today - timedelta(days=7), today + timedelta(days=1)
    old = timezone.localtime(Conversation.objects.get(pk=three_conversations["unhappy"].pk).created_at)

    recent = listed(admin_client, f"?created_at__gte={week_ago}&created_at__lt={tomorrow}")
    by_day = listed(
        admin_client, f"?created_at__year={old.year}&created_at__month={old.month}&created_at__day={old.day}"
    )

    assert [names[pk] for pk in recent] == ["unrated", "happy"]
    assert [names[pk] for pk in by_day] == ["unhappy"]


def test_it_offers_the_models_that_wrote_replies_as_choices(
    admin_client: Client, three_conversations: dict[str, Conversation]
) -> None:
    page = admin_client.get("/admin/conversations/conversation/").content.decode()

    assert re.findall(r'href="\?model=([^"&]+)"', page) == ["qwen-a", "qwen-b"]


def test_search_finds_a_conversation_by_its_messages_text_once(
    admin_client: Client, three_conversations: dict[str, Conversation]
) -> None:
    names = {str(conversation.pk): name for name, conversation in three_conversations.items()}

    # Two of the unhappy conversation's messages say "parcel": it is listed once.
    assert [names[pk] for pk in listed(admin_client, "?q=parcel")] == ["unhappy"]
    assert [names[pk] for pk in listed(admin_client, "?q=退货")] == ["happy"]
    assert listed(admin_client, "?q=nowhere-to-be-found") == []
    page = admin_client.get("/admin/conversations/conversation/?q=parcel").content.decode()
    assert "1 result" in page


def test_it_lists_the_thumbs_down_and_ticket_counts(
    admin_client: Client, three_conversations: dict[str, Conversation]
) -> None:
    unhappy = three_conversations["unhappy"]
    Ticket.objects.create(conversation=unhappy)  # a second handoff, after the first was resolved
    page = admin_client.get("/admin/conversations/conversation/?csat=2").content.decode()

    assert re.findall(r'<td class="field-message_count">(\d+)</td>', page) == ["3"]
    assert re.findall(r'<td class="field-thumbs_down_count">(\d+)</td>', page) == ["1"]
    assert re.findall(r'<td class="field-ticket_count">(\d+)</td>', page) == ["2"]


def many_conversations(count: int) -> None:
    for number in range(count):
        conversation = ConversationFactory()
        question = MessageFactory(conversation=conversation, text=f"Question {number}")
        reply = MessageFactory(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            reply_to=question,
            text="Answer",
            model=f"model-{number % 3}",
        )
        Feedback.objects.create(message=reply, rating=Feedback.Rating.DOWN)
        SatisfactionRating.objects.create(conversation=conversation, score=1 + number % 5)
        Ticket.objects.create(conversation=conversation)


# Session, user, the two counts, the rows, the model filter's choices, the date hierarchy's dates,
# and the savepoints around the changelist: with headroom, and the same at 3 rows as at 60.
CHANGELIST_MAX_QUERIES = 12


@pytest.mark.parametrize("query", ["", "?q=Question", "?csat=1&thumbs_down=yes&handed_off=yes&model=model-0"])
def test_the_list_costs_as_many_queries_for_sixty_rows_as_for_three(
    admin_client: Client, django_assert_max_num_queries: Any, query: str
) -> None:
    many_conversations(3)
    admin_client.get("/admin/conversations/conversation/")  # the session and the user are cached

    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(f"/admin/conversations/conversation/{query}").status_code == 200
    many_conversations(57)
    with django_assert_max_num_queries(CHANGELIST_MAX_QUERIES):
        assert admin_client.get(f"/admin/conversations/conversation/{query}").status_code == 200
    with CaptureQueriesContext(connection) as lots:
        admin_client.get(f"/admin/conversations/conversation/{query}")

    assert len(lots) == len(few)


def test_an_agent_only_list_stays_bounded_too(client: Client, django_assert_max_num_queries: Any) -> None:
    agent: User = make_user("Agent", is_staff=True)
    many_conversations(20)
    Ticket.objects.update(assignee=agent)
    client.force_login(agent)

    with django_assert_max_num_queries(CHANGELIST_MAX_QUERIES + 2):
        page = client.get("/admin/conversations/conversation/").content.decode()

    assert "20 conversations" in page
