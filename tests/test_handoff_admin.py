"""Admin for handoff settings (one row), weekly hours and holidays."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from agents.demo import handoff_demo_load
from agents.models import AgentPresence, CannedReply, HandoffSettings, Holiday, WeeklyHours
from conversations import services
from conversations.events import AGENTS_QUEUE_GROUP, conversation_group
from conversations.models import Conversation, Message, Ticket
from tests import factories
from tests.factories import GroupListener

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
SHANGHAI = ZoneInfo("Asia/Shanghai")


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
        "max_conversations_per_agent": "5",
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


def test_the_settings_form_saves_auto_assignment_and_its_cap(admin_client_logged_in: Client) -> None:
    response = admin_client_logged_in.post(
        "/admin/agents/handoffsettings/add/",
        settings_form(auto_assign_enabled="on", max_conversations_per_agent="3"),
    )

    assert response.status_code == 302
    saved = HandoffSettings.objects.get()
    assert (saved.auto_assign_enabled, saved.max_conversations_per_agent) == (True, 3)


def test_a_cap_of_zero_conversations_is_refused(admin_client_logged_in: Client) -> None:
    response = admin_client_logged_in.post(
        "/admin/agents/handoffsettings/add/",
        settings_form(auto_assign_enabled="on", max_conversations_per_agent="0"),
    )

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["max_conversations_per_agent"]
    assert HandoffSettings.objects.count() == 0


def test_agent_presence_is_listed_and_cannot_be_edited(admin_client_logged_in: Client) -> None:
    agent = get_user_model().objects.create_user(username="presence-agent-qinghe", password="unused-password")
    presence = AgentPresence.objects.create(user=agent, accepting=False)

    listing = admin_client_logged_in.get("/admin/agents/agentpresence/")
    edit = admin_client_logged_in.post(
        f"/admin/agents/agentpresence/{presence.pk}/change/", {"accepting": "on"}
    )

    assert listing.status_code == 200
    assert "presence-agent-qinghe" in listing.content.decode()
    assert edit.status_code == 403
    presence.refresh_from_db()
    assert presence.accepting is False


def test_canned_replies_are_listed_filtered_by_language_and_searched(admin_client_logged_in: Client) -> None:
    CannedReply.objects.create(shortcode="refund", locale="en", title="Refund timeline", text="7 days.")
    CannedReply.objects.create(shortcode="hello", locale="zh-Hans", title="问候", text="您好")

    english = admin_client_logged_in.get("/admin/agents/cannedreply/", {"locale": "en"}).content.decode()
    searched = admin_client_logged_in.get("/admin/agents/cannedreply/", {"q": "您好"}).content.decode()

    assert "Refund timeline" in english
    assert "问候" not in english
    assert "问候" in searched
    assert "Refund timeline" not in searched


def test_a_canned_reply_with_a_space_in_its_shortcode_is_refused(admin_client_logged_in: Client) -> None:
    response = admin_client_logged_in.post(
        "/admin/agents/cannedreply/add/",
        {"shortcode": "two words", "locale": "", "title": "Greeting", "text": "Hello", "is_active": "on"},
    )

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["shortcode"]
    assert CannedReply.objects.count() == 0


# --- conversations' admin actions: timers and notifications -----------------------------------------


def run_action(client: Client, model: str, action: str, *rows: Any) -> Any:
    response: Any = client.post(
        f"/admin/conversations/{model}/",
        {"action": action, "_selected_action": [str(row.pk) for row in rows]},
        follow=True,
    )
    assert response.status_code == 200
    return response


def test_the_resolve_action_records_business_hours_and_tells_the_queue_and_the_customer(
    admin_client_logged_in: Client, frozen_now: Any, django_capture_on_commit_callbacks: Any
) -> None:
    handoff_demo_load()
    # Friday 20:00 to Saturday 10:00 Beijing time: 20:00–21:00 and 09:00–10:00 are open hours.
    frozen_now(datetime(2026, 12, 4, 20, 0, tzinfo=SHANGHAI))
    ticket = services.handoff_request(conversation=ConversationFactory(locale="en"))
    frozen_now(datetime(2026, 12, 5, 10, 0, tzinfo=SHANGHAI))
    queue = GroupListener(AGENTS_QUEUE_GROUP)
    customer = GroupListener(conversation_group(ticket.conversation_id))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            run_action(admin_client_logged_in, "ticket", "resolve_tickets", ticket)
        queue_event, resolved = queue.receive(), customer.receive()
    finally:
        queue.close()
        customer.close()

    ticket.refresh_from_db()
    assert (ticket.status, ticket.resolution_seconds) == (Ticket.Status.RESOLVED, 2 * 3600)
    assert queue_event == {"type": "queue.changed"}
    notice = Message.objects.filter(conversation_id=ticket.conversation_id, role=Message.Role.SYSTEM).last()
    assert notice is not None
    assert notice.text == "The person helping you has finished; the assistant answers again."
    assert (resolved["type"], resolved["conversation"], resolved["csat_requested"]) == (
        "conversation.resolved",
        str(ticket.conversation_id),
        True,
    )
    assert (resolved["message"]["id"], resolved["message"]["text"]) == (notice.pk, notice.text)


def test_the_resolve_action_on_a_resolved_ticket_changes_and_sends_nothing(
    admin_client_logged_in: Client, django_capture_on_commit_callbacks: Any
) -> None:
    ticket = services.handoff_request(conversation=ConversationFactory())
    services.ticket_resolve(ticket=ticket)
    ticket.refresh_from_db()
    before = (ticket.resolved_at, ticket.resolution_seconds)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run_action(admin_client_logged_in, "ticket", "resolve_tickets", ticket)

    ticket.refresh_from_db()
    assert (ticket.resolved_at, ticket.resolution_seconds) == before
    assert callbacks == []


def test_the_close_action_records_each_tickets_time_and_tells_the_queue(
    admin_client_logged_in: Client, frozen_now: Any, django_capture_on_commit_callbacks: Any
) -> None:
    frozen_now(datetime(2026, 12, 4, 10, 0, tzinfo=SHANGHAI))
    ticket = services.handoff_request(conversation=ConversationFactory())
    frozen_now(datetime(2026, 12, 4, 10, 45, tzinfo=SHANGHAI))
    queue = GroupListener(AGENTS_QUEUE_GROUP)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            run_action(admin_client_logged_in, "conversation", "close_conversations", ticket.conversation)
        queue_event = queue.receive()
    finally:
        queue.close()

    ticket.refresh_from_db()
    # No hours saved: always open, so wall-clock time.
    assert (ticket.status, ticket.resolution_seconds) == (Ticket.Status.RESOLVED, 45 * 60)
    assert Conversation.objects.get(pk=ticket.conversation_id).status == Conversation.Status.CLOSED
    assert queue_event == {"type": "queue.changed"}


def test_closing_a_conversation_without_an_open_ticket_tells_no_queue_only_the_customer(
    django_capture_on_commit_callbacks: Any,
) -> None:
    conversation = ConversationFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.conversation_close(conversation=conversation) is True

    # One thing on commit: the customer's frame.
    assert len(callbacks) == 1
    customer = GroupListener(conversation_group(conversation.pk))
    try:
        callbacks[0]()
        event = customer.receive()
    finally:
        customer.close()
    assert event["type"] == "conversation.closed"
    assert event["conversation"] == str(conversation.pk)
    assert (event["message"]["role"], event["message"]["text"]) == ("system", "This conversation was closed.")
