"""The customer widget in headless Chromium: streaming, images, history, safety, feedback, embedding."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from PIL import Image
from playwright.sync_api import Browser, Dialog, Page, Request, ViewportSize, expect

from conversations.models import Attachment, Conversation, Feedback, Message, SatisfactionRating
from tests.browser.conftest import SCREENSHOTS, Platform
from tests.factories import FaqEntryFactory
from tests.scripted_inference import Script

pytestmark = pytest.mark.browser

DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=375, height=740)


@pytest.fixture
def quick_entries() -> None:
    for position, question in enumerate(["查订单", "开发票", "退换货"]):
        FaqEntryFactory(question=question, locale="zh-Hans", position=position)
    for position, question in enumerate(["Where is my order?", "I need an invoice", "Returns and exchanges"]):
        FaqEntryFactory(question=question, locale="en", position=position)


def open_chat(
    browser: Browser,
    platform: Platform,
    *,
    viewport: ViewportSize = DESKTOP,
    locale: str = "en-US",
    is_mobile: bool = False,
) -> Page:
    context = browser.new_context(viewport=viewport, locale=locale, is_mobile=is_mobile, has_touch=is_mobile)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{platform.url}/chat/")
    expect(page.get_by_test_id("composer-input")).to_be_visible()
    return page


def send(page: Page, text: str) -> None:
    page.get_by_test_id("composer-input").fill(text)
    page.get_by_test_id("composer-input").press("Enter")


def last_assistant_text(page: Page) -> Any:
    return page.locator('[data-testid="message"][data-role="assistant"]').last.get_by_test_id("message-text")


def wait_for_reply_done(page: Page) -> None:
    expect(
        page.locator('[data-testid="message"][data-role="assistant"][data-status="complete"]')
    ).not_to_have_count(0, timeout=45_000)


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def test_it_streams_a_reply_as_the_customer_watches(browser: Browser, platform: Platform, quick_entries: None,
                                                     screenshots: Path) -> None:  # fmt: skip
    tokens = ["Sure", "! ", "Invoices ", "are ", "in ", "**My orders → Invoice**", ". ", "Anything ", "else?"]
    platform.inference.enqueue(Script(tokens=tokens, first_token_delay=0.8, token_delay=0.25))
    page = open_chat(browser, platform)

    send(page, "How do I get an invoice?")

    customer = page.locator('[data-testid="message"][data-role="customer"]').last
    expect(customer.get_by_test_id("message-text")).to_have_text("How do I get an invoice?")
    expect(page.get_by_test_id("thinking")).to_be_visible()
    expect(page.get_by_test_id("stop-button")).to_be_visible()
    # The reply grows while it streams: some of it shows before all of it.
    expect(last_assistant_text(page)).to_contain_text("Invoices", timeout=10_000)
    partial = last_assistant_text(page).inner_text()
    assert "Anything else?" not in partial
    wait_for_reply_done(page)
    expect(last_assistant_text(page)).to_have_text(
        "Sure! Invoices are in My orders → Invoice. Anything else?"
    )
    # Markdown rendered: the bold part is <strong>.
    expect(last_assistant_text(page).locator("strong")).to_have_text("My orders → Invoice")
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    # Screen readers hear the finished reply once, through the aria-live region.
    expect(page.get_by_test_id("live-region")).to_have_attribute("aria-live", "polite")
    expect(page.get_by_test_id("live-region")).to_contain_text("Anything else?")
    page.screenshot(path=str(screenshots / "desktop-en.png"))

    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    assert reply.text == "".join(tokens)
    assert reply.status == Message.Status.COMPLETE
    assert page.errors == []  # type: ignore[attr-defined]


def _photo(path: Path, width: int = 4000, height: int = 3000) -> Path:
    image = Image.radial_gradient("L").resize((width, height)).convert("RGB")
    image.save(path, "JPEG", quality=90)
    return path


def test_it_scales_a_large_photo_in_the_browser_before_uploading_it(browser: Browser, platform: Platform,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    platform.inference.enqueue(Script(tokens=["I ", "see ", "a ", "photo."]))
    page = open_chat(browser, platform)
    uploads: list[Request] = []
    page.on(
        "request", lambda request: uploads.append(request) if request.url.endswith("/attachments") else None
    )

    page.get_by_test_id("file-input").set_input_files(str(_photo(tmp_path / "photo.jpg")))

    expect(page.get_by_test_id("attachment-preview")).to_have_count(1)
    expect(page.get_by_test_id("attachment-preview")).to_have_attribute(
        "data-status", "ready", timeout=15_000
    )
    assert len(uploads) == 1
    # What reached the server was already scaled down in the browser to 2048 px on the long side.
    uploaded = Attachment.objects.get()
    assert (uploaded.original_width, uploaded.original_height) == (2048, 1536)
    send(page, "What is in this photo?")
    wait_for_reply_done(page)

    attachment = Attachment.objects.get()
    assert attachment.message is not None
    assert attachment.message.text == "What is in this photo?"
    assert (attachment.width, attachment.height) == (1463, 1097)
    user_turn = platform.inference.chat_requests[-1].json["messages"][-1]
    image_parts = [part for part in user_turn["content"] if part["type"] == "image_url"]
    assert len(image_parts) == 1
    assert image_parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    expect(page.locator('[data-testid="message"][data-role="customer"] img')).to_have_count(1)


def test_it_shows_the_conversation_again_after_a_reload(browser: Browser, platform: Platform) -> None:
    platform.inference.enqueue(Script(tokens=["Your ", "order ", "ships ", "tomorrow."]))
    page = open_chat(browser, platform)
    send(page, "Where is my order?")
    wait_for_reply_done(page)

    page.reload()

    expect(
        page.locator('[data-testid="message"][data-role="customer"]').get_by_test_id("message-text")
    ).to_have_text(["Where is my order?"])
    expect(last_assistant_text(page)).to_have_text("Your order ships tomorrow.")

    page.get_by_test_id("new-conversation").click()
    expect(page.locator('[data-testid="message"][data-role="customer"]')).to_have_count(0)


def record_dialogs(page: Page) -> list[str]:
    """The messages of the alerts, confirms and prompts the page raises, each dismissed."""
    dialogs: list[str] = []

    def record_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record_dialog)
    return dialogs


def test_it_renders_hostile_model_output_inertly(browser: Browser, platform: Platform) -> None:
    hostile = ["Look: ", "<img src=x onerror=alert(1)>", " and ", "[x](javascript:alert(1))", " and ",
               "<script>alert(2)</script>", " done."]  # fmt: skip
    platform.inference.enqueue(Script(tokens=hostile))
    page = open_chat(browser, platform)
    dialogs = record_dialogs(page)

    send(page, "<b>bold?</b> <img src=y onerror=alert(3)>")
    wait_for_reply_done(page)

    reply = last_assistant_text(page)
    expect(reply).to_contain_text("done.")
    assert reply.locator("img").count() == 0
    assert reply.locator("script").count() == 0
    for href in reply.locator("a").evaluate_all("links => links.map(link => link.getAttribute('href'))"):
        assert href is None or not href.strip().lower().startswith("javascript:")
    customer = page.locator('[data-testid="message"][data-role="customer"]').last.get_by_test_id(
        "message-text"
    )
    expect(customer).to_have_text("<b>bold?</b> <img src=y onerror=alert(3)>")
    assert customer.locator("b, img").count() == 0
    assert page.locator("img[src='x'], img[src='y']").count() == 0
    assert _handlers_and_script_urls(page, "#cs-widget-root") == []
    # Dialogs arrive in order: one raised now proves none was raised by the hostile text before it.
    page.evaluate("() => alert('sentinel')")
    assert dialogs == ["sentinel"]


# The module that renders every reply; the test imports the same instance the page runs.
MARKDOWN_MODULE = "/static/widget/chat/markdown.js"

# Raw HTML, as if the model had got it past markdown-it, and what the sanitiser leaves of it.
HOSTILE_HTML = [
    ("<img src=x onerror=alert(1)>", ""),
    ("<script>alert(2)</script>", ""),
    ('<a href="javascript:alert(3)">click</a>', "<a>click</a>"),
    ('<a href=" JaVaScRiPt:alert(4)">spaced</a>', "<a>spaced</a>"),
    ('<a href="data:text/html,<script>alert(5)</script>">data</a>', "<a>data</a>"),
    ('<p onclick="alert(6)" onmouseover="alert(7)" style="color:red">text</p>', "<p>text</p>"),
    ("<svg><script>alert(8)</script></svg>", ""),
    ("<svg onload=alert(9)></svg>", ""),
    ('<iframe src="javascript:alert(10)"></iframe>', ""),
    ("<math><mtext><table><mglyph><style><img src=x onerror=alert(11)>", ""),
    ('<form action="javascript:alert(12)"><button>go</button></form>', "go"),
    ("<details open ontoggle=alert(13)>", ""),
    (
        '<a href="https://example.com/" onclick="alert(14)" target="_self">ok</a>',
        '<a href="https://example.com/" target="_blank" rel="noopener noreferrer nofollow">ok</a>',
    ),
    ('<div data-x="1" aria-hidden="true">kept text</div>', "kept text"),
    ('<span class="cs-evil cs-md-image">alt text</span>', '<span class="cs-md-image">alt text</span>'),
]


def _handlers_and_script_urls(page: Page, selector: str) -> list[str]:
    """Every script element, on* attribute and javascript:/data: URL inside what the selector matches."""
    return page.evaluate(
        """selector => {
            const found = [];
            for (const element of document.querySelectorAll(`${selector} *`)) {
                const name = element.localName;
                if (name === "script") found.push("script");
                for (const attribute of element.attributes) {
                    const value = attribute.value.replace(/[\\s\\u0000-\\u001f]+/g, "").toLowerCase();
                    const where = `${name}[${attribute.name}]`;
                    if (attribute.name.startsWith("on")) found.push(where);
                    if (/^(javascript|data|vbscript):/.test(value)) found.push(`${where}=${value}`);
                }
            }
            return found;
        }""",
        selector,
    )


def test_it_sanitises_raw_html_with_the_function_the_transcript_uses(
    browser: Browser, platform: Platform
) -> None:
    page = open_chat(browser, platform)
    dialogs = record_dialogs(page)

    sanitised = page.evaluate(
        """async ({ module, inputs }) => {
            const { sanitizeHtml } = await import(module);
            return inputs.map((html) => {
                const holder = document.createElement("div");
                holder.className = "sanitised";
                holder.append(sanitizeHtml(html));
                document.body.append(holder);
                return holder.innerHTML;
            });
        }""",
        {"module": MARKDOWN_MODULE, "inputs": [html for html, _ in HOSTILE_HTML]},
    )

    assert sanitised == [expected for _, expected in HOSTILE_HTML]
    assert _handlers_and_script_urls(page, ".sanitised") == []
    page.evaluate("() => alert('sentinel')")
    assert dialogs == ["sentinel"]
    assert page.errors == []  # type: ignore[attr-defined]


def test_it_records_a_rating_that_staff_see_in_admin(
    browser: Browser, platform: Platform, screenshots: Path
) -> None:
    platform.inference.enqueue(Script(tokens=["Returns ", "are ", "free ", "within ", "30 ", "days."]))
    page = open_chat(browser, platform)
    send(page, "Are returns free?")
    wait_for_reply_done(page)

    page.locator('[data-testid="message"][data-role="assistant"]').last.get_by_test_id("feedback-up").click()

    expect(
        page.locator('[data-testid="message"][data-role="assistant"]').last.get_by_test_id("feedback-up")
    ).to_have_attribute("aria-pressed", "true")
    # feedback.saved, which shows the thanks, is sent once the rating is in the database.
    expect(page.get_by_test_id("feedback-thanks")).to_be_visible()
    feedback = Feedback.objects.get()
    assert feedback.rating == 1
    assert feedback.message.text == "Returns are free within 30 days."

    get_user_model().objects.create_superuser("supervisor", "supervisor@example.com", "a-long-password-1")
    admin = browser.new_page(viewport=DESKTOP)
    admin.goto(f"{platform.url}/admin/login/")
    admin.fill("#id_username", "supervisor")
    admin.fill("#id_password", "a-long-password-1")
    admin.click("input[type=submit]")
    admin.goto(f"{platform.url}/admin/conversations/feedback/")
    expect(admin.locator("#result_list")).to_contain_text("Returns are free within 30 days.")
    admin.goto(f"{platform.url}/admin/conversations/conversation/{feedback.message.conversation_id}/change/")
    expect(admin.locator(".transcript-assistant")).to_contain_text("Returns are free within 30 days.")
    expect(admin.locator(".transcript-customer")).to_contain_text("Are returns free?")
    admin.screenshot(path=str(screenshots / "admin-transcript.png"), full_page=True)


def test_it_opens_through_embed_js_on_a_page_from_another_origin(browser: Browser, platform: Platform,
                                                                 host_page_server: tuple[str, Path],
                                                                 screenshots: Path) -> None:  # fmt: skip
    host_url, host_root = host_page_server
    (host_root / "index.html").write_text(
        "<!doctype html><html><head><title>Acme Store</title></head><body style='font-family:sans-serif'>"
        "<h1>Acme Store</h1><p>Welcome to our shop.</p>"
        f'<script src="{platform.url}/static/widget/embed.js" data-lang="en" data-color="#0a7d5a" '
        'data-greeting="Hi! Ask me anything about your order." data-position="right"></script>'
        "</body></html>"
    )
    platform.inference.enqueue(Script(tokens=["Hello ", "from ", "the ", "widget."]))
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{host_url}/index.html")
    page.evaluate("""() => {
        window.widgetEvents = [];
        ['message.sent', 'reply.done'].forEach(name =>
            window.addEventListener('cswidget:' + name, () => window.widgetEvents.push(name)));
    }""")

    # The host site passes who the customer is and a question to start with.
    page.evaluate("""() => {
        window.CSWidget.setMetadata({customer_id: "C-42", plan: "gold"});
        window.CSWidget.prefill("Hi!");
    }""")
    page.get_by_test_id("launcher").click()

    frame = page.frame_locator('[data-testid="widget-frame"]')
    expect(frame.get_by_test_id("composer-input")).to_be_visible(timeout=15_000)
    expect(frame.get_by_test_id("composer-input")).to_have_value("Hi!")
    # The host page's greeting came by postMessage from an allowed origin, not in the frame's URL.
    expect(frame.get_by_test_id("greeting").get_by_test_id("greeting-text")).to_have_text(
        "Hi! Ask me anything about your order."
    )
    assert "greeting" not in (page.get_by_test_id("widget-frame").get_attribute("src") or "")
    # Keys typed into a cross-origin iframe are sometimes lost by Playwright: click Send instead.
    frame.get_by_test_id("send-button").click()
    expect(
        frame.locator(
            '[data-testid="message"][data-role="assistant"][data-status="complete"]'
        ).get_by_test_id("message-text")
    ).to_have_text("Hello from the widget.", timeout=20_000)
    page.screenshot(path=str(screenshots / "embedded-en.png"))
    # The host page hears of the message and of the reply (the frame posts both before it draws the reply).
    page.wait_for_function(
        "() => ['message.sent', 'reply.done'].every(name => window.widgetEvents.includes(name))"
    )
    conversation = Conversation.objects.get()
    assert conversation.metadata == {"customer_id": "C-42", "plan": "gold"}


def test_it_ignores_a_greeting_and_title_in_a_link_to_the_chat(browser: Browser, platform: Platform) -> None:
    evil = "Your account is locked: pay 0.1 BTC at evil.example to unlock it."
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    page = context.new_page()
    page.goto(f"{platform.url}/chat/?embed=1&greeting={quote(evil)}&title={quote('Bank security team')}")
    expect(page.get_by_test_id("composer-input")).to_be_visible()

    # Not framed, so nobody may say hello as the host page, not even this window itself.
    page.evaluate(
        """evil => new Promise(resolve => {
            window.addEventListener("message", event => { if (event.data === "probe") resolve(); });
            const payload = { greeting: evil, title: evil };
            window.postMessage({ source: "cs-widget", type: "host.hello", payload }, "*");
            window.postMessage("probe", "*");
        })""",
        evil,
    )

    expect(page.get_by_test_id("greeting").get_by_test_id("greeting-text")).to_have_text(
        "Hi there! How can I help you today? You can also send me a screenshot or a photo."
    )
    expect(page.locator("h1")).to_have_text("Support assistant")
    assert evil not in page.locator("body").inner_text()
    assert "Bank security team" not in page.content()
    assert evil not in page.content()


@pytest.mark.parametrize(
    ("locale", "note"), [("zh-CN", "回复过长，已被截断。"), ("en-US", "This reply was cut short.")]
)
def test_it_says_when_a_reply_was_cut_short_at_the_token_limit(
    browser: Browser, platform: Platform, screenshots: Path, locale: str, note: str
) -> None:
    platform.inference.enqueue(
        Script(tokens=["Returns ", "take ", "three ", "steps: ", "first"], finish_reason="length"),
        Script(tokens=["You're ", "welcome."]),
    )
    page = open_chat(browser, platform, locale=locale)
    send(page, "How do returns work?")

    reply = page.locator('[data-testid="message"][data-role="assistant"]').last
    expect(reply.get_by_test_id("truncated-note")).to_have_text(note, timeout=45_000)
    expect(reply.get_by_test_id("message-text")).to_have_text("Returns take three steps: first")
    # The saved reply says so too: the note is back after a reload.
    page.reload()
    expect(reply.get_by_test_id("truncated-note")).to_have_text(note)

    send(page, "Thanks")
    expect(last_assistant_text(page)).to_have_text("You're welcome.", timeout=45_000)
    expect(page.get_by_test_id("truncated-note")).to_have_count(1)
    page.screenshot(path=str(screenshots / f"reply-cut-short-{locale}.png"))
    assert page.errors == []  # type: ignore[attr-defined]


def test_it_rates_the_previous_conversation_over_rest(browser: Browser, platform: Platform) -> None:
    platform.inference.enqueue(Script(tokens=["Your ", "refund ", "is ", "on ", "its ", "way."]))
    page = open_chat(browser, platform)
    send(page, "Where is my refund?")
    wait_for_reply_done(page)
    first = Conversation.objects.get()
    ratings: list[Request] = []
    sockets: list[str] = []
    page.on("request", lambda request: ratings.append(request) if request.url.endswith("/csat") else None)
    page.on("websocket", lambda socket: sockets.append(socket.url))

    page.get_by_test_id("new-conversation").click()
    page.get_by_test_id("csat-prompt-star").nth(3).click()
    expect(page.get_by_test_id("csat-dialog")).to_be_visible()
    page.get_by_test_id("csat-comment").fill("Quick answer.")
    page.get_by_test_id("csat-submit").click()

    expect(
        page.get_by_test_id("message").filter(has_text="Thanks for rating this conversation!")
    ).to_be_visible()
    expect(page.get_by_test_id("csat-prompt")).to_have_count(0)
    rating = SatisfactionRating.objects.get()
    assert (rating.conversation_id, rating.score, rating.comment) == (first.pk, 4, "Quick answer.")
    assert [(request.method, request.url) for request in ratings] == [
        ("POST", f"{platform.url}/api/widget/conversations/{first.pk}/csat")
    ]
    assert sockets == []
    assert Conversation.objects.count() == 1
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "viewport", "locale", "is_mobile"),
    [
        ("desktop-zh", DESKTOP, "zh-CN", False),
        ("phone-zh", PHONE, "zh-CN", True),
        ("phone-en", PHONE, "en-US", True),
    ],
)
def test_it_lays_out_for_desktop_and_phone_in_both_languages(
    browser: Browser,
    platform: Platform,
    quick_entries: None,
    screenshots: Path,
    name: str,
    viewport: ViewportSize,
    locale: str,
    is_mobile: bool,
) -> None:
    answer = (
        "您好！发票可以在「我的订单 → 发票」中下载。"
        if locale.startswith("zh")
        else "Hi! You can download it from **My orders**."
    )
    platform.inference.enqueue(Script(tokens=re.findall(r".{1,6}", answer)))
    page = open_chat(browser, platform, viewport=viewport, locale=locale, is_mobile=is_mobile)
    quick = page.get_by_test_id("quick-entry")
    chinese = ["查订单", "开发票", "退换货"]
    english = ["Where is my order?", "I need an invoice", "Returns and exchanges"]
    expected = chinese if locale.startswith("zh") else english
    expect(quick).to_have_text(expected)
    if is_mobile:
        # One column on a phone: the quick entries sit above the composer.
        composer_top = page.get_by_test_id("composer-input").bounding_box()["y"]  # type: ignore[index]
        assert quick.first.bounding_box()["y"] < composer_top  # type: ignore[index]
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    quick.nth(1).click()
    wait_for_reply_done(page)
    expect(page.locator('[data-testid="message"][data-role="customer"]').last).to_contain_text(expected[1])
    page.screenshot(path=str(screenshots / f"{name}.png"))


def test_it_reconnects_and_carries_on_when_the_connection_drops(browser: Browser, platform: Platform) -> None:
    platform.inference.enqueue(
        Script(tokens=["First ", "answer."]),
        Script(tokens=["Second ", "answer."]),
    )
    page = open_chat(browser, platform)
    send(page, "First question")
    wait_for_reply_done(page)

    platform.kill()
    expect(page.get_by_test_id("connection-banner")).to_be_visible(timeout=10_000)
    platform.start()
    expect(page.get_by_test_id("connection-banner")).to_be_hidden(timeout=30_000)

    send(page, "Second question")
    expect(last_assistant_text(page)).to_have_text("Second answer.", timeout=30_000)
    assert list(Message.objects.filter(role=Message.Role.CUSTOMER).values_list("text", flat=True)) == [
        "First question",
        "Second question",
    ]


def test_it_says_when_the_assistant_is_down_and_offers_a_person_and_a_retry(
    browser: Browser, platform: Platform
) -> None:
    platform.inference.enqueue(Script(status=500), Script(tokens=["Back ", "again."]))
    page = open_chat(browser, platform, locale="zh-CN")

    send(page, "你好")

    error = page.get_by_test_id("reply-error")
    expect(error).to_be_visible(timeout=20_000)
    expect(error).to_have_attribute("data-code", "inference_unavailable")
    expect(error).to_contain_text("人工")
    expect(page.get_by_test_id("error-handoff-button")).to_be_visible()
    failed = Message.objects.get(role=Message.Role.ASSISTANT)
    assert (failed.status, failed.error_code) == (Message.Status.FAILED, "inference_unavailable")

    page.get_by_test_id("retry-button").first.click()

    expect(last_assistant_text(page)).to_have_text("Back again.", timeout=20_000)
    assert Message.objects.filter(role=Message.Role.CUSTOMER, text="你好").count() == 2


@pytest.mark.parametrize(
    ("locale", "error_sentence", "handoff_sentence"),
    [
        (
            "en-US",
            "The assistant isn't available right now. You can try again, or talk to a person.",
            "A person will join this conversation shortly.",
        ),
        ("zh-CN", "智能助手暂时无法使用。您可以重试，或转人工客服。", "已为您转接人工客服，请稍候。"),
    ],
)
def test_it_says_the_same_about_a_failed_reply_and_a_handoff_after_a_reload(
    browser: Browser, platform: Platform, locale: str, error_sentence: str, handoff_sentence: str
) -> None:
    platform.inference.enqueue(Script(status=500))
    page = open_chat(browser, platform, locale=locale)
    send(page, "Hello")
    error = page.get_by_test_id("reply-error")
    expect(error).to_be_visible(timeout=20_000)
    expect(error.locator(".cs-reply-error__text")).to_have_text(error_sentence)

    page.reload()

    error = page.get_by_test_id("reply-error")
    expect(error).to_have_attribute("data-code", "inference_unavailable")
    expect(error.locator(".cs-reply-error__text")).to_have_text(error_sentence)

    page.get_by_test_id("error-handoff-button").click()
    system = page.locator('[data-testid="message"][data-role="system"]').get_by_test_id("message-text")
    expect(system.last).to_have_text(handoff_sentence)
    page.reload()
    expect(system).to_have_text([handoff_sentence])
    assert page.errors == []  # type: ignore[attr-defined]
