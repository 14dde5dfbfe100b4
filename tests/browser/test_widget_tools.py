"""The business tools a reply calls, as the customer sees them in headless Chromium: a status line per
call with a spinner, then a done mark or a note that it did not work, and no spinner left once the
reply is over or the socket is back; in English and in Chinese. The tool frames are sent into the
conversation's group through the tests' Redis, which daphne's channel layer shares, as
inference.generation sends them; the reply itself is the scripted model's, held at a gate meanwhile."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from playwright.sync_api import Browser, Dialog, Page, ViewportSize, WebSocketRoute, expect

from conversations import events
from tests.browser.conftest import SCREENSHOTS, Platform
from tests.scripted_inference import Script

pytestmark = pytest.mark.browser

PHONE_WIDTH = ViewportSize(width=420, height=760)

# What the customer reads: the summaries as the server words them, the notes as chat/messages.js does.
ENGLISH: dict[str, Any] = {
    "locale": "en-US",
    "question": "Where is my order 1234?",
    "order": "Looking up: order status (1234)…",
    "order_done": "Looking up: order status (1234)",
    "invoice": "Looking up: invoices for order 1234…",
    "invoice_done": "Looking up: invoices for order 1234",
    "shipment": "Looking up: shipment tracking (SF1234567890)…",
    "error": "That lookup didn't work.",
    "timeout": "That lookup took too long.",
    "answer": ["", "Your order 1234 ", "left our warehouse ", "yesterday."],
}
CHINESE: dict[str, Any] = {
    "locale": "zh-CN",
    "question": "我的订单 1234 到哪了？",
    "order": "正在查询：订单状态（1234）…",
    "order_done": "正在查询：订单状态（1234）",
    "invoice": "正在查询：订单 1234 的发票…",
    "invoice_done": "正在查询：订单 1234 的发票",
    "shipment": "正在查询：物流轨迹（SF1234567890）…",
    "error": "查询未成功。",
    "timeout": "查询超时。",
    "answer": ["", "您的订单 1234 ", "已于昨天", "从仓库发出。"],
}


def open_widget(browser: Browser, platform: Platform, locale: str) -> Page:
    page = browser.new_context(viewport=PHONE_WIDTH, locale=locale).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


def start(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.url}/chat/")
    expect(page.get_by_test_id("composer-input")).to_be_visible()


def ask(page: Page, text: str) -> int:
    """Send `text` and return the id of the reply once the widget has it streaming."""
    page.get_by_test_id("composer-input").fill(text)
    page.get_by_test_id("composer-input").press("Enter")
    streaming = """() => window.__csWidget.state.entries.find(
        (entry) => entry.role === "assistant" && entry.status === "streaming" && entry.replyId != null)"""
    page.wait_for_function(f"() => Boolean(({streaming})())", timeout=15_000)
    reply_id: int = page.evaluate(f"() => ({streaming})().replyId")
    return reply_id


def send_to_conversation(page: Page, event: dict[str, Any]) -> None:
    """Send `event` to the page's conversation group, on a thread of its own: Playwright's sync API
    keeps an event loop running in the test's thread, where async_to_sync cannot run."""
    group = events.conversation_group(page.evaluate("window.__csWidget.state.conversation.id"))
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(async_to_sync(get_channel_layer().group_send), group, event).result()


def reply(page: Page) -> Any:
    return page.locator('[data-testid="message"][data-role="assistant"]').last


def tool_line(page: Page, call_id: str) -> Any:
    return reply(page).locator(f'[data-testid="tool-call"][data-call-id="{call_id}"]')


def screenshot(page: Page, name: str, locale: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"widget-tools-{name}-{locale}.png"))


@pytest.mark.parametrize("words", [ENGLISH, CHINESE], ids=["en", "zh-Hans"])
def test_it_shows_each_tool_call_running_then_done_or_failed_and_no_spinner_after_the_reply(
    browser: Browser, platform: Platform, words: dict[str, Any]
) -> None:
    gate = threading.Event()
    platform.inference.enqueue(Script(tokens=words["answer"], gate=gate, token_delay=0.05))
    page = open_widget(browser, platform, words["locale"])
    try:
        start(page, platform)
        reply_id = ask(page, words["question"])
        expect(reply(page).get_by_test_id("thinking")).to_be_visible()

        send_to_conversation(
            page,
            events.tool_started_event(
                reply_id=reply_id, call_id="call-order", name="order_status", summary=words["order"]
            ),
        )

        order = tool_line(page, "call-order")
        expect(order).to_have_attribute("data-state", "running")
        expect(order.get_by_test_id("tool-call-text")).to_have_text(words["order"])
        expect(order.locator(".cs-spinner")).to_be_visible()
        # The spinner says the assistant is at work: the thinking dots give way to it.
        expect(reply(page).get_by_test_id("thinking")).to_have_count(0)
        calls = reply(page).get_by_test_id("tool-calls")
        expect(calls).to_have_attribute("role", "status")
        expect(calls).to_have_attribute("aria-live", "polite")
        screenshot(page, "started", words["locale"])

        send_to_conversation(
            page, events.tool_finished_event(reply_id=reply_id, call_id="call-order", outcome="ok")
        )

        expect(order).to_have_attribute("data-state", "ok")
        expect(order.get_by_test_id("tool-call-text")).to_have_text(words["order_done"])
        expect(order.locator(".cs-spinner")).to_have_count(0)
        expect(order.get_by_test_id("tool-call-note")).to_have_count(0)
        # Nothing runs now and no text has come: the assistant is thinking again.
        expect(reply(page).get_by_test_id("thinking")).to_be_visible()
        screenshot(page, "finished-ok", words["locale"])

        send_to_conversation(
            page,
            events.tool_started_event(
                reply_id=reply_id, call_id="call-invoice", name="invoices", summary=words["invoice"]
            ),
        )
        invoice = tool_line(page, "call-invoice")
        expect(invoice).to_have_attribute("data-state", "running")
        send_to_conversation(
            page, events.tool_finished_event(reply_id=reply_id, call_id="call-invoice", outcome="error")
        )

        expect(invoice).to_have_attribute("data-state", "failed")
        expect(invoice.get_by_test_id("tool-call-text")).to_have_text(words["invoice_done"])
        expect(invoice.get_by_test_id("tool-call-note")).to_have_text(words["error"])
        expect(reply(page).get_by_test_id("tool-call")).to_have_count(2)
        expect(reply(page).locator(".cs-spinner")).to_have_count(0)
        screenshot(page, "finished-error", words["locale"])

        # A call the server never reports finished: the reply's end must stop its spinner all the same.
        send_to_conversation(
            page,
            events.tool_started_event(
                reply_id=reply_id, call_id="call-shipment", name="shipment", summary=words["shipment"]
            ),
        )
        expect(tool_line(page, "call-shipment").locator(".cs-spinner")).to_be_visible()
        gate.set()

        expect(reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
        expect(reply(page).get_by_test_id("message-text")).to_have_text("".join(words["answer"]))
        expect(reply(page).locator(".cs-spinner")).to_have_count(0)
        expect(tool_line(page, "call-shipment")).to_have_count(0)
        expect(reply(page).get_by_test_id("tool-call-text")).to_have_text(
            [words["order_done"], words["invoice_done"]]
        )
        expect(reply(page).get_by_test_id("tool-call-note")).to_have_text([words["error"]])
        screenshot(page, "reply-done", words["locale"])
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        gate.set()


def test_it_shows_a_summary_as_text_and_stops_a_spinner_when_the_socket_comes_back(
    browser: Browser, platform: Platform
) -> None:
    gate = threading.Event()
    platform.inference.enqueue(Script(tokens=ENGLISH["answer"], gate=gate))
    page = open_widget(browser, platform, "en-US")
    sockets: list[WebSocketRoute] = []

    def route(socket: WebSocketRoute) -> None:
        sockets.append(socket)
        socket.connect_to_server()

    page.route_web_socket("**/ws/conversations/**", route)
    dialogs: list[str] = []

    def record_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record_dialog)
    try:
        start(page, platform)
        reply_id = ask(page, ENGLISH["question"])
        hostile = 'Looking up: <img src=x onerror=alert(1)> "order" 1234…'
        send_to_conversation(
            page,
            events.tool_started_event(
                reply_id=reply_id, call_id="call-a", name="order_status", summary=hostile
            ),
        )
        send_to_conversation(
            page,
            events.tool_started_event(
                reply_id=reply_id, call_id="call-b", name="shipment", summary=ENGLISH["shipment"]
            ),
        )
        send_to_conversation(
            page, events.tool_finished_event(reply_id=reply_id, call_id="call-b", outcome="timeout")
        )
        expect(tool_line(page, "call-a").get_by_test_id("tool-call-text")).to_have_text(hostile)
        expect(reply(page).get_by_test_id("tool-calls").locator("img")).to_have_count(0)
        expect(tool_line(page, "call-b").get_by_test_id("tool-call-note")).to_have_text(ENGLISH["timeout"])
        expect(tool_line(page, "call-a").locator(".cs-spinner")).to_be_visible()
        connections = len(sockets)

        # The socket drops while call-a runs; its tool.finished may come while none is there to hear it.
        sockets[-1].close(code=4000)

        deadline = time.monotonic() + 15
        while len(sockets) == connections:
            assert time.monotonic() < deadline, "the widget did not reconnect"
            page.wait_for_timeout(100)
        page.wait_for_function("() => window.__csWidget.connection.ready", timeout=15_000)
        expect(reply(page)).to_have_attribute("data-status", "streaming")
        expect(tool_line(page, "call-a")).to_have_count(0)
        expect(reply(page).locator(".cs-spinner")).to_have_count(0)
        # What had finished stays; the reply shows it is still thinking.
        expect(tool_line(page, "call-b").get_by_test_id("tool-call-note")).to_have_text(ENGLISH["timeout"])
        expect(reply(page).get_by_test_id("thinking")).to_be_visible()
        # The end of a call the page no longer shows draws nothing.
        send_to_conversation(
            page, events.tool_finished_event(reply_id=reply_id, call_id="call-a", outcome="ok")
        )
        gate.set()

        expect(reply(page)).to_have_attribute("data-status", "complete", timeout=15_000)
        expect(reply(page).get_by_test_id("tool-call")).to_have_count(1)
        expect(reply(page).locator(".cs-spinner")).to_have_count(0)
        assert dialogs == []
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        gate.set()
