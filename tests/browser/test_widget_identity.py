"""A verified customer through embed.js: the host page's data-customer-id and data-customer-hash."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Frame, FrameLocator, Page, ViewportSize, expect

from conversations.models import Conversation
from tests.browser.conftest import Platform
from tests.scripted_inference import Script

pytestmark = pytest.mark.browser

DESKTOP = ViewportSize(width=1280, height=800)
SECRET = "browser-identity-secret"


@pytest.fixture(autouse=True)
def _identity_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform's secret: daphne (started by `platform`, after this) takes it from the environment."""
    monkeypatch.setenv("WIDGET_IDENTITY_SECRET", SECRET)


def signed(customer_id: str) -> str:
    """What the host site's server puts in data-customer-hash."""
    return hmac.new(SECRET.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def write_host_page(
    platform: Platform, root: Path, name: str, *, customer_id: str, customer_hash: str
) -> None:
    (root / name).write_text(
        "<!doctype html><html><head><title>Acme Store</title></head><body><h1>Acme Store</h1>"
        f"<p>Signed in as {customer_id}.</p>"
        f'<script src="{platform.url}/static/widget/embed.js" data-lang="en" '
        f'data-customer-id="{customer_id}" data-customer-hash="{customer_hash}"></script></body></html>'
    )


def open_widget(page: Page, url: str) -> FrameLocator:
    page.goto(url)
    page.get_by_test_id("launcher").click()
    frame = page.frame_locator('[data-testid="widget-frame"]')
    expect(frame.get_by_test_id("composer-input")).to_be_visible(timeout=15_000)
    return frame


def send_in_frame(frame: FrameLocator, text: str) -> None:
    frame.get_by_test_id("composer-input").fill(text)
    # Keys typed into a cross-origin iframe are sometimes lost by Playwright: click Send instead.
    frame.get_by_test_id("send-button").click()


def widget_frame(page: Page, platform: Platform) -> Frame:
    return next(frame for frame in page.frames if frame.url.startswith(f"{platform.url}/chat/"))


def wait_until_stored_conversation_is_dropped(page: Page, platform: Platform) -> None:
    """The widget has heard the host page name someone else, and let go of the conversation it kept."""
    widget_frame(page, platform).wait_for_function(
        "() => window.localStorage.getItem('cs-widget:conversation') === null"
    )


def customer_texts(frame: FrameLocator) -> Any:
    return frame.locator('[data-testid="message"][data-role="customer"]').get_by_test_id("message-text")


def test_it_verifies_the_customer_the_host_page_names_and_keeps_their_conversation_to_them(
    browser: Browser, platform: Platform, host_page_server: tuple[str, Path]
) -> None:
    host_url, host_root = host_page_server
    # Upper-case hex is the same hash.
    write_host_page(
        platform, host_root, "alice.html", customer_id="C-42", customer_hash=signed("C-42").upper()
    )
    write_host_page(platform, host_root, "bob.html", customer_id="C-43", customer_hash=signed("C-43"))
    platform.inference.enqueue(Script(tokens=["Your ", "order ", "ships ", "tomorrow."]))
    platform.inference.enqueue(Script(tokens=["Hello ", "Bob."]))
    page = browser.new_context(viewport=DESKTOP).new_page()

    frame = open_widget(page, f"{host_url}/alice.html")
    send_in_frame(frame, "Where is my order?")
    expect(
        frame.locator(
            '[data-testid="message"][data-role="assistant"][data-status="complete"]'
        ).get_by_test_id("message-text")
    ).to_have_text("Your order ships tomorrow.", timeout=30_000)
    alice = Conversation.objects.get()
    assert alice.verified_customer_id == "C-42"
    # The frame's URL carries neither the id nor its hash.
    frame_src = page.get_by_test_id("widget-frame").get_attribute("src") or ""
    assert "C-42" not in frame_src
    assert signed("C-42") not in frame_src.lower()

    # The next page of the same customer reopens their conversation, with its history.
    frame = open_widget(page, f"{host_url}/alice.html")
    expect(customer_texts(frame)).to_have_text(["Where is my order?"], timeout=15_000)
    stored = widget_frame(page, platform).evaluate(
        "() => JSON.parse(window.localStorage.getItem('cs-widget:conversation'))"
    )
    assert (stored["id"], stored["customer_id"]) == (str(alice.pk), "C-42")

    # Someone else signs in on the same browser: a new conversation, none of the first one shown.
    frame = open_widget(page, f"{host_url}/bob.html")
    wait_until_stored_conversation_is_dropped(page, platform)
    expect(customer_texts(frame)).to_have_count(0)
    send_in_frame(frame, "Hi, it's Bob.")
    expect(customer_texts(frame)).to_have_text(["Hi, it's Bob."])
    expect(
        frame.locator(
            '[data-testid="message"][data-role="assistant"][data-status="complete"]'
        ).get_by_test_id("message-text")
    ).to_have_text("Hello Bob.", timeout=30_000)
    assert sorted(Conversation.objects.values_list("verified_customer_id", flat=True)) == ["C-42", "C-43"]
    assert Conversation.objects.get(verified_customer_id="C-42").messages.filter(role="customer").count() == 1

    # And the first customer's page does not reopen Bob's conversation either.
    frame = open_widget(page, f"{host_url}/alice.html")
    wait_until_stored_conversation_is_dropped(page, platform)
    expect(customer_texts(frame)).to_have_count(0)
    assert Conversation.objects.count() == 2


def test_it_refuses_to_start_a_conversation_for_a_forged_hash(
    browser: Browser, platform: Platform, host_page_server: tuple[str, Path]
) -> None:
    host_url, host_root = host_page_server
    write_host_page(platform, host_root, "forged.html", customer_id="C-42", customer_hash=signed("C-43"))
    page = browser.new_context(viewport=DESKTOP).new_page()
    refusals: list[int] = []
    page.on(
        "response",
        lambda response: (
            refusals.append(response.status) if response.url.endswith("/api/widget/conversations") else None
        ),
    )

    frame = open_widget(page, f"{host_url}/forged.html")
    send_in_frame(frame, "Where is my order?")

    expect(frame.locator(".cs-meta-error")).to_have_text(
        "We couldn't confirm your account, so the chat can't start. Please reload the page or sign in again.",
        timeout=15_000,
    )
    assert refusals == [403]
    assert Conversation.objects.count() == 0
