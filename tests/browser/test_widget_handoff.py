"""A customer hands the conversation to a person in headless Chromium: the waiting bar with the queue
position (kept across a reload, even before the socket is back), the agent joining, and the resolve
with the rating asked for; in English and in Chinese. The agent's side is the agent REST API over
HTTP, as the console uses it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import Browser, Page, ViewportSize, WebSocketRoute, expect

from tests.browser.conftest import SCREENSHOTS, Platform

pytestmark = pytest.mark.browser

PHONE_WIDTH = ViewportSize(width=420, height=760)
PASSWORD = "a-long-test-password"

# What the customer reads, as static/widget/chat/messages.js and conversations/services.py say it.
ENGLISH = {
    "locale": "en-US",
    "waiting_title": "Waiting for a person",
    "position": "You're number 1 in the queue",
    "joined": "Lin Wei joined the conversation.",
    "resolved": "The person helping you has finished; the assistant answers again.",
    "csat": "How is it going so far?",
}
CHINESE = {
    "locale": "zh-CN",
    "waiting_title": "正在等待人工客服",
    "position": "您当前排在第 1 位",
    "joined": "Lin Wei 已加入对话。",
    "resolved": "人工客服已处理完毕，智能助手将继续为您服务。",
    "csat": "目前的服务还满意吗？",
}


class AgentHttp:
    """An agent signed in over HTTP: the session API with its CSRF token, then claim and resolve."""

    def __init__(self, base_url: str, username: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(
            base_url=base_url, timeout=15, event_hooks={"request": [self._send_every_cookie]}
        )
        self.csrf_token = self.http.get("/api/agent/session").json()["csrf_token"]
        response = self.http.post(
            "/api/agent/session", json={"username": username, "password": PASSWORD}, headers=self._headers()
        )
        assert response.status_code == 200, response.text
        self.csrf_token = response.json()["csrf_token"]

    def _send_every_cookie(self, request: httpx.Request) -> None:
        # The production entry point marks the cookies Secure (it runs behind TLS); a browser on
        # localhost still sends them over plain http, and so does this.
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.http.cookies.jar)
        if cookies:
            request.headers["Cookie"] = cookies

    def _headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.csrf_token, "Origin": self.base_url, "Referer": self.base_url + "/"}

    def post(self, path: str) -> httpx.Response:
        return self.http.post(path, json={}, headers=self._headers())

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def agent_lin(platform: Platform) -> Iterator[AgentHttp]:
    user = User.objects.create_user(username="lin", password=PASSWORD, first_name="Lin", last_name="Wei")
    user.groups.add(Group.objects.get_or_create(name="Agent")[0])
    agent = AgentHttp(platform.url, "lin")
    try:
        yield agent
    finally:
        agent.close()


def open_widget(browser: Browser, platform: Platform, locale: str) -> Page:
    page = browser.new_context(viewport=PHONE_WIDTH, locale=locale).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{platform.url}/chat/")
    expect(page.get_by_test_id("composer-input")).to_be_visible()
    return page


def last_system_text(page: Page) -> Any:
    return page.locator('[data-testid="message"][data-role="system"]').last.get_by_test_id("message-text")


@pytest.mark.parametrize("words", [ENGLISH, CHINESE], ids=["en", "zh-Hans"])
def test_it_shows_the_wait_across_a_reload_then_the_agent_joining_and_the_resolve(
    browser: Browser, platform: Platform, agent_lin: AgentHttp, words: dict[str, str]
) -> None:
    page = open_widget(browser, platform, words["locale"])
    status = page.get_by_test_id("handoff-status")
    expect(status).to_be_hidden()

    page.get_by_test_id("handoff-button").click()

    expect(status).to_be_visible(timeout=15_000)
    expect(page.get_by_test_id("handoff-status-title")).to_have_text(words["waiting_title"])
    expect(page.get_by_test_id("handoff-status-text")).to_contain_text(words["position"])
    conversation_id = page.evaluate("window.__csWidget.state.conversation.id")
    ticket_id = page.evaluate("window.__csWidget.state.handoff.ticketId")
    expect(page.get_by_test_id("handoff-status-ticket")).to_contain_text(str(ticket_id))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"widget-handoff-waiting-{words['locale']}.png"))

    # A second tab whose socket never hears from the server: the bar comes from what was stored.
    offline = page.context.new_page()
    held: list[WebSocketRoute] = []
    offline.route_web_socket("**/ws/**", lambda socket: held.append(socket))
    offline.goto(f"{platform.url}/chat/")
    expect(offline.get_by_test_id("handoff-status")).to_be_visible()
    expect(offline.get_by_test_id("handoff-status-text")).to_contain_text(words["position"])
    assert offline.evaluate("window.__csWidget.connection.everReady") is False
    offline.close()

    page.reload()
    expect(status).to_be_visible()
    expect(page.get_by_test_id("handoff-status-text")).to_contain_text(words["position"])
    expect(page.get_by_test_id("handoff-status-title")).to_have_text(words["waiting_title"])

    claimed = agent_lin.post(f"/api/agent/conversations/{conversation_id}/claim")

    assert claimed.status_code == 200, claimed.text
    expect(last_system_text(page)).to_have_text(words["joined"], timeout=10_000)
    expect(status).to_be_hidden()

    resolved = agent_lin.post(f"/api/agent/conversations/{conversation_id}/resolve")

    assert resolved.status_code == 200, resolved.text
    expect(last_system_text(page)).to_have_text(words["resolved"], timeout=10_000)
    expect(page.get_by_test_id("csat-prompt")).to_be_visible()
    expect(page.get_by_test_id("csat-prompt")).to_contain_text(words["csat"])
    expect(page.get_by_test_id("csat-prompt-star")).to_have_count(5)
    expect(status).to_be_hidden()
    assert page.errors == []  # type: ignore[attr-defined]
