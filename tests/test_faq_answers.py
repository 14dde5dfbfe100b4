"""Instant answers: an FAQ entry's answer, or quote mode's passage, streamed through the reply's usual
frames (reply.started, numbered deltas, reply.done) without calling the model.

Customers' sockets go through the real Redis channel layer; the scripted inference server records
every request, so "no model call" is what it saw. Retrieval is `KnowledgeStub` unless a test says
otherwise.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from conversations.models import Conversation, Message
from cs_platform.asgi import application
from knowledge import indexing, retrieval
from knowledge.retrieval import FaqMatch
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer
from tests.test_grounding import KnowledgeStub, source

pytestmark = pytest.mark.django_db(transaction=True)

ArticleFactory: Any = factories.ArticleFactory
AssistantProfileFactory: Any = factories.AssistantProfileFactory
ConversationFactory: Any = factories.ConversationFactory
FaqEntryFactory: Any = factories.FaqEntryFactory

RETURNS_ANSWER = "Open **My orders → Return** within 30 days of delivery."
RETURNS_FAQ = FaqMatch(
    entry_id=3, question="How do I return an item?", answer=RETURNS_ANSWER, locale="en", score=0.96
)


@pytest.fixture
def knowledge(monkeypatch: pytest.MonkeyPatch) -> KnowledgeStub:
    return KnowledgeStub().install(monkeypatch)


@database_sync_to_async
def create_conversation(**fields: Any) -> Conversation:
    return ConversationFactory(**fields)


@database_sync_to_async
def create_profile(**fields: Any) -> None:
    AssistantProfileFactory(**fields)


@database_sync_to_async
def get_message(pk: int) -> Message:
    return Message.objects.get(pk=pk)


async def connect(conversation: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": conversation.token})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"
    return communicator


async def ask(communicator: WebsocketCommunicator, text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a message; its acceptance and every reply frame up to the final one."""
    await communicator.send_json_to({"type": "message", "client_id": str(uuid.uuid4()), "text": text})
    accepted = await communicator.receive_json_from(timeout=5)
    assert accepted["type"] == "message.accepted"
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in ("reply.done", "reply.error"):
        frames.append(await communicator.receive_json_from(timeout=10))
    return accepted, frames


def done_frame(reply: Message, *, text: str, source: str, citations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "reply.done",
        "reply_id": reply.pk,
        "message": {
            "id": reply.pk,
            "role": "assistant",
            "text": text,
            "status": "complete",
            "attachments": [],
            "source": source,
            "citations": citations,
            "truncated": False,
            "error": None,
            "created_at": reply.created_at.isoformat(),
        },
    }


# --- FAQ entries --------------------------------------------------------------------------------------


async def test_it_streams_a_matching_faq_answer_without_calling_the_model(
    live_replies: ScriptedInferenceServer, knowledge: KnowledgeStub
):
    live_replies.enqueue(Script(tokens=["The", " model"]))
    knowledge.faq = RETURNS_FAQ
    conversation = await create_conversation()
    communicator = await connect(conversation)

    accepted, frames = await ask(communicator, "how can I return something?")

    reply = await get_message(accepted["reply_id"])
    assert frames == [
        {"type": "reply.started", "reply_id": reply.pk},
        {"type": "reply.delta", "reply_id": reply.pk, "seq": 0, "text": RETURNS_ANSWER},
        done_frame(reply, text=RETURNS_ANSWER, source="faq", citations=[]),
    ]
    assert (reply.text, reply.source, reply.status, reply.is_unanswered) == (
        RETURNS_ANSWER,
        "faq",
        "complete",
        False,
    )
    assert (reply.model, reply.prompt_tokens, reply.completion_tokens) == ("", None, None)
    assert reply.first_token_latency_ms is not None
    assert knowledge.questions == [("how can I return something?", "en")]
    # No model call at all: the scripted server saw no request, and retrieval was not needed either.
    assert live_replies.requests == []
    assert knowledge.queries == []
    await communicator.disconnect()


async def test_it_asks_the_model_when_no_faq_entry_matches(
    live_replies: ScriptedInferenceServer, knowledge: KnowledgeStub
):
    live_replies.enqueue(Script(tokens=["Cards", " are", " fine", "."]))
    conversation = await create_conversation()
    communicator = await connect(conversation)

    accepted, frames = await ask(communicator, "Can I pay by card?")

    reply = await get_message(accepted["reply_id"])
    assert frames[-1]["message"]["text"] == "Cards are fine."
    assert (reply.source, reply.text) == ("model", "Cards are fine.")
    assert len(live_replies.chat_requests) == 1
    await communicator.disconnect()


async def test_it_keeps_answering_when_faq_matching_and_retrieval_fail(
    live_replies: ScriptedInferenceServer, knowledge: KnowledgeStub
):
    live_replies.enqueue(Script(tokens=["Sorry", ", ", "a person can help."]))
    knowledge.faq_failure = RuntimeError("no index built yet")
    knowledge.failure = RuntimeError("no index built yet")
    conversation = await create_conversation()
    communicator = await connect(conversation)

    accepted, frames = await ask(communicator, "How do I return an item?")

    reply = await get_message(accepted["reply_id"])
    assert frames[-1]["type"] == "reply.done"
    assert (reply.status, reply.source, reply.text, reply.is_unanswered) == (
        "complete",
        "model",
        "Sorry, a person can help.",
        True,
    )
    await communicator.disconnect()


# --- quote mode -------------------------------------------------------------------------------------------

ZH_RETURNS = source(
    1,
    title="退换货政策",
    heading="如何申请退货",
    anchor="如何申请退货",
    text="在「我的订单 → 退换货」中发起申请，**签收后 30 天内**有效。",
    locale="zh-Hans",
)
ZH_CITATION = {
    "article": 1,
    "title": "退换货政策",
    "anchor": "如何申请退货",
    "url": "/kb/article-1/#如何申请退货",
}
ZH_QUOTE = "根据《退换货政策》：\n\n在「我的订单 → 退换货」中发起申请，**签收后 30 天内**有效。"


async def test_it_quotes_the_best_passage_with_its_citation_in_a_language_the_model_does_not_write(
    live_replies: ScriptedInferenceServer, knowledge: KnowledgeStub
):
    await create_profile(model_answer_locales=["en"])
    knowledge.sources = [ZH_RETURNS, source(2, locale="zh-Hans")]
    conversation = await create_conversation(locale="zh-Hans")
    communicator = await connect(conversation)

    accepted, frames = await ask(communicator, "我买的东西想退掉，怎么操作？")

    reply = await get_message(accepted["reply_id"])
    assert frames == [
        {"type": "reply.started", "reply_id": reply.pk},
        {"type": "reply.delta", "reply_id": reply.pk, "seq": 0, "text": ZH_QUOTE},
        done_frame(reply, text=ZH_QUOTE, source="knowledge", citations=[ZH_CITATION]),
    ]
    assert (reply.source, reply.citations, reply.is_unanswered) == ("knowledge", [ZH_CITATION], False)
    assert knowledge.queries == [("我买的东西想退掉，怎么操作？", "zh-Hans")]
    assert live_replies.requests == []
    await communicator.disconnect()


async def test_it_offers_a_person_in_quote_mode_and_marks_the_reply_unanswered_when_nothing_is_found(
    live_replies: ScriptedInferenceServer, knowledge: KnowledgeStub
):
    await create_profile(model_answer_locales=["en"])
    conversation = await create_conversation(locale="zh-Hans")
    communicator = await connect(conversation)

    accepted, frames = await ask(communicator, "你们卖宇宙飞船吗？")

    reply = await get_message(accepted["reply_id"])
    sentence = "抱歉，我们的帮助中心里没有找到关于这个问题的内容。需要的话，我可以为您转接人工客服。"
    assert frames[1:] == [
        {"type": "reply.delta", "reply_id": reply.pk, "seq": 0, "text": sentence},
        done_frame(reply, text=sentence, source="knowledge", citations=[]),
    ]
    assert (reply.source, reply.is_unanswered) == ("knowledge", True)
    assert live_replies.requests == []
    await communicator.disconnect()


async def test_it_lets_the_model_answer_in_its_own_language_while_quoting_in_the_others(
    live_replies: ScriptedInferenceServer, knowledge: KnowledgeStub
):
    live_replies.enqueue(Script(tokens=["Within", " 30 days", " [1]."]))
    await create_profile(model_answer_locales=["en"])
    knowledge.sources = [source(1, title="Returns policy", anchor="how-to-return")]
    conversation = await create_conversation(locale="en")
    communicator = await connect(conversation)

    accepted, frames = await ask(communicator, "How long do I have to return an item?")

    reply = await get_message(accepted["reply_id"])
    assert (reply.source, reply.text) == ("model", "Within 30 days [1].")
    assert reply.citations == [
        {
            "article": 1,
            "title": "Returns policy",
            "anchor": "how-to-return",
            "url": "/kb/article-1/#how-to-return",
        }
    ]
    assert frames[-1]["message"]["citations"] == reply.citations
    assert len(live_replies.chat_requests) == 1
    await communicator.disconnect()


# --- with the real FAQ matching and retrieval -------------------------------------------------------------


@pytest.fixture
def knowledge_index(settings: Any, tmp_path: Path) -> Path:
    """An index folder of the test's own, looked at again on every retrieval."""
    settings.KNOWLEDGE_INDEX_DIR = tmp_path / "index"
    settings.KNOWLEDGE_INDEX_CHECK_SECONDS = 1e-9
    indexing.forget_loaded_index()
    retrieval.forget_retrieval_config()
    return settings.KNOWLEDGE_INDEX_DIR


@database_sync_to_async
def faq_indexed() -> None:
    FaqEntryFactory(question="How do I return an item?", answer=RETURNS_ANSWER, position=0)
    FaqEntryFactory(question="How long is delivery?", answer="3 to 5 working days.", position=1)
    FaqEntryFactory(question="查订单", answer="在「我的订单」里可以查看订单状态。", locale="zh-Hans")
    indexing.index_rebuild()


@database_sync_to_async
def quick_entries(locale: str) -> list[str]:
    response = Client().get("/api/widget/faq", HTTP_ACCEPT_LANGUAGE=locale)
    assert response.status_code == 200
    return [entry["question"] for entry in json.loads(response.content)["entries"]]


async def test_it_answers_a_quick_entry_click_from_its_faq_entry_without_calling_the_model(
    live_replies: ScriptedInferenceServer, knowledge_index: Path
):
    await faq_indexed()
    questions = await quick_entries("en")
    assert questions[0] == "How do I return an item?"
    conversation = await create_conversation()
    communicator = await connect(conversation)

    # A click sends the entry's question as an ordinary message.
    accepted, frames = await ask(communicator, questions[0])

    reply = await get_message(accepted["reply_id"])
    assert frames == [
        {"type": "reply.started", "reply_id": reply.pk},
        {"type": "reply.delta", "reply_id": reply.pk, "seq": 0, "text": RETURNS_ANSWER},
        done_frame(reply, text=RETURNS_ANSWER, source="faq", citations=[]),
    ]
    assert live_replies.requests == []
    await communicator.disconnect()


async def test_it_answers_a_chinese_quick_entry_from_its_faq_entry(
    live_replies: ScriptedInferenceServer, knowledge_index: Path
):
    await faq_indexed()
    conversation = await create_conversation(locale="zh-Hans")
    communicator = await connect(conversation)

    accepted, frames = await ask(communicator, "查订单")

    reply = await get_message(accepted["reply_id"])
    assert (reply.source, reply.text) == ("faq", "在「我的订单」里可以查看订单状态。")
    assert frames[-1]["message"]["source"] == "faq"
    assert live_replies.requests == []
    await communicator.disconnect()


@database_sync_to_async
def chinese_returns_indexed() -> Any:
    article = ArticleFactory(
        slug="tui-huo",
        title="退货与退款",
        locale="zh-Hans",
        body="大多数商品在签收后30天内可以退货，全额退款。\n\n## 如何退货\n\n"
        "在账户中打开订单，选择“退货”，打印预付运单，把包裹交给任意邮局。\n\n## 不能退货的商品\n\n"
        "礼品卡、已拆封的软件和定制商品不能退货。\n",
    )
    indexing.index_rebuild()
    return article


async def test_it_quotes_the_chinese_article_the_real_retrieval_found(
    live_replies: ScriptedInferenceServer, knowledge_index: Path
):
    await create_profile(model_answer_locales=["en"])
    article = await chinese_returns_indexed()
    conversation = await create_conversation(locale="zh-Hans")
    communicator = await connect(conversation)

    accepted, frames = await ask(communicator, "我想退货，包裹要怎么寄回去？")

    reply = await get_message(accepted["reply_id"])
    assert reply.source == "knowledge"
    assert (
        reply.text
        == "根据《退货与退款》：\n\n在账户中打开订单，选择“退货”，打印预付运单，把包裹交给任意邮局。"
    )
    assert reply.citations == [
        {"article": article.pk, "title": "退货与退款", "anchor": "如何退货", "url": "/kb/tui-huo/#如何退货"}
    ]
    assert frames[-1]["message"]["citations"] == reply.citations
    assert live_replies.requests == []
    await communicator.disconnect()
