"""The agent console in headless Chromium: the queue live, claim, reply, notes, resolve, two agents,
a customer and an agent in two browsers at once, Chinese, and the keyboard alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils import timezone
from playwright.sync_api import Browser, Page, ViewportSize, expect

from agents.models import CannedReply
from conversations import services
from conversations.models import Attachment, Conversation, Feedback, Message, Ticket
from tests import factories
from tests.browser.conftest import SCREENSHOTS, Platform
from tests.factories import attachment_for
from tests.scripted_inference import Script

pytestmark = pytest.mark.browser

T = TypeVar("T")

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

DESKTOP = ViewportSize(width=1280, height=800)
PASSWORD = "a-long-test-password"


def make_agent(username: str, first_name: str, last_name: str, group: str = "Agent") -> User:
    user = User.objects.create_user(
        username=username, password=PASSWORD, first_name=first_name, last_name=last_name
    )
    user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def in_a_thread(function: Callable[[], T]) -> T:
    """Run `function` on a thread of its own: Playwright's sync API keeps an event loop running in
    the test's thread, where the events a service sends on commit (async_to_sync) cannot be sent."""

    def run() -> T:
        try:
            return function()
        finally:
            # The thread's own connection, closed so that the test database can be dropped.
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(run).result()


def handed_off(
    text: str,
    *,
    reason: str = "Wants a person",
    trigger: str = Ticket.Trigger.CUSTOMER_PHRASE,
    locale: str = "en",
    minutes_ago: int = 0,
    before: Callable[[Conversation], None] | None = None,
) -> Conversation:
    """A customer's conversation handed to a person (saved in this process: the console hears it
    through Redis, as it hears a widget's); `before` writes what was said first."""

    def hand_off() -> Conversation:
        conversation = ConversationFactory(locale=locale)
        if before is not None:
            before(conversation)
        MessageFactory(conversation=conversation, text=text)
        ticket = services.handoff_request(conversation=conversation, reason=reason, trigger=trigger)
        if minutes_ago:
            Ticket.objects.filter(pk=ticket.pk).update(
                created_at=timezone.now() - timedelta(minutes=minutes_ago)
            )
        return conversation

    return in_a_thread(hand_off)


def open_console(browser: Browser, platform: Platform, username: str, *, locale: str = "en-US") -> Page:
    """A browser of its own, signed in through the console's form."""
    context = browser.new_context(viewport=DESKTOP, locale=locale)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{platform.url}/agent/")
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=15_000)
    return page


def queue_item(page: Page, conversation: Conversation) -> Any:
    return page.locator(f'[data-testid="queue-item"][data-conversation="{conversation.pk}"]')


def messages(page: Page, role: str) -> Any:
    return page.locator(f'[data-testid="message"][data-role="{role}"]')


def send(page: Page, text: str) -> None:
    page.get_by_test_id("composer-input").fill(text)
    page.get_by_test_id("composer-input").press("Enter")


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def save_screenshot(page: Page, screenshots: Path, name: str) -> None:
    """Into the test run's screenshots (`make screenshots` copies the README's into docs/)."""
    page.screenshot(path=str(screenshots / name))


def earlier_turns(conversation: Conversation) -> None:
    """A photo from the customer, and the assistant's cited answer the customer rated down."""
    photo = MessageFactory(conversation=conversation, text="Here is the tracking page.")
    attachment = attachment_for(conversation, width=320, height=200, colour=(40, 120, 200))
    Attachment.objects.filter(pk=attachment.pk).update(message=photo)
    reply = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=Message.Source.MODEL,
        text="Parcels are usually delivered within **3 days** [1].",
        citations=[{"article": 1, "title": "Delivery times", "anchor": "", "url": "/kb/delivery-times"}],
    )
    Feedback.objects.create(message=reply, rating=Feedback.Rating.DOWN, comment="Not helpful")


def test_it_lists_a_handoff_live_then_claims_replies_notes_and_resolves(
    browser: Browser, platform: Platform, screenshots: Path, settings: Any
) -> None:
    # Where the platform's process reads uploads from.
    settings.MEDIA_ROOT = platform.env["MEDIA_ROOT"]
    lin = make_agent("lin", "Lin", "Wei")
    page = open_console(browser, platform, "lin")
    expect(page.get_by_test_id("queue-empty")).to_be_visible()
    expect(page.get_by_test_id("queue-count-waiting")).to_have_text("0")
    expect(page).to_have_title("Agent console")

    conversation = handed_off("My parcel never arrived.", reason="Asked for a person", before=earlier_turns)

    # No reload: queue.updated brings it.
    item = queue_item(page, conversation)
    expect(item).to_be_visible(timeout=10_000)
    expect(item.get_by_test_id("queue-item-trigger")).to_have_text("Asked for a person")
    expect(item.get_by_test_id("queue-item-locale")).to_have_text("EN")
    expect(item.get_by_test_id("queue-item-last")).to_have_text("My parcel never arrived.")
    expect(page.get_by_test_id("queue-count-waiting")).to_have_text("1")
    expect(page).to_have_title("(1) Agent console")
    expect(page.get_by_test_id("live-region")).to_contain_text(
        "New conversation waiting: My parcel never arrived."
    )
    # The waited time ticks.
    waited = item.get_by_test_id("queue-item-waited")
    first = waited.inner_text()
    expect(waited).not_to_have_text(first, timeout=5_000)

    item.click()

    expect(messages(page, "customer").get_by_test_id("message-text")).to_have_text(
        ["Here is the tracking page.", "My parcel never arrived."]
    )
    image = page.get_by_test_id("message-image")
    expect(image).to_have_attribute("alt", "Image 1 from the customer")
    expect(image).to_have_js_property("naturalWidth", 320, timeout=10_000)
    assistant = messages(page, "assistant")
    expect(assistant.get_by_test_id("message-text").locator("strong")).to_have_text("3 days")
    expect(assistant.get_by_test_id("citation-marker")).to_have_text("1")
    expect(assistant.get_by_test_id("message-citations").get_by_role("link")).to_have_text("Delivery times")
    expect(assistant.get_by_test_id("message-feedback")).to_have_text(
        "Customer rated this reply unhelpful “Not helpful”"
    )
    expect(page.get_by_test_id("ticket-trigger")).to_have_text("Asked for a person")
    expect(page.get_by_test_id("ticket-reason")).to_have_text("Asked for a person")
    expect(page.get_by_test_id("ticket-assignee")).to_have_text("Nobody yet")
    expect(page).to_have_title("Agent console")
    expect(page.get_by_test_id("send-button")).to_be_disabled()
    expect(page.get_by_test_id("composer-hint")).to_contain_text("Claim this conversation to reply")

    page.get_by_test_id("claim-button").click()

    expect(page.get_by_test_id("ticket-assignee")).to_have_text("You (Lin Wei)")
    expect(page.get_by_test_id("ticket-status")).to_have_text("Claimed")
    expect(page.get_by_test_id("claim-button")).to_have_count(0)
    expect(page.get_by_test_id("queue-count-waiting")).to_have_text("0")
    expect(page.get_by_test_id("queue-count-mine")).to_have_text("1")
    ticket = Ticket.objects.get(conversation=conversation)
    assert (ticket.status, ticket.assignee_id) == (Ticket.Status.ASSIGNED, lin.pk)

    send(page, "Hello, I'm Lin. Let me look at your order.")

    agent = messages(page, "agent")
    expect(agent.get_by_test_id("message-text")).to_have_text(["Hello, I'm Lin. Let me look at your order."])
    expect(agent).to_have_attribute("data-internal", "false")
    expect(page.get_by_test_id("composer-input")).to_have_value("")
    expect(page.get_by_test_id("ticket-first-response")).to_be_visible()

    page.get_by_test_id("mode-note").check()
    send(page, "Courier says it was left at the door.")

    note = page.locator('[data-testid="message"][data-internal="true"]')
    expect(note.get_by_test_id("message-text")).to_have_text(["Courier says it was left at the door."])
    expect(note.get_by_test_id("note-label")).to_have_text("Internal note")
    saved = list(
        Message.objects.filter(conversation=conversation, role=Message.Role.AGENT)
        .order_by("id")
        .values_list("text", "internal", "author_id")
    )
    assert saved == [
        ("Hello, I'm Lin. Let me look at your order.", False, lin.pk),
        ("Courier says it was left at the door.", True, lin.pk),
    ]
    # Tall enough for the whole transcript, once the claim's notice has gone.
    page.set_viewport_size(ViewportSize(width=1280, height=960))
    expect(page.get_by_test_id("notice")).to_be_hidden(timeout=10_000)
    save_screenshot(page, screenshots, "console-conversation.png")
    page.set_viewport_size(DESKTOP)

    page.get_by_test_id("resolve-button").click()

    expect(page.get_by_test_id("notice")).to_have_text(
        "Resolved. The customer was asked to rate the conversation."
    )
    expect(page.get_by_test_id("ticket-status")).to_have_text("Resolved")
    expect(page.get_by_test_id("ticket-resolution")).to_be_visible()
    expect(page.get_by_test_id("queue-count-mine")).to_have_text("0")
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED
    assert ticket.resolution_seconds is not None
    assert page.errors == []  # type: ignore[attr-defined]


def test_it_tells_the_second_agent_who_has_the_conversation(browser: Browser, platform: Platform) -> None:
    make_agent("lin", "Lin", "Wei")
    sam = make_agent("sam", "Sam", "Taylor")
    conversation = handed_off("Where is my refund?")
    lin_page = open_console(browser, platform, "lin")
    sam_page = open_console(browser, platform, "sam")
    for page in (lin_page, sam_page):
        queue_item(page, conversation).click()
        expect(page.get_by_test_id("claim-button")).to_be_visible()

    sam_page.get_by_test_id("claim-button").click()
    expect(sam_page.get_by_test_id("ticket-assignee")).to_have_text("You (Sam Taylor)")
    # Lin's console hears of it live (ticket.updated), and still may try.
    expect(lin_page.get_by_test_id("ticket-assignee")).to_have_text("Sam Taylor")

    lin_page.get_by_test_id("claim-button").click()

    expect(lin_page.get_by_test_id("notice")).to_have_text("Sam Taylor has this conversation")
    expect(lin_page.get_by_test_id("notice")).to_have_attribute("role", "alert")
    expect(lin_page.get_by_test_id("send-button")).to_be_disabled()
    ticket = Ticket.objects.get(conversation=conversation)
    assert ticket.assignee_id == sam.pk

    sam_page.get_by_test_id("handback-button").click()

    expect(sam_page.get_by_test_id("notice")).to_have_text("Handed back: the assistant answers again.")
    expect(lin_page.get_by_test_id("ticket-status")).to_have_text("Resolved")
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED
    assert Conversation.objects.get(pk=conversation.pk).status == Conversation.Status.OPEN
    assert lin_page.errors == []  # type: ignore[attr-defined]
    assert sam_page.errors == []  # type: ignore[attr-defined]


def test_it_shows_the_console_in_chinese_and_switches_to_english(
    browser: Browser, platform: Platform, screenshots: Path
) -> None:
    make_agent("lin", "Lin", "Wei")
    first = handed_off(
        "我的快递三天没更新了，转人工", reason="客户要求人工", locale="zh-Hans", minutes_ago=12
    )
    handed_off(
        "发票开错了",
        reason="两次没有找到答案",
        trigger=Ticket.Trigger.KNOWLEDGE_MISS,
        locale="zh-Hans",
        minutes_ago=3,
    )
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{platform.url}/agent/")
    expect(page.get_by_role("heading", name="登录客服工作台")).to_be_visible()
    page.get_by_label("用户名").fill("lin")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()

    expect(page.get_by_test_id("queue-tab-waiting")).to_contain_text("等待中")
    expect(page.get_by_test_id("queue-tab-mine")).to_contain_text("我的")
    expect(page).to_have_title("(2) 客服工作台")
    item = queue_item(page, first)
    expect(item.get_by_test_id("queue-item-trigger")).to_have_text("要求人工服务")
    expect(item.get_by_test_id("queue-item-waited")).to_have_text("12 分钟")
    expect(page.get_by_label("接收新会话")).to_be_checked()
    item.click()
    expect(page.get_by_test_id("claim-button")).to_have_text("认领")
    expect(page.get_by_test_id("composer-hint")).to_have_text(
        "认领此会话后才能回复客户。无需认领也可以添加内部备注。"
    )
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    save_screenshot(page, screenshots, "console-zh-Hans.png")

    page.get_by_test_id("language-switch").select_option("en")

    expect(page.get_by_test_id("queue-tab-waiting")).to_contain_text("Waiting")
    expect(page.get_by_test_id("claim-button")).to_have_text("Claim")
    # The other conversation is still unread.
    expect(page).to_have_title("(1) Agent console")
    page.reload()
    # The choice is kept over the browser's language.
    expect(page.get_by_test_id("queue-tab-waiting")).to_contain_text("Waiting")


def test_it_claims_and_answers_with_the_keyboard_alone(
    browser: Browser, platform: Platform, screenshots: Path
) -> None:
    make_agent("lin", "Lin", "Wei")
    older = handed_off("I was charged twice.", minutes_ago=9)
    newer = handed_off("Can I change my address?", trigger=Ticket.Trigger.CUSTOMER_BUTTON, minutes_ago=2)
    for shortcode, locale, title, text in [
        ("refund", "", "Refunds (any)", "Refund text, any."),
        ("refund", "en", "Refunds", "Refunds take 5–7 days."),
        ("hello", "en", "Greeting", "Hello!"),
    ]:
        CannedReply.objects.create(shortcode=shortcode, locale=locale, title=title, text=text)
    page = open_console(browser, platform, "lin")
    expect(page.get_by_test_id("queue-item")).to_have_count(2)
    save_screenshot(page, screenshots, "console-queue.png")

    # Tab into the list: the oldest first holds the one tab stop.
    for _ in range(15):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.testid") == "queue-item":
            break
    assert page.evaluate("document.activeElement.dataset.conversation") == str(older.pk)
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.dataset.conversation") == str(newer.pk)
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.dataset.conversation") == str(older.pk)
    page.keyboard.press("Enter")
    expect(messages(page, "customer").get_by_test_id("message-text")).to_have_text(["I was charged twice."])

    page.keyboard.press("Alt+c")

    expect(page.get_by_test_id("ticket-assignee")).to_have_text("You (Lin Wei)")
    # Claiming puts the cursor in the composer; / opens the canned replies, in the conversation's
    # language before "any".
    # The assignee can show from the ticket.updated frame before the claim's own response has come
    # back and moved the cursor, so wait for the focus rather than read it once.
    expect(page.locator("#ac-composer-input")).to_be_focused()
    page.keyboard.type("/re")
    options = page.get_by_test_id("canned-option")
    expect(options).to_have_count(1)
    expect(options).to_contain_text("Refunds take 5–7 days.")
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("composer-input")).to_have_value("Refunds take 5–7 days.")
    expect(page.get_by_test_id("canned-list")).to_be_hidden()
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("Anything else?")
    page.keyboard.press("Enter")

    expect(messages(page, "agent").get_by_test_id("message-text")).to_have_text(
        ["Refunds take 5–7 days.\nAnything else?"]
    )
    assert Message.objects.filter(conversation=older, role=Message.Role.AGENT).get().text == (
        "Refunds take 5–7 days.\nAnything else?"
    )
    # Esc closes the list without inserting anything.
    page.keyboard.type("/h")
    expect(page.get_by_test_id("canned-option")).to_have_count(1)
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("canned-list")).to_be_hidden()
    expect(page.get_by_test_id("composer-input")).to_have_value("/h")
    # The focused control is drawn with a visible outline.
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    assert page.errors == []  # type: ignore[attr-defined]


def test_it_offers_no_ai_draft_when_agent_assist_is_switched_off(
    browser: Browser, platform: Platform
) -> None:
    platform.stop()
    platform.env["AGENT_ASSIST_ENABLED"] = "false"
    platform.start()
    make_agent("lin", "Lin", "Wei")
    conversation = handed_off("Hello?")
    page = open_console(browser, platform, "lin")
    queue_item(page, conversation).click()
    page.get_by_test_id("claim-button").click()
    expect(page.get_by_test_id("ticket-assignee")).to_have_text("You (Lin Wei)")
    page.get_by_test_id("composer-input").fill("kept")

    page.get_by_test_id("composer-input").press("Alt+d")

    # No button, no shortcut and nothing said about drafting: the operator switched it off.
    expect(page.get_by_test_id("assist-button")).to_have_count(0)
    expect(page.get_by_test_id("assist-status")).to_be_hidden()
    expect(page.get_by_test_id("composer-input")).to_have_value("kept")
    expect(page.get_by_test_id("composer-input")).to_have_attribute("aria-keyshortcuts", "Enter Alt+N")
    expect(page.get_by_test_id("shortcuts")).not_to_contain_text("Alt+D")
    expect(page.get_by_test_id("shortcuts")).to_contain_text("Alt+N")
    assert Message.objects.filter(conversation=conversation, role=Message.Role.AGENT).count() == 0
    assert page.errors == []  # type: ignore[attr-defined]


def test_it_refetches_the_queue_after_the_socket_reconnects(browser: Browser, platform: Platform) -> None:
    make_agent("lin", "Lin", "Wei")
    page = open_console(browser, platform, "lin")
    expect(page.get_by_test_id("queue-count-waiting")).to_have_text("0")
    platform.kill()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting", timeout=10_000)
    # Handed off while the console was away: no event reached it.
    conversation = handed_off("Are you there?")
    time.sleep(0.5)
    platform.start()

    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "online", timeout=30_000)
    expect(queue_item(page, conversation)).to_be_visible()
    expect(page.get_by_test_id("queue-count-waiting")).to_have_text("1")


def test_it_refuses_someone_outside_the_agent_groups(browser: Browser, platform: Platform) -> None:
    User.objects.create_user(username="visitor", password=PASSWORD)
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    page = context.new_page()
    page.goto(f"{platform.url}/agent/")
    page.get_by_test_id("login-username").fill("visitor")
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()

    expect(page.get_by_test_id("login-error")).to_have_text(
        "Signing in failed: Only people in the Agent, Supervisor or Manager group may use the agent console."
    )
    expect(page.get_by_test_id("queue-list")).to_have_count(0)


def test_a_customer_asks_for_a_person_and_an_agent_joins_types_and_answers(
    browser: Browser, platform: Platform, screenshots: Path
) -> None:
    make_agent("lin", "Lin", "Wei")
    console = open_console(browser, platform, "lin")
    expect(console.get_by_test_id("queue-empty")).to_be_visible()
    customer_context = browser.new_context(viewport=ViewportSize(width=420, height=760), locale="en-US")
    customer = customer_context.new_page()
    customer_errors: list[str] = []
    customer.on("pageerror", lambda error: customer_errors.append(str(error)))
    customer.goto(f"{platform.url}/chat/")
    expect(customer.get_by_test_id("composer-input")).to_be_visible()

    customer.get_by_test_id("composer-input").fill("I want to talk to a human")
    customer.get_by_test_id("composer-input").press("Enter")

    # The agent's console lists it without a reload.
    item = console.get_by_test_id("queue-item")
    expect(item).to_have_count(1, timeout=15_000)
    expect(item.get_by_test_id("queue-item-trigger")).to_have_text("Asked for a person")
    expect(item.get_by_test_id("queue-item-last")).to_have_text("I want to talk to a human")
    item.click()
    console.get_by_test_id("claim-button").click()
    expect(console.get_by_test_id("ticket-assignee")).to_have_text("You (Lin Wei)")

    customer_system = customer.locator('[data-testid="message"][data-role="system"]')
    expect(customer_system.last).to_contain_text("Lin Wei joined the conversation.", timeout=10_000)

    console.get_by_test_id("composer-input").press_sequentially("Hi, this is Lin", delay=40)

    expect(customer.get_by_test_id("agent-typing")).to_be_visible(timeout=10_000)
    expect(customer.get_by_test_id("agent-typing")).to_contain_text("Lin Wei is typing")

    console.get_by_test_id("composer-input").press_sequentially(" from support. How can I help?", delay=10)
    console.get_by_test_id("composer-input").press("Enter")

    agent_message = customer.locator('[data-testid="message"][data-role="agent"]')
    expect(agent_message).to_have_count(1, timeout=10_000)
    expect(agent_message).to_contain_text("Hi, this is Lin from support. How can I help?")
    expect(customer.get_by_test_id("agent-typing")).to_be_hidden()

    # And back: the customer writes, the console shows it live and the customer's typing first.
    customer.get_by_test_id("composer-input").press_sequentially("My order 123 is late", delay=60)
    expect(console.get_by_test_id("typing-indicator")).to_have_text("Customer is typing…", timeout=10_000)
    customer.get_by_test_id("composer-input").press("Enter")
    expect(messages(console, "customer").last.get_by_test_id("message-text")).to_have_text(
        "My order 123 is late", timeout=10_000
    )
    customer.screenshot(path=str(screenshots / "console-customer-side.png"))
    assert customer_errors == []
    assert console.errors == []  # type: ignore[attr-defined]


def test_it_streams_an_ai_draft_into_the_composer_and_marks_it_stale(
    browser: Browser, platform: Platform
) -> None:
    make_agent("lin", "Lin", "Wei")
    conversation = handed_off("Where is my refund?")
    customer_message = Message.objects.get(conversation=conversation, role=Message.Role.CUSTOMER)
    page = open_console(browser, platform, "lin")
    queue_item(page, conversation).click()
    # Drafting is for whoever may answer: not before the claim.
    expect(page.get_by_test_id("assist-button")).to_be_disabled()
    page.get_by_test_id("claim-button").click()
    expect(page.get_by_test_id("ticket-assignee")).to_have_text("You (Lin Wei)")
    expect(page.get_by_test_id("assist-button")).to_be_enabled()
    page.get_by_test_id("composer-input").fill("my own words")
    # The server is played by the test from here on: what the console asks for assist is kept back,
    # and the frames the contract describes are handed to the console as its socket would.
    page.evaluate(
        """() => {
        window.assistFramesSent = [];
        const send = WebSocket.prototype.send;
        WebSocket.prototype.send = function (data) {
          const frame = JSON.parse(data);
          if (frame.type.startsWith("assist.")) window.assistFramesSent.push(frame);
          else send.call(this, data);
        };
    }"""
    )

    def deliver(frame: dict[str, Any]) -> None:
        page.evaluate(
            "frame => window.__agentConsole.deliver(frame)", {"conversation": str(conversation.pk), **frame}
        )

    page.keyboard.press("Alt+d")

    assert page.evaluate("window.assistFramesSent") == [
        {"type": "assist.request", "conversation": str(conversation.pk)}
    ]
    expect(page.get_by_test_id("assist-state")).to_have_text("Drafting a reply…")
    expect(page.get_by_test_id("assist-button")).to_have_text("Stop draft")
    # An error that cannot be the request's refusal (a presence frame's, say) is not taken for it.
    deliver({"type": "error", "code": "invalid_frame", "detail": "Something else was wrong."})
    expect(page.get_by_test_id("notice")).to_have_text("Something else was wrong.", timeout=5_000)
    expect(page.get_by_test_id("assist-error")).to_have_count(0)
    expect(page.get_by_test_id("assist-state")).to_have_text("Drafting a reply…")
    deliver({"type": "assist.started", "draft_id": "d1", "based_on_message": customer_message.pk})
    # The draft replaces what was in the composer.
    expect(page.get_by_test_id("composer-input")).to_have_value("")
    deliver({"type": "assist.delta", "draft_id": "d1", "seq": 1, "text": "Your refund "})
    deliver({"type": "assist.delta", "draft_id": "d1", "seq": 2, "text": "is on its way."})
    deliver({"type": "assist.delta", "draft_id": "d1", "seq": 2, "text": "is on its way."})
    deliver({"type": "assist.delta", "draft_id": "other", "seq": 3, "text": " Not this one."})
    expect(page.get_by_test_id("composer-input")).to_have_value("Your refund is on its way.")
    deliver(
        {
            "type": "assist.done",
            "draft_id": "d1",
            "text": "Your refund is on its way: 5–7 working days.",
            "citations": [],
            "stale": False,
        }
    )
    expect(page.get_by_test_id("composer-input")).to_have_value(
        "Your refund is on its way: 5–7 working days."
    )
    expect(page.get_by_test_id("assist-state")).to_have_text(
        "AI draft: edit it, then send. It is never sent without you."
    )
    expect(page.get_by_test_id("assist-stale")).to_have_count(0)
    # A newer customer message than the one the draft answers.
    deliver(
        {
            "type": "conversation.message",
            "message": {
                "id": customer_message.pk + 100,
                "role": "customer",
                "text": "Actually, I found it.",
                "status": "complete",
                "attachments": [],
                "citations": [],
                "created_at": timezone.now().isoformat(),
                "internal": False,
            },
        }
    )
    expect(page.get_by_test_id("assist-stale")).to_have_text(
        "A newer customer message arrived: this draft may be out of date"
    )
    # Never sent by itself: nothing was saved, and the draft waits in the composer for the agent.
    assert Message.objects.filter(conversation=conversation, role=Message.Role.AGENT).count() == 0

    page.get_by_test_id("composer-input").press("End")
    page.keyboard.type(" Sorry for the wait!")
    page.keyboard.press("Enter")

    expect(messages(page, "agent").get_by_test_id("message-text")).to_have_text(
        ["Your refund is on its way: 5–7 working days. Sorry for the wait!"]
    )
    expect(page.get_by_test_id("assist-status")).to_be_hidden()

    # A failed draft says why.
    page.get_by_test_id("assist-button").click()
    deliver({"type": "assist.started", "draft_id": "d2", "based_on_message": customer_message.pk})
    deliver(
        {
            "type": "assist.error",
            "draft_id": "d2",
            "code": "inference_unavailable",
            "detail": "The model is not answering.",
        }
    )
    # In the console's own words for a code it knows (the server's detail for one it does not).
    expect(page.get_by_test_id("assist-error")).to_have_text(
        "The AI draft failed: The AI model cannot be reached right now."
    )
    # A server without assist refuses the request itself: that error is the draft's answer.
    page.get_by_test_id("assist-button").click()
    expect(page.get_by_test_id("assist-state")).to_have_text("Drafting a reply…")
    deliver({"type": "error", "code": "unknown_type", "detail": "Unknown frame type 'assist.request'."})
    expect(page.get_by_test_id("assist-error")).to_have_text(
        "Drafting with AI is not available here: Unknown frame type 'assist.request'."
    )
    assert page.errors == []  # type: ignore[attr-defined]


def test_an_agent_drafts_with_ai_edits_the_draft_and_sends_it(
    browser: Browser, platform: Platform, screenshots: Path
) -> None:
    """Agent assist end to end: the console asks, the server grounds and streams a draft from the model,
    the agent edits it, and only the agent's send makes it a message the customer gets."""
    make_agent("lin", "Lin", "Wei")
    conversation = handed_off("Where is my refund?")
    page = open_console(browser, platform, "lin")
    queue_item(page, conversation).click()
    page.get_by_test_id("claim-button").click()
    expect(page.get_by_test_id("ticket-assignee")).to_have_text("You (Lin Wei)")
    platform.inference.enqueue(
        Script(
            tokens=["Your refund ", "was sent on Monday; ", "it reaches your card ", "in 5–7 working days."],
            token_delay=0.1,
        )
    )

    page.get_by_test_id("composer-input").press("Alt+d")

    expect(page.get_by_test_id("composer-input")).to_have_value(
        "Your refund was sent on Monday; it reaches your card in 5–7 working days.", timeout=15_000
    )
    expect(page.get_by_test_id("assist-state")).to_have_text(
        "AI draft: edit it, then send. It is never sent without you."
    )
    save_screenshot(page, screenshots, "console-assist.png")
    request = platform.inference.chat_requests[-1].json
    assert request["messages"][-1] == {"role": "user", "content": "Where is my refund?"}
    # A draft is not a message until the agent sends it.
    assert not Message.objects.filter(conversation=conversation, role=Message.Role.AGENT).exists()

    page.get_by_test_id("composer-input").press("End")
    page.keyboard.type(" Sorry for the wait!")
    page.keyboard.press("Enter")

    sent = "Your refund was sent on Monday; it reaches your card in 5–7 working days. Sorry for the wait!"
    expect(messages(page, "agent").get_by_test_id("message-text")).to_have_text([sent])
    assert list(
        Message.objects.filter(conversation=conversation, role=Message.Role.AGENT).values_list(
            "text", flat=True
        )
    ) == [sent]
    assert page.errors == []  # type: ignore[attr-defined]


def test_it_keeps_what_the_agent_types_while_a_message_is_sent_and_gives_back_one_that_failed(
    browser: Browser, platform: Platform
) -> None:
    make_agent("lin", "Lin", "Wei")
    conversation = handed_off("Is my refund on its way?")
    page = open_console(browser, platform, "lin")
    queue_item(page, conversation).click()
    page.get_by_test_id("claim-button").click()
    expect(page.get_by_test_id("claim-button")).to_have_count(0)
    held: list[Any] = []
    page.route("**/api/agent/conversations/*/messages", lambda route: held.append(route))

    # The first message is on its way (its request held): the agent goes on typing the next one.
    send(page, "Yes, it was sent today.")
    expect(page.get_by_test_id("composer-input")).to_have_value("")
    for _ in range(250):  # until the request reaches the route (each wait lets Playwright run it)
        if held:
            break
        page.wait_for_timeout(20)
    assert len(held) == 1
    page.get_by_test_id("composer-input").type("It takes 5 days")
    held.pop().continue_()

    expect(messages(page, "agent").get_by_test_id("message-text")).to_have_text(["Yes, it was sent today."])
    expect(page.get_by_test_id("composer-input")).to_have_value("It takes 5 days")

    # A message that fails to go comes back into the composer, with what was typed since after it.
    page.unroute("**/api/agent/conversations/*/messages")
    page.route(
        "**/api/agent/conversations/*/messages",
        lambda route: route.fulfill(
            status=503, content_type="application/json", body='{"code": "busy", "detail": "Try again."}'
        ),
    )
    page.get_by_test_id("composer-input").press("Enter")

    expect(page.locator("#ac-composer-error")).to_contain_text("Try again.")
    expect(page.get_by_test_id("composer-input")).to_have_value("It takes 5 days")
    assert Message.objects.filter(conversation=conversation, role=Message.Role.AGENT).count() == 1
