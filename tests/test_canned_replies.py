"""Canned replies: what GET /api/agent/canned-replies lists, to whom, and the demo's."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from agents import services
from agents.demo import DEMO_CANNED_REPLIES, canned_replies_demo_load
from agents.models import CannedReply
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def logged_in(group: str | None) -> Client:
    user = make_user(group)
    client = Client()
    client.force_login(user)
    return client


def canned_replies(client: Client) -> Any:
    return client.get("/api/agent/canned-replies")


def test_it_lists_the_active_canned_replies_by_shortcode_for_an_agent() -> None:
    refund = CannedReply.objects.create(shortcode="refund", locale="en", title="Refund", text="7 days.")
    greeting_any = CannedReply.objects.create(shortcode="hello", locale="", title="Hi", text="Hello!")
    greeting_zh = CannedReply.objects.create(shortcode="hello", locale="zh-Hans", title="问候", text="您好")
    CannedReply.objects.create(shortcode="old", title="Retired", text="Gone.", is_active=False)

    response = canned_replies(logged_in("Agent"))

    assert response.status_code == 200
    assert response.json() == {
        "canned_replies": [
            {"id": greeting_any.pk, "shortcode": "hello", "locale": "", "title": "Hi", "text": "Hello!"},
            {
                "id": greeting_zh.pk,
                "shortcode": "hello",
                "locale": "zh-Hans",
                "title": "问候",
                "text": "您好",
            },
            {"id": refund.pk, "shortcode": "refund", "locale": "en", "title": "Refund", "text": "7 days."},
        ]
    }


def test_it_lists_nothing_when_there_are_no_canned_replies() -> None:
    assert canned_replies(logged_in("Supervisor")).json() == {"canned_replies": []}


def test_it_refuses_the_list_without_a_session_and_outside_the_agent_groups() -> None:
    CannedReply.objects.create(shortcode="hello", title="Hi", text="Hello!")

    anonymous = canned_replies(Client())
    outsider = canned_replies(logged_in(None))

    assert (anonymous.status_code, anonymous.json()["code"]) == (403, "not_authenticated")
    assert (outsider.status_code, outsider.json()["code"]) == (403, "not_an_agent")
    assert "Hello!" not in anonymous.content.decode() + outsider.content.decode()


def test_saving_a_canned_reply_again_updates_its_text() -> None:
    assert services.canned_reply_save(shortcode="bye", locale="en", title="Closing", text="Bye.") is True
    assert services.canned_reply_save(shortcode="bye", locale="en", title="Closing", text="Goodbye.") is False

    assert list(CannedReply.objects.values_list("shortcode", "locale", "text")) == [("bye", "en", "Goodbye.")]


def test_saving_a_canned_reply_with_a_bad_shortcode_is_refused_and_saves_nothing() -> None:
    with pytest.raises(ValidationError):
        services.canned_reply_save(shortcode="/bye now", locale="en", title="Closing", text="Bye.")

    assert CannedReply.objects.count() == 0


def test_the_demo_canned_replies_come_in_both_languages_once() -> None:
    assert canned_replies_demo_load() is True
    assert canned_replies_demo_load() is False

    saved = set(CannedReply.objects.values_list("shortcode", "locale"))
    assert saved == {(shortcode, locale) for shortcode, locale, _, _ in DEMO_CANNED_REPLIES}
    assert {shortcode for shortcode, _ in saved} == {"hello", "order", "refund", "bye"}
    assert {locale for _, locale in saved} == {"en", "zh-Hans"}
    assert CannedReply.objects.count() == 8


def test_the_demo_never_adds_canned_replies_beside_an_operators() -> None:
    CannedReply.objects.create(shortcode="mine", title="Mine", text="Our own wording.")

    assert canned_replies_demo_load() is False

    assert list(CannedReply.objects.values_list("shortcode", flat=True)) == ["mine"]
