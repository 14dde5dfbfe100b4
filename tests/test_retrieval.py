"""Retrieval: hybrid ranking of published sections in the conversation's language, and FAQ matches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from knowledge import indexing, retrieval
from knowledge.models import Article, FaqEntry, RetrievalSettings
from knowledge.retrieval import faq_match, retrieve

ROOT = Path(__file__).resolve().parent.parent

RETURNS_EN = """You can return most items within 30 days of delivery for a full refund.

## How to return an item

Open the order in your account, choose Return, print the prepaid label and drop the parcel at any
post office.

## Items that cannot be returned

Gift cards, opened software and personalised goods cannot be returned.
"""
SHIPPING_EN = """We ship every order from our warehouse in Hangzhou.

## Delivery times

Standard delivery takes 3 to 5 working days; express delivery takes 1 to 2 working days.

## Shipping costs

Shipping is free for orders over 99 yuan; below that it costs 8 yuan.
"""
RETURNS_ZH = """大多数商品在签收后30天内可以退货，全额退款。

## 如何退货

在账户中打开订单，选择“退货”，打印预付运单，把包裹交给任意邮局。

## 不能退货的商品

礼品卡、已拆封的软件和定制商品不能退货。
"""
FAPIAO_ZH = """我们为每一笔订单开具电子发票。

## 如何申请发票

在订单详情页点击“申请发票”，填写发票抬头和税号，发票会在3个工作日内发送到您的邮箱。
"""

CORPUS = [
    ("returns", "Returns and refunds", RETURNS_EN, "en"),
    ("shipping", "Shipping and delivery", SHIPPING_EN, "en"),
    ("tui-huo", "退货与退款", RETURNS_ZH, "zh-Hans"),
    ("fa-piao", "发票", FAPIAO_ZH, "zh-Hans"),
]
# The questions whose rankings must be the same on SQLite and PostgreSQL.
RANKED_QUESTIONS = [
    ("How do I send back something I bought?", "en"),
    ("how long does express delivery take", "en"),
    ("我想退货怎么办", "zh-Hans"),
    ("怎么开发票", "zh-Hans"),
]


@pytest.fixture
def knowledge_index(settings: Any, tmp_path: Path) -> Path:
    """An empty index folder for the test, and the newest build looked for on every call."""
    settings.KNOWLEDGE_INDEX_DIR = tmp_path / "index"
    settings.KNOWLEDGE_INDEX_CHECK_SECONDS = 1e-9
    indexing.forget_loaded_index()
    retrieval.forget_retrieval_config()
    return settings.KNOWLEDGE_INDEX_DIR


def article_create(slug: str, title: str, body: str, locale: str, *, published: bool = True) -> Article:
    return Article.objects.create(
        slug=slug,
        title=title,
        body=body,
        locale=locale,
        status=Article.Status.PUBLISHED if published else Article.Status.DRAFT,
    )


def corpus_create() -> None:
    for slug, title, body, locale in CORPUS:
        article_create(slug, title, body, locale)


def rankings() -> list[list[str]]:
    """The fused ranking of each question (before the threshold), with each row's calibrated score."""
    index = indexing.index_current()
    assert index is not None
    result = []
    for question, locale in RANKED_QUESTIONS:
        rows = index.chunk_rows_by_locale[locale]
        ranked = retrieval.chunk_ranking(index=index, query=question, rows=rows, limit=5)
        result.append(
            [
                f"{index.chunks[item.row]['slug']}#{index.chunks[item.row]['anchor']} {item.score:.4f}"
                for item in ranked
            ]
        )
    return result


@pytest.mark.django_db
def test_it_finds_a_published_article_and_points_at_its_section(knowledge_index: Path) -> None:
    corpus_create()
    indexing.index_rebuild()

    result = retrieve(query="Where do I drop the parcel with the prepaid return label?", locale="en")

    assert result.found is True
    best = result.sources[0]
    assert (best.slug, best.heading, best.anchor) == (
        "returns",
        "How to return an item",
        "how-to-return-an-item",
    )
    assert best.url == "/kb/returns/#how-to-return-an-item"
    assert best.title == "Returns and refunds"
    assert best.text.startswith("Open the order in your account")
    assert {source.locale for source in result.sources} == {"en"}
    assert 0.0 <= best.score <= 1.0
    assert len(result.sources) <= 3


@pytest.mark.django_db
def test_it_never_retrieves_a_draft(knowledge_index: Path) -> None:
    article_create(
        "secret-sale",
        "Secret sale",
        "## Black Friday\n\nEverything is 90% off on Black Friday.",
        "en",
        published=False,
    )
    corpus_create()
    indexing.index_rebuild()

    result = retrieve(query="Black Friday sale 90% off", locale="en")

    assert "secret-sale" not in [source.slug for source in result.sources]


@pytest.mark.django_db
def test_it_retrieves_the_new_text_of_an_edited_article_and_not_the_old(knowledge_index: Path) -> None:
    corpus_create()
    indexing.index_rebuild()
    assert retrieve(query="free shipping over 99 yuan", locale="en").sources[0].slug == "shipping"

    article = Article.objects.get(slug="shipping")
    article.body = SHIPPING_EN.replace(
        "Shipping is free for orders over 99 yuan; below that it costs 8 yuan.",
        "Parcels to Tibet and Xinjiang travel by air freight at a surcharge of 20 yuan.",
    )
    article.version += 1
    article.save()
    indexing.index_rebuild()

    texts = [source.text for source in retrieve(query="air freight surcharge Tibet", locale="en").sources]
    assert texts[0] == "Parcels to Tibet and Xinjiang travel by air freight at a surcharge of 20 yuan."
    old = [source.text for source in retrieve(query="free shipping over 99 yuan", locale="en").sources]
    assert all("99 yuan" not in text for text in old)


@pytest.mark.django_db
def test_it_finds_the_chinese_article_for_a_chinese_question(knowledge_index: Path) -> None:
    corpus_create()
    indexing.index_rebuild()

    result = retrieve(query="我买的东西想退掉，怎么操作？", locale="zh-Hans")

    assert result.sources[0].slug == "tui-huo"
    assert {source.locale for source in result.sources} == {"zh-Hans"}


@pytest.mark.django_db
def test_it_uses_other_languages_only_when_the_settings_allow_any(knowledge_index: Path) -> None:
    article_create(
        "fapiao-en", "Fapiao", "## Asking for a fapiao\n\nOpen the order and choose Request fapiao.", "en"
    )
    indexing.index_rebuild()

    assert retrieve(query="怎么开发票", locale="zh-Hans").found is False

    RetrievalSettings.objects.create(pk=1, any_language=True, relevance_threshold=0.0)
    retrieval.forget_retrieval_config()
    assert [source.slug for source in retrieve(query="怎么开发票", locale="zh-Hans").sources] == ["fapiao-en"]


@pytest.mark.django_db
def test_it_takes_the_nothing_found_path_for_an_unrelated_question(knowledge_index: Path) -> None:
    corpus_create()
    indexing.index_rebuild()

    assert retrieve(query="What is the capital of Australia?", locale="en").found is False
    assert retrieve(query="明天北京会下雨吗", locale="zh-Hans").found is False


@pytest.mark.django_db
def test_it_returns_at_most_the_sources_per_reply_setting(knowledge_index: Path) -> None:
    corpus_create()
    indexing.index_rebuild()
    RetrievalSettings.objects.create(pk=1, sources_per_reply=1, relevance_threshold=0.0)

    assert len(retrieve(query="return an item shipping delivery", locale="en").sources) == 1


@pytest.mark.django_db
def test_it_finds_nothing_before_any_build(knowledge_index: Path) -> None:
    corpus_create()

    assert retrieve(query="How do I return an item?", locale="en").found is False
    assert faq_match(question="How do I return an item?", locale="en") is None


@pytest.mark.django_db
def test_it_matches_a_quick_entry_click_exactly(knowledge_index: Path) -> None:
    entry = FaqEntry.objects.create(
        question="How do I return an item?", answer="Open the order and choose Return.", locale="en"
    )
    FaqEntry.objects.create(question="Where is my parcel?", answer="Track it in your account.", locale="en")
    indexing.index_rebuild()

    match = faq_match(question="how do I return an item", locale="en")

    assert match is not None
    assert (match.entry_id, match.answer, match.score) == (entry.pk, "Open the order and choose Return.", 1.0)


@pytest.mark.django_db
def test_it_matches_a_paraphrase_of_an_faq_question_and_not_an_unrelated_one(knowledge_index: Path) -> None:
    entry = FaqEntry.objects.create(question="如何申请退货？", answer="在订单页选择退货。", locale="zh-Hans")
    FaqEntry.objects.create(question="如何开发票？", answer="在订单页申请发票。", locale="zh-Hans")
    indexing.index_rebuild()

    match = faq_match(question="怎么申请退货", locale="zh-Hans")

    assert match is not None
    assert match.entry_id == entry.pk
    assert 0.8 <= match.score < 1.0
    assert faq_match(question="你们公司在哪个城市", locale="zh-Hans") is None
    assert faq_match(question="如何申请退货？", locale="en") is None


@pytest.mark.django_db
def test_it_never_matches_an_unpublished_faq_entry(knowledge_index: Path) -> None:
    FaqEntry.objects.create(
        question="How do I return an item?", answer="Return it.", locale="en", is_published=False
    )
    indexing.index_rebuild()

    assert faq_match(question="How do I return an item?", locale="en") is None


@pytest.mark.django_db
def test_it_dumps_rankings_for_another_database(knowledge_index: Path) -> None:
    """The child side of the cross-database test: writes its rankings where RANKING_DUMP says."""
    dump = os.environ.get("RANKING_DUMP")
    if not dump:
        pytest.skip("run by test_it_ranks_the_same_on_sqlite_and_postgresql")
    corpus_create()
    indexing.index_rebuild()
    Path(dump).write_text(json.dumps({"vendor": connection.vendor, "rankings": rankings()}))


@pytest.mark.django_db
def test_it_ranks_the_same_on_sqlite_and_postgresql(knowledge_index: Path, tmp_path: Path) -> None:
    corpus_create()
    indexing.index_rebuild()
    here = rankings()
    dump = tmp_path / "sqlite-rankings.json"
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'retrieval.sqlite3'}",
        "RANKING_DUMP": str(dump),
    }

    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/test_retrieval.py::test_it_dumps_rankings_for_another_database",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    there = json.loads(dump.read_text())
    assert there["vendor"] == "sqlite"
    assert there["rankings"] == here
    assert all(ranking for ranking in here)


@pytest.mark.django_db
def test_it_searches_a_pasted_wall_of_text_by_its_beginning_only(knowledge_index: Path) -> None:
    corpus_create()
    indexing.index_rebuild()
    index = indexing.index_current()
    assert index is not None
    pasted = "Where do I drop the parcel with the prepaid return label? " + "parcel " * 50_000

    started = time.perf_counter()
    ranked = retrieval.chunk_ranking(
        index=index, query=pasted, rows=index.chunk_rows_by_locale["en"], limit=3
    )
    elapsed = time.perf_counter() - started

    assert index.chunks[ranked[0].row]["slug"] == "returns"
    assert elapsed < 0.5


@pytest.mark.django_db
def test_it_matches_a_greeting_to_the_greeting_entry_but_not_a_question_that_greets(
    knowledge_index: Path,
) -> None:
    hello = FaqEntry.objects.create(question="Hello", answer="Hello! How can I help?", locale="en")
    FaqEntry.objects.create(question="Where is my order?", answer="Track it in your account.", locale="en")
    indexing.index_rebuild()

    match = faq_match(question="hi", locale="en")

    assert match is not None
    assert match.entry_id == hello.pk
    assert faq_match(question="Hi, I want to return an item", locale="en") is None
