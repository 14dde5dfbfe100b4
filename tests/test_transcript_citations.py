"""Admin transcript: where each reply came from, its citations as links, and the unanswered mark."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from conversations.admin import transcript_html
from conversations.models import Conversation, Message
from tests import factories

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

CITATIONS = [
    {
        "article": 7,
        "title": "Returns and exchanges",
        "anchor": "return-window",
        "url": "/kb/returns/#return-window",
    },
    {
        "article": 9,
        "title": "退款多久到账？",
        "anchor": "银行卡退款",
        "url": "/kb/refund-timing-zh/#银行卡退款",
    },
]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """The admin user's password needs no strong hash in tests (PBKDF2 takes most of a second)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def reply(conversation: Conversation, **fields: Any) -> Message:
    """An assistant reply in `conversation`, answering a customer question saved just before it."""
    question = MessageFactory(conversation=conversation, text="How do I return an item?")
    return MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        **{"text": "An answer.", **fields},
    )


def citation_blocks(html: str) -> list[str]:
    return re.findall(r'<div class="transcript-citations".*?</ol></div>', html, re.DOTALL)


def test_it_lists_a_replys_citations_as_links_to_the_articles_pages() -> None:
    conversation = ConversationFactory()
    reply(
        conversation, text="Within 30 days [1]; refunds in 3–5 days [2].", source="model", citations=CITATIONS
    )

    html = transcript_html(conversation)

    [block] = citation_blocks(html)
    links = re.findall(r'<li><a href="([^"]+)" target="_blank" rel="noopener">([^<]+)</a>', block)
    assert links == [
        ("/kb/returns/#return-window", "Returns and exchanges"),
        ("/kb/refund-timing-zh/#银行卡退款", "退款多久到账？"),
    ]
    assert re.findall(r'<a href="(/admin/knowledge/article/\d+/change/)"', block) == [
        "/admin/knowledge/article/7/change/",
        "/admin/knowledge/article/9/change/",
    ]
    assert "written by the model" in html


@pytest.mark.parametrize(
    ("source", "citations", "label"),
    [
        ("faq", [], "FAQ answer (no model)"),
        ("knowledge", CITATIONS[:1], "quoted from the knowledge base (no model)"),
        ("knowledge", [], "the nothing-found sentence (no model)"),
    ],
)
def test_it_says_when_no_model_wrote_a_reply(
    source: str, citations: list[dict[str, Any]], label: str
) -> None:
    conversation = ConversationFactory()
    reply(conversation, source=source, citations=citations)

    html = transcript_html(conversation)

    assert html.count(label) == 1
    assert "written by the model" not in html


def test_it_marks_an_unanswered_reply_and_only_that_one() -> None:
    conversation = ConversationFactory()
    reply(
        conversation, source="model", is_unanswered=True, text="I could not find that. Shall I get a person?"
    )
    reply(conversation, source="model", citations=CITATIONS[:1])

    html = transcript_html(conversation)

    rows = html.split('<div class="transcript-message ')[1:]
    marked = ["transcript-unanswered" in row for row in rows]
    # Question, unanswered reply, question, answered reply.
    assert marked == [False, True, False, False]
    assert html.count("unanswered: nothing relevant in the knowledge base, a person was offered") == 1


def test_it_shows_a_hostile_citation_as_text() -> None:
    conversation = ConversationFactory()
    hostile = [
        {"article": "x", "title": "<script>alert(1)</script>", "anchor": "", "url": "javascript:alert(2)"},
        {"article": 3, "title": "Protocol-relative", "anchor": "", "url": "//evil.example/kb/"},
    ]
    reply(conversation, citations=hostile)

    html = transcript_html(conversation)

    [block] = citation_blocks(html)
    assert "<script>" not in block
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in block
    assert "javascript:" not in block
    assert "evil.example" not in block
    # The second still names its article's admin page: the id is a number.
    assert re.findall(r'href="([^"]+)"', block) == ["/admin/knowledge/article/3/change/"]


@pytest.mark.parametrize("reply_count", [1, 50])
def test_it_reads_a_cited_transcript_in_two_queries_however_long(
    reply_count: int, django_assert_num_queries: Any
) -> None:
    conversation = ConversationFactory()
    for _ in range(reply_count):
        reply(conversation, source="model", citations=CITATIONS, is_unanswered=False)

    # The messages with their feedback, then every message's attachments: citations cost no query.
    with django_assert_num_queries(2):
        html = transcript_html(conversation)

    assert len(citation_blocks(html)) == reply_count


def test_it_filters_conversations_with_unanswered_replies(admin_client: Client) -> None:
    answered, unanswered = ConversationFactory(), ConversationFactory()
    reply(answered, citations=CITATIONS)
    reply(unanswered, is_unanswered=True)
    reply(unanswered, is_unanswered=True)

    def listed(query: str) -> list[str]:
        page = admin_client.get(f"/admin/conversations/conversation/{query}").content.decode()
        return re.findall(r"/admin/conversations/conversation/([0-9a-f-]{36})/change/", page)

    assert listed("?unanswered=yes") == [str(unanswered.pk)]
    assert listed("?unanswered=no") == [str(answered.pk)]
    assert sorted(listed("")) == sorted([str(answered.pk), str(unanswered.pk)])


def test_it_filters_messages_by_source_and_unanswered(admin_client: Client) -> None:
    conversation = ConversationFactory()
    faq = reply(conversation, source="faq", text="From the FAQ.")
    model = reply(conversation, source="model", is_unanswered=True, text="Nothing found.")

    def listed(query: str) -> list[int]:
        page = admin_client.get(f"/admin/conversations/message/{query}").content.decode()
        return [int(number) for number in re.findall(r"/admin/conversations/message/(\d+)/change/", page)]

    assert listed("?source__exact=faq") == [faq.pk]
    assert listed("?is_unanswered__exact=1") == [model.pk]
