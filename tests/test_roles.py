"""Roles with least privilege: what the Agent, Supervisor and Manager groups may open and change in admin."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.test import Client

from agents.permissions import user_is_agent
from conversations.models import Conversation, Message, Ticket
from cs_platform import roles
from knowledge import services as knowledge_services
from knowledge.models import Article
from tests import factories
from tests.factories import make_user
from tests.test_knowledge_admin import form_data

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

CONVERSATION_LINK = r'href="/admin/conversations/conversation/([0-9a-f-]{36})/change/'


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def group_permissions(name: str) -> set[str]:
    return {
        f"{app_label}.{codename}"
        for app_label, codename in Group.objects.get(name=name).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


def installed(model_label: str) -> bool:
    try:
        apps.get_model(model_label)
    except LookupError:
        return False
    return True


def signed_in(group: str | None, **fields: Any) -> Client:
    client = Client()
    client.force_login(make_user(group, is_staff=True, **fields))
    return client


# --- the table, applied after migrate ---------------------------------------------------------------


def test_the_migrated_database_gives_each_group_exactly_its_table() -> None:
    assert group_permissions("Agent") == {
        "conversations.view_conversation",
        "conversations.view_message",
        "conversations.view_ticket",
    }
    supervisor = group_permissions("Supervisor")
    assert group_permissions("Agent") < supervisor
    assert {
        "knowledge.add_article",
        "knowledge.change_article",
        "knowledge.view_article",
        "knowledge.add_faqentry",
        "knowledge.change_faqentry",
        "agents.add_cannedreply",
        "agents.change_cannedreply",
        "agents.change_handoffsettings",
        "agents.change_weeklyhours",
        "agents.add_holiday",
        "agents.change_holiday",
        "conversations.view_satisfactionrating",
        "conversations.view_feedback",
    } <= supervisor
    assert "knowledge.delete_article" not in supervisor
    manager = group_permissions("Manager")
    assert {
        "conversations.view_conversation",
        "conversations.view_message",
        "conversations.view_ticket",
        "conversations.view_feedback",
        "conversations.view_satisfactionrating",
    } <= manager
    assert all(permission.split(".")[1].startswith("view_") for permission in manager)


def test_only_superusers_hold_the_platforms_settings_and_access() -> None:
    held = set().union(*(group_permissions(name) for name in roles.ROLE_GROUPS))

    for permission in held:
        app_label, codename = permission.split(".")
        assert app_label in {"conversations", "knowledge", "agents", "review", "reports", "safety"}, (
            permission
        )
        assert not codename.endswith(("_assistantprofile", "_retrievalsettings", "_agentpresence")), (
            permission
        )
        assert not codename.endswith(("_chunk", "_embedding")), permission
        # Access rules and API keys: no group is given any permission that mentions them.
        assert "apikey" not in codename
        assert "accessrule" not in codename


@pytest.mark.skipif(not installed("review.ReviewItem"), reason="review.ReviewItem is not installed yet")
def test_supervisors_work_the_review_queue_and_managers_read_it() -> None:
    assert {"review.view_reviewitem", "review.change_reviewitem"} <= group_permissions("Supervisor")
    assert "review.view_reviewitem" in group_permissions("Manager")
    assert "review.change_reviewitem" not in group_permissions("Manager")
    assert not any(permission.startswith("review.") for permission in group_permissions("Agent"))


@pytest.mark.skipif(not installed("reports.DailyStat"), reason="reports.DailyStat is not installed yet")
def test_managers_read_the_report_aggregates() -> None:
    assert "reports.view_dailystat" in group_permissions("Manager")
    assert not any(permission.startswith("reports.") for permission in group_permissions("Agent"))


def test_a_second_sync_changes_nothing() -> None:
    before = {name: group_permissions(name) for name in roles.ROLE_GROUPS}

    first = roles.roles_sync()
    second = roles.roles_sync()

    assert first.granted == second.granted
    assert {name: group_permissions(name) for name in roles.ROLE_GROUPS} == before
    assert Group.objects.filter(name__in=roles.ROLE_GROUPS).count() == 3


def test_it_skips_models_not_installed_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {**roles.ROLE_PERMISSIONS[roles.MANAGER], "nosuchapp.widget": ("view",)}
    monkeypatch.setitem(roles.ROLE_PERMISSIONS, roles.MANAGER, table)

    report = roles.roles_sync()

    assert "nosuchapp.view_widget" in report.missing
    assert "nosuchapp.view_widget" not in report.granted[roles.MANAGER]
    assert "conversations.view_conversation" in group_permissions("Manager")


def test_migrate_puts_back_a_permission_taken_and_takes_away_one_added() -> None:
    manager = Group.objects.get(name="Manager")
    manager.permissions.add(Permission.objects.get(codename="change_article"))
    manager.permissions.remove(Permission.objects.get(codename="view_ticket"))
    Group.objects.filter(name="Supervisor").delete()

    call_command("migrate", verbosity=0, interactive=False)

    assert "knowledge.change_article" not in group_permissions("Manager")
    assert "conversations.view_ticket" in group_permissions("Manager")
    assert "knowledge.change_article" in group_permissions("Supervisor")


def test_every_role_may_use_the_console() -> None:
    for group in roles.ROLE_GROUPS:
        assert user_is_agent(make_user(group, is_staff=True))


# --- admin pages per role ------------------------------------------------------------------------------

ALL_ROLES = ("Agent", "Supervisor", "Manager")
PAGES: list[tuple[str, set[str]]] = [
    # (path, the roles that get 200; the others get 403)
    ("/admin/", set(ALL_ROLES)),
    ("/admin/conversations/conversation/", set(ALL_ROLES)),
    ("/admin/conversations/message/", set(ALL_ROLES)),
    ("/admin/conversations/ticket/", set(ALL_ROLES)),
    ("/admin/conversations/feedback/", {"Supervisor", "Manager"}),
    ("/admin/conversations/satisfactionrating/", {"Supervisor", "Manager"}),
    ("/admin/conversations/attachment/", {"Supervisor", "Manager"}),
    ("/admin/knowledge/article/", {"Supervisor"}),
    ("/admin/knowledge/article/add/", {"Supervisor"}),
    ("/admin/knowledge/faqentry/add/", {"Supervisor"}),
    ("/admin/knowledge/indexbuild/", {"Supervisor"}),
    ("/admin/agents/cannedreply/add/", {"Supervisor"}),
    ("/admin/agents/holiday/add/", {"Supervisor"}),
    ("/admin/agents/weeklyhours/", {"Supervisor"}),
    ("/admin/safety/blockedterm/", {"Supervisor", "Manager"}),
    ("/admin/safety/blockedterm/add/", {"Supervisor"}),
    ("/admin/knowledge/retrievalsettings/", set()),
    ("/admin/inference/assistantprofile/", set()),
    ("/admin/agents/agentpresence/", set()),
    ("/admin/auth/user/", set()),
    ("/admin/auth/group/", set()),
    ("/admin/auth/user/add/", set()),
]


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize(("path", "allowed"), PAGES)
def test_each_role_opens_only_its_admin_pages(role: str, path: str, allowed: set[str]) -> None:
    response = signed_in(role).get(path)

    assert response.status_code == (200 if role in allowed else 403)


@pytest.mark.skipif(not installed("review.ReviewItem"), reason="review.ReviewItem is not installed yet")
@pytest.mark.parametrize(("role", "status"), [("Agent", 403), ("Supervisor", 200), ("Manager", 200)])
def test_the_review_queue_opens_for_supervisors_and_managers(role: str, status: int) -> None:
    assert signed_in(role).get("/admin/review/reviewitem/").status_code == status


def test_a_user_without_the_staff_flag_is_sent_to_the_login_page() -> None:
    client = Client()
    client.force_login(make_user("Supervisor", is_staff=False))

    response = client.get("/admin/knowledge/article/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_admin_index_lists_only_what_the_role_may_see() -> None:
    page = signed_in("Agent").get("/admin/").content.decode()

    assert "/admin/conversations/conversation/" in page
    assert "/admin/knowledge/article/" not in page
    assert "/admin/auth/user/" not in page


# --- an agent reads its tickets' transcripts only ----------------------------------------------------


@pytest.fixture
def four_conversations() -> dict[str, Any]:
    """mine (its ticket is the agent's), theirs (a colleague's), untouched (no ticket) and handed_on
    (the agent answered in it, then the ticket went to the colleague)."""
    agent = make_user("Agent", username="lin-test", is_staff=True)
    colleague = make_user("Agent", username="sam-test", is_staff=True)
    mine = ConversationFactory()
    MessageFactory(conversation=mine, text="Mine: parcel")
    Ticket.objects.create(conversation=mine, assignee=agent, status=Ticket.Status.ASSIGNED)
    theirs = ConversationFactory()
    MessageFactory(conversation=theirs, text="Theirs: parcel")
    Ticket.objects.create(conversation=theirs, assignee=colleague, status=Ticket.Status.ASSIGNED)
    untouched = ConversationFactory()
    MessageFactory(conversation=untouched, text="Untouched: parcel")
    handed_on = ConversationFactory()
    MessageFactory(conversation=handed_on, text="Handed on: parcel")
    MessageFactory(conversation=handed_on, role=Message.Role.AGENT, author=agent, text="Looking into it.")
    Ticket.objects.create(conversation=handed_on, assignee=colleague, status=Ticket.Status.ASSIGNED)
    return {
        "agent": agent,
        "mine": mine,
        "theirs": theirs,
        "untouched": untouched,
        "handed_on": handed_on,
    }


def listed_conversations(client: Client, query: str = "") -> set[str]:
    page = client.get(f"/admin/conversations/conversation/{query}").content.decode()
    return (
        set(re.findall(CONVERSATION_LINK, page.split('id="result_list"')[1]))
        if "result_list" in page
        else set()
    )


def test_an_agent_lists_only_the_conversations_of_the_tickets_it_holds_or_held(
    client: Client, four_conversations: dict[str, Any]
) -> None:
    rows = four_conversations
    client.force_login(rows["agent"])

    assert listed_conversations(client) == {str(rows["mine"].pk), str(rows["handed_on"].pk)}
    # Search looks only among them too.
    assert listed_conversations(client, "?q=parcel") == {str(rows["mine"].pk), str(rows["handed_on"].pk)}


def test_an_agent_cannot_open_another_agents_transcript(
    client: Client, four_conversations: dict[str, Any]
) -> None:
    rows = four_conversations
    client.force_login(rows["agent"])

    mine = client.get(f"/admin/conversations/conversation/{rows['mine'].pk}/change/")
    theirs = client.get(f"/admin/conversations/conversation/{rows['theirs'].pk}/change/")

    assert mine.status_code == 200
    assert "Mine: parcel" in mine.content.decode()
    # Admin answers a row outside the user's queryset as missing: back to the index, nothing shown.
    assert theirs.status_code == 302
    assert "Theirs: parcel" not in client.get(theirs["Location"]).content.decode()


def test_an_agent_sees_only_its_conversations_messages_and_tickets(
    client: Client, four_conversations: dict[str, Any]
) -> None:
    rows = four_conversations
    client.force_login(rows["agent"])

    messages = client.get("/admin/conversations/message/").content.decode()
    tickets = client.get("/admin/conversations/ticket/").content.decode()

    assert "Mine: parcel" in messages
    assert "Handed on: parcel" in messages
    assert "Theirs: parcel" not in messages
    assert "Untouched: parcel" not in messages
    ticket_conversations = set(
        re.findall(r'href="/admin/conversations/conversation/([0-9a-f-]{36})/', tickets)
    )
    assert ticket_conversations == {str(rows["mine"].pk), str(rows["handed_on"].pk)}


@pytest.mark.parametrize("role", ["Supervisor", "Manager"])
def test_supervisors_and_managers_read_every_conversation(
    role: str, four_conversations: dict[str, Any]
) -> None:
    assert len(listed_conversations(signed_in(role))) == 4


def test_an_agent_who_is_also_a_supervisor_reads_every_conversation(
    four_conversations: dict[str, Any],
) -> None:
    agent: User = four_conversations["agent"]
    agent.groups.add(Group.objects.get(name="Supervisor"))
    client = Client()
    client.force_login(agent)

    assert len(listed_conversations(client)) == 4


# --- a manager changes nothing; a supervisor edits the knowledge base --------------------------------


def test_a_manager_can_change_nothing_in_admin() -> None:
    client = signed_in("Manager")
    conversation: Conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="Hello")
    ticket = Ticket.objects.create(conversation=conversation, reason="Wants a person")
    article = knowledge_services.article_save(
        article=Article(slug="returns", title="Returns", body="Within 30 days.", locale="en"), user=None
    )

    changelist = client.get("/admin/conversations/conversation/").content.decode()
    ticket_page = client.get(f"/admin/conversations/ticket/{ticket.pk}/change/")
    posted_ticket = client.post(
        f"/admin/conversations/ticket/{ticket.pk}/change/", {"reason": "Changed", "assignee": ""}
    )
    closed = client.post(
        "/admin/conversations/conversation/",
        {"action": "close_conversations", "_selected_action": [str(conversation.pk)]},
    )
    posted_article = client.post(f"/admin/knowledge/article/{article.pk}/change/", {"title": "Changed"})

    assert "close_conversations" not in changelist
    assert ticket_page.status_code == 200
    assert 'name="reason"' not in ticket_page.content.decode()
    assert posted_ticket.status_code == 403
    assert posted_article.status_code == 403
    assert closed.status_code in {200, 302}
    ticket.refresh_from_db()
    conversation.refresh_from_db()
    article.refresh_from_db()
    assert (ticket.reason, conversation.status, article.title) == ("Wants a person", "open", "Returns")


def test_a_supervisor_edits_an_article_as_a_new_version() -> None:
    client = signed_in("Supervisor", username="mei-test")
    article = knowledge_services.article_save(
        article=Article(slug="returns", title="Returns", body="Within 30 days.", locale="en"), user=None
    )
    url = f"/admin/knowledge/article/{article.pk}/change/"

    response = client.post(url, form_data(client, url, body="Within 60 days."))

    assert response.status_code == 302
    article.refresh_from_db()
    assert (article.body, article.version, getattr(article.updated_by, "username", None)) == (
        "Within 60 days.",
        2,
        "mei-test",
    )
    # No delete: an article leaves the knowledge base by being unpublished.
    assert client.get(f"/admin/knowledge/article/{article.pk}/delete/").status_code == 403
