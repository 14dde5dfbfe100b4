"""The widget shows where an answer came from: the Sources row, superscript markers, the FAQ label.

The replies stream from the scripted inference server. Their citations and source are set the way
the grounding saves them: live, by rewriting the `reply.done` frame on its way to the page (the
socket is routed through Playwright), and after a reload, in the database the history is read from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Dialog, Page, ViewportSize, WebSocketRoute, expect

from conversations.models import Message
from knowledge.anchors import heading_anchors
from knowledge.models import Article
from tests.browser.conftest import SCREENSHOTS, Platform
from tests.scripted_inference import Script

pytestmark = pytest.mark.browser

DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=375, height=740)

# Two articles of the demo shop per language, each cited at one of its sections.
ARTICLES = {
    "en": [
        (
            "returns-and-exchanges",
            "Returns and exchanges",
            "Return window",
            "You have 30 days to return an item.",
        ),
        (
            "refund-timing",
            "When will I get my refund?",
            "Card refunds",
            "Card refunds take 3–5 working days.",
        ),
    ],
    "zh-Hans": [
        ("returns-and-exchanges-zh", "退货与换货", "退货期限", "收到商品后 30 天内可以申请退货。"),
        ("refund-timing-zh", "退款多久到账？", "银行卡退款", "银行卡退款一般 3–5 个工作日到账。"),
    ],
}
REPLIES = {
    "en": "You can return an item within **30 days** of delivery [1]. Card refunds take 3–5 days [2].",
    "zh-Hans": "收到商品后 **30 天内**可以申请退货【1】。银行卡退款一般 3–5 个工作日到账【2】。",
}
QUESTIONS = {"en": "How do I return an item?", "zh-Hans": "怎么退货？"}
SOURCES_TITLE = {"en": "Sources", "zh-Hans": "参考资料"}
FAQ_LABEL = {"en": "From our FAQ", "zh-Hans": "来自常见问题"}
KNOWLEDGE_LABEL = {"en": "From our help center", "zh-Hans": "来自帮助中心"}
BROWSER_LOCALE = {"en": "en-US", "zh-Hans": "zh-CN"}


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def published_articles(locale: str) -> list[dict[str, Any]]:
    """The language's demo articles, published, and the citation of each one's section."""
    citations = []
    for slug, title, heading, text in ARTICLES[locale]:
        article = Article.objects.create(
            slug=slug,
            title=title,
            body=f"# {title}\n\n## {heading}\n\n{text}\n",
            locale=locale,
            status=Article.Status.PUBLISHED,
        )
        anchor = heading_anchors([heading])[0]
        citations.append(
            {"article": article.pk, "title": title, "anchor": anchor, "url": f"/kb/{slug}/#{anchor}"}
        )
    return citations


def absolute(platform: Platform, citation: dict[str, Any]) -> str:
    """The link the widget must show: the citation's URL on the platform's origin, as a browser writes it."""
    path, anchor = citation["url"].split("#", 1)
    return f"{platform.url}{path}#{quote(anchor)}"


def open_chat(browser: Browser, platform: Platform, *, locale: str, viewport: ViewportSize) -> Page:
    phone = viewport is PHONE
    context = browser.new_context(
        viewport=viewport, locale=BROWSER_LOCALE[locale], is_mobile=phone, has_touch=phone
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


def rewrite_reply_done(page: Page, patch: Callable[[dict[str, Any]], None]) -> None:
    """Route the page's websocket through the test: each reply.done's message is changed by `patch`."""

    def route(socket: WebSocketRoute) -> None:
        server = socket.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if isinstance(message, str):
                frame = json.loads(message)
                if frame.get("type") == "reply.done" and isinstance(frame.get("message"), dict):
                    patch(frame["message"])
                    message = json.dumps(frame)
            socket.send(message)

        server.on_message(to_page)

    page.route_web_socket(re.compile(r"/ws/conversations/"), route)


def start(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.url}/chat/")
    expect(page.get_by_test_id("composer-input")).to_be_visible()


def send(page: Page, text: str) -> None:
    page.get_by_test_id("composer-input").fill(text)
    page.get_by_test_id("composer-input").press("Enter")


def last_reply(page: Page) -> Any:
    reply = page.locator('[data-testid="message"][data-role="assistant"][data-status="complete"]').last
    expect(reply).to_be_visible(timeout=45_000)
    return reply


def assert_sources_shown(
    reply: Any, platform: Platform, locale: str, citations: list[dict[str, Any]]
) -> None:
    """The Sources row lists every citation as a link to the platform's article, and the markers link too."""
    row = reply.get_by_test_id("citations")
    expect(row.locator(".cs-citations__title")).to_have_text(SOURCES_TITLE[locale])
    # A list the screen reader announces by the row's title, one item per source.
    expect(row.get_by_role("list", name=SOURCES_TITLE[locale])).to_be_visible()
    expect(row.get_by_role("listitem")).to_have_count(len(citations))
    links = row.get_by_test_id("citation-link")
    expect(links).to_have_count(len(citations))
    expected = [absolute(platform, citation) for citation in citations]
    assert links.evaluate_all("links => links.map(link => link.getAttribute('href'))") == expected
    expect(links.locator(".cs-citation__title")).to_have_text([citation["title"] for citation in citations])
    for index in range(len(citations)):
        expect(links.nth(index)).to_have_attribute("target", "_blank")
        expect(links.nth(index)).to_have_attribute("rel", "noopener")

    text = reply.get_by_test_id("message-text")
    markers = text.get_by_test_id("citation-marker")
    expect(markers).to_have_text([str(number) for number in range(1, len(citations) + 1)])
    assert markers.evaluate_all("links => links.map(link => link.getAttribute('href'))") == expected
    assert markers.evaluate_all("links => links.map(link => link.parentElement.tagName)") == ["SUP"] * len(
        citations
    )
    for index in range(len(citations)):
        expect(markers.nth(index)).to_have_attribute("rel", "noopener")
    # The markers became the links: no [1] or 【1】 is left in the text, and its Markdown still renders.
    assert not re.search(r"\[\d\]|【\d】", text.inner_text())
    expect(text.locator("strong")).to_have_count(1)


@pytest.mark.parametrize("locale", ["en", "zh-Hans"])
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_it_shows_the_sources_of_a_reply_live_and_after_a_reload(
    browser: Browser, platform: Platform, screenshots: Path, locale: str, viewport: ViewportSize
) -> None:
    citations = published_articles(locale)
    text = REPLIES[locale]
    platform.inference.enqueue(Script(tokens=re.findall(r".{1,8}", text, re.DOTALL)))
    page = open_chat(browser, platform, locale=locale, viewport=viewport)
    rewrite_reply_done(page, lambda message: message.update(citations=citations, source="model"))
    start(page, platform)

    send(page, QUESTIONS[locale])

    reply = last_reply(page)
    assert_sources_shown(reply, platform, locale, citations)
    expect(reply.get_by_test_id("source-label")).to_have_count(0)
    # The links are reached with the keyboard, in reading order: the markers, then the Sources row.
    focusable = reply.locator("a[href]")
    assert focusable.evaluate_all("links => links.map(link => link.tabIndex)") == [0] * (2 * len(citations))
    # On a phone the row wraps inside the screen: nothing scrolls sideways.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"]
    row = reply.get_by_test_id("citations").bounding_box()
    assert row is not None
    assert row["x"] + row["width"] <= viewport["width"]
    name = f"citations-{'phone' if viewport is PHONE else 'desktop'}-{locale}"
    page.screenshot(path=str(screenshots / f"{name}.png"))

    # A source opens in a new tab, at the platform's article.
    with page.context.expect_page() as opened:
        reply.get_by_test_id("citation-link").first.click()
    article_page = opened.value
    article_page.wait_for_load_state()
    assert article_page.url == absolute(platform, citations[0])
    # rel=noopener: the article's page cannot reach back into the widget.
    assert article_page.evaluate("window.opener") is None

    # The reply as the grounding saves it; the history after a reload shows the same.
    saved = Message.objects.get(role=Message.Role.ASSISTANT)
    assert saved.text == text
    Message.objects.filter(pk=saved.pk).update(citations=citations, source=Message.Source.MODEL)
    page.reload()
    assert_sources_shown(last_reply(page), platform, locale, citations)
    assert page.errors == []  # type: ignore[attr-defined]


def test_it_opens_the_cited_article_page(browser: Browser, platform: Platform) -> None:
    citations = published_articles("en")
    platform.inference.enqueue(Script(tokens=[REPLIES["en"]]))
    page = open_chat(browser, platform, locale="en", viewport=DESKTOP)
    rewrite_reply_done(page, lambda message: message.update(citations=citations, source="model"))
    start(page, platform)
    send(page, QUESTIONS["en"])

    with page.context.expect_page() as opened:
        last_reply(page).get_by_test_id("citation-marker").nth(1).click()

    article_page = opened.value
    article_page.wait_for_load_state()
    assert article_page.url == absolute(platform, citations[1])
    assert page.request.get(article_page.url).status == 200
    expect(article_page.locator("h1")).to_have_text("When will I get my refund?")
    # The anchor names the cited section's heading on the page.
    expect(article_page.locator(f"[id='{citations[1]['anchor']}']")).to_have_text("Card refunds")


@pytest.mark.parametrize("locale", ["en", "zh-Hans"])
def test_it_labels_an_faq_answer_live_and_after_a_reload(
    browser: Browser, platform: Platform, screenshots: Path, locale: str
) -> None:
    answer = "Returns are free within 30 days." if locale == "en" else "30 天内退货免费。"
    platform.inference.enqueue(Script(tokens=[answer]))
    page = open_chat(browser, platform, locale=locale, viewport=PHONE)
    rewrite_reply_done(page, lambda message: message.update(source="faq", citations=[]))
    start(page, platform)

    send(page, QUESTIONS[locale])

    reply = last_reply(page)
    expect(reply.get_by_test_id("source-label")).to_have_text(FAQ_LABEL[locale])
    expect(reply.get_by_test_id("message-text")).to_have_text(answer)
    expect(reply.get_by_test_id("citations")).to_have_count(0)
    page.screenshot(path=str(screenshots / f"faq-answer-phone-{locale}.png"))

    Message.objects.filter(role=Message.Role.ASSISTANT).update(source=Message.Source.FAQ)
    page.reload()
    expect(last_reply(page).get_by_test_id("source-label")).to_have_text(FAQ_LABEL[locale])
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("locale", ["en", "zh-Hans"])
def test_it_shows_a_quoted_passage_with_its_source(
    browser: Browser, platform: Platform, screenshots: Path, locale: str
) -> None:
    citation = published_articles(locale)[0]
    passage = ARTICLES[locale][0][3]
    platform.inference.enqueue(Script(tokens=[passage]))
    page = open_chat(browser, platform, locale=locale, viewport=DESKTOP)
    rewrite_reply_done(page, lambda message: message.update(source="knowledge", citations=[citation]))
    start(page, platform)

    send(page, QUESTIONS[locale])

    reply = last_reply(page)
    expect(reply.get_by_test_id("source-label")).to_have_text(KNOWLEDGE_LABEL[locale])
    link = reply.get_by_test_id("citations").get_by_test_id("citation-link")
    expect(link).to_have_attribute("href", absolute(platform, citation))
    expect(link).to_contain_text(citation["title"])
    page.screenshot(path=str(screenshots / f"knowledge-passage-desktop-{locale}.png"))

    Message.objects.filter(role=Message.Role.ASSISTANT).update(
        source=Message.Source.KNOWLEDGE, citations=[citation]
    )
    page.reload()
    reloaded = last_reply(page)
    expect(reloaded.get_by_test_id("source-label")).to_have_text(KNOWLEDGE_LABEL[locale])
    expect(reloaded.get_by_test_id("citation-link")).to_have_attribute("href", absolute(platform, citation))


def test_it_labels_no_source_when_nothing_was_found(browser: Browser, platform: Platform) -> None:
    sentence = "Sorry, I could not find anything about this in our help center."
    platform.inference.enqueue(Script(tokens=[sentence]))
    page = open_chat(browser, platform, locale="en", viewport=DESKTOP)
    # Quote mode's "nothing found" sentence: saved as source "knowledge", citing nothing.
    rewrite_reply_done(page, lambda message: message.update(source="knowledge", citations=[]))
    start(page, platform)

    send(page, "Do you sell cars?")

    reply = last_reply(page)
    expect(reply.get_by_test_id("message-text")).to_have_text(sentence)
    expect(reply.get_by_test_id("source-label")).to_have_count(0)
    expect(reply.get_by_test_id("citations")).to_have_count(0)


def test_it_keeps_hostile_citations_inert(browser: Browser, platform: Platform) -> None:
    hostile = [
        {"article": 1, "title": "<img src=x onerror=alert(1)>", "anchor": "", "url": "javascript:alert(2)"},
        {"article": 2, "title": "Fine", "anchor": "a", "url": "/kb/fine/#a"},
    ]
    text = "First [1], second [2], and a `[2]` in code."
    platform.inference.enqueue(Script(tokens=[text]))
    page = open_chat(browser, platform, locale="en", viewport=DESKTOP)
    dialogs: list[str] = []

    def record_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record_dialog)
    rewrite_reply_done(page, lambda message: message.update(citations=hostile))
    start(page, platform)

    send(page, "Tell me")

    reply = last_reply(page)
    row = reply.get_by_test_id("citations")
    # The javascript: link is shown as its title, as text, and links nowhere.
    expect(row.get_by_test_id("citation")).to_have_text(
        ["1<img src=x onerror=alert(1)>", "2Fine (opens in a new tab)"]
    )
    expect(row.get_by_test_id("citation-link")).to_have_count(1)
    expect(row.get_by_test_id("citation-link")).to_have_attribute("href", f"{platform.url}/kb/fine/#a")
    assert reply.locator("img").count() == 0
    message_text = reply.get_by_test_id("message-text")
    # Only [2] links: [1] has no safe link, and the one in code stays code.
    expect(message_text.get_by_test_id("citation-marker")).to_have_text(["2"])
    expect(message_text.locator("code")).to_have_text("[2]")
    expect(message_text).to_contain_text("First [1], second")
    page.evaluate("() => alert('sentinel')")
    assert dialogs == ["sentinel"]


# The prompt numbered the sources 1 to 3; the reply cited 3 first, then 1, and named a [7] that is none.
CITED_OUT_OF_ORDER = "Pack it well [3]. Then ship it back [1]. Order [7] is yours."


@pytest.mark.parametrize(
    ("text", "with_markers", "expected", "left_as_text"),
    [
        # The citations say which markers name them: each links to its own, [7] stays text.
        (CITED_OUT_OF_ORDER, True, [("1", 0), ("2", 1)], "Order [7] is yours."),
        # Without that, as the server saved them: [7] named no source, [3] was cited first.
        (CITED_OUT_OF_ORDER, False, [("1", 0), ("2", 1)], "Order [7] is yours."),
        # One marker for two citations cannot be matched up: none links, rather than one wrongly.
        ("Pack it well [3]. That is all.", False, [], "Pack it well [3]."),
    ],
    ids=["markers-given", "markers-inferred", "unmatched"],
)
def test_it_links_each_marker_to_the_source_it_names(
    browser: Browser,
    platform: Platform,
    text: str,
    with_markers: bool,
    expected: list[tuple[str, int]],
    left_as_text: str,
) -> None:
    citations = published_articles("en")
    if with_markers:
        citations = [{**citations[0], "markers": [3]}, {**citations[1], "markers": [1]}]
    platform.inference.enqueue(Script(tokens=[text]))
    page = open_chat(browser, platform, locale="en", viewport=DESKTOP)
    rewrite_reply_done(page, lambda message: message.update(citations=citations))
    start(page, platform)

    send(page, QUESTIONS["en"])

    reply = last_reply(page)
    markers = reply.get_by_test_id("message-text").get_by_test_id("citation-marker")
    expect(markers).to_have_text([text for text, _ in expected])
    hrefs = markers.evaluate_all("links => links.map(link => link.getAttribute('href'))")
    assert hrefs == [absolute(platform, citations[index]) for _, index in expected]
    expect(reply.get_by_test_id("message-text")).to_contain_text(left_as_text)
    expect(reply.get_by_test_id("citation-link")).to_have_count(2)


def test_it_shows_sources_and_the_unanswered_mark_in_the_admin_transcript(
    browser: Browser, platform: Platform, screenshots: Path
) -> None:
    citations = published_articles("en")
    platform.inference.enqueue(
        Script(tokens=[REPLIES["en"]]),
        Script(tokens=["I don't have that information. Shall I get a person?"]),
    )
    page = open_chat(browser, platform, locale="en", viewport=DESKTOP)
    start(page, platform)
    send(page, QUESTIONS["en"])
    last_reply(page)
    send(page, "Do you sell cars?")
    expect(
        page.locator('[data-testid="message"][data-role="assistant"][data-status="complete"]')
    ).to_have_count(2, timeout=45_000)
    # As the grounding saves them: the first cited two articles, the second found nothing.
    first, second = Message.objects.filter(role=Message.Role.ASSISTANT).order_by("created_at")
    Message.objects.filter(pk=first.pk).update(
        citations=citations, source=Message.Source.MODEL, is_unanswered=False
    )
    Message.objects.filter(pk=second.pk).update(citations=[], source=Message.Source.MODEL, is_unanswered=True)

    get_user_model().objects.create_superuser("supervisor", "supervisor@example.com", "a-long-password-1")
    admin = browser.new_page(viewport=DESKTOP)
    admin.goto(f"{platform.url}/admin/login/")
    admin.fill("#id_username", "supervisor")
    admin.fill("#id_password", "a-long-password-1")
    admin.click("input[type=submit]")
    admin.goto(f"{platform.url}/admin/conversations/conversation/?unanswered=yes")
    expect(admin.locator("#result_list tbody tr")).to_have_count(1)
    admin.goto(f"{platform.url}/admin/conversations/conversation/{first.conversation_id}/change/")
    sources = admin.locator(".transcript-citations a[target=_blank]")
    expect(sources).to_have_text([citation["title"] for citation in citations])
    assert sources.evaluate_all("links => links.map(link => link.href)") == [
        absolute(platform, citation) for citation in citations
    ]
    expect(admin.locator(".transcript-unanswered")).to_have_count(1)
    admin.locator(".field-transcript").screenshot(path=str(screenshots / "admin-transcript-citations.png"))


def test_it_links_to_the_platform_from_a_page_of_another_origin(
    browser: Browser, platform: Platform, host_page_server: tuple[str, Path], screenshots: Path
) -> None:
    host_url, host_root = host_page_server
    (host_root / "index.html").write_text(
        "<!doctype html><html><head><title>Acme Store</title></head><body><h1>Acme Store</h1>"
        f'<script src="{platform.url}/static/widget/embed.js" data-lang="zh-Hans"></script></body></html>'
    )
    citations = published_articles("zh-Hans")
    platform.inference.enqueue(Script(tokens=[REPLIES["zh-Hans"]]))
    page = browser.new_page(viewport=DESKTOP)
    # The frame's socket is the page's too: Playwright routes it like any other.
    rewrite_reply_done(page, lambda message: message.update(citations=citations, source="model"))
    page.goto(f"{host_url}/index.html")
    page.evaluate("""() => {
        window.repliesDone = [];
        window.addEventListener('cswidget:reply.done', event => window.repliesDone.push(event.detail));
    }""")
    page.get_by_test_id("launcher").click()
    frame = page.frame_locator('[data-testid="widget-frame"]')
    expect(frame.get_by_test_id("composer-input")).to_be_visible(timeout=15_000)
    frame.get_by_test_id("composer-input").fill(QUESTIONS["zh-Hans"])
    # Keys typed into a cross-origin iframe are sometimes lost by Playwright: click Send instead.
    frame.get_by_test_id("send-button").click()

    reply = frame.locator('[data-testid="message"][data-role="assistant"][data-status="complete"]').last
    links = reply.get_by_test_id("citation-link")
    expect(links).to_have_count(2, timeout=45_000)
    # On the platform's origin, not the host page's.
    expected = [absolute(platform, citation) for citation in citations]
    assert links.evaluate_all("links => links.map(link => link.href)") == expected
    assert not host_url.startswith(platform.url)
    markers = reply.get_by_test_id("citation-marker")
    assert markers.evaluate_all("links => links.map(link => link.href)") == expected
    page.screenshot(path=str(screenshots / "citations-embedded-zh-Hans.png"))
    # The host page hears of the reply with the same absolute links.
    page.wait_for_function("() => window.repliesDone.length === 1")
    heard = page.evaluate("() => window.repliesDone[0].citations.map(citation => citation.url)")
    assert heard == expected
