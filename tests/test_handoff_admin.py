"""Admin for handoff settings (one row), weekly hours and holidays."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from agents.models import HandoffSettings, Holiday, WeeklyHours

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in() -> Client:
    user = get_user_model().objects.create_superuser(username="boss", password="unused-password")
    client = Client()
    client.force_login(user)
    return client


def settings_form(**changes: Any) -> dict[str, Any]:
    form = {
        "phrase_trigger_enabled": "on",
        "model_tool_trigger_enabled": "on",
        "knowledge_miss_trigger_enabled": "on",
        "knowledge_miss_turns": "2",
        "thumbs_down_trigger_enabled": "on",
        "thumbs_down_in_a_row": "2",
        "time_zone": "Asia/Shanghai",
        "expected_handle_minutes": "5",
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def test_the_settings_list_opens_the_add_form_then_the_one_row(admin_client_logged_in: Client) -> None:
    assert (
        admin_client_logged_in.get("/admin/agents/handoffsettings/")["Location"]
        == "/admin/agents/handoffsettings/add/"
    )

    response = admin_client_logged_in.post(
        "/admin/agents/handoffsettings/add/",
        settings_form(thumbs_down_trigger_enabled=None, knowledge_miss_turns="3"),
    )

    assert response.status_code == 302
    saved = HandoffSettings.objects.get()
    assert (saved.pk, saved.thumbs_down_trigger_enabled, saved.knowledge_miss_turns) == (1, False, 3)
    assert (
        admin_client_logged_in.get("/admin/agents/handoffsettings/")["Location"]
        == "/admin/agents/handoffsettings/1/change/"
    )


def test_an_unknown_time_zone_is_refused(admin_client_logged_in: Client) -> None:
    response = admin_client_logged_in.post(
        "/admin/agents/handoffsettings/add/", settings_form(time_zone="Asia/Beijing")
    )

    assert response.status_code == 200
    assert "is not a time zone name" in response.content.decode()
    assert HandoffSettings.objects.count() == 0


def test_hours_and_holidays_are_listed(admin_client_logged_in: Client) -> None:
    WeeklyHours.objects.create(weekday=0, opens="09:00", closes="21:00")
    Holiday.objects.create(date="2026-10-01", name="National Day")

    hours = admin_client_logged_in.get("/admin/agents/weeklyhours/")
    holidays = admin_client_logged_in.get("/admin/agents/holiday/")

    assert hours.status_code == 200
    assert "Monday" in hours.content.decode()
    assert holidays.status_code == 200
    assert "National Day" in holidays.content.decode()
