"""The gateway's kept requests in admin (gateway/admin.py): read-only, superusers only, no N+1; and a
key's usage this month on its change page (access/admin.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.forms.models import model_to_dict
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access import keys
from access.models import ApiKey
from conversations.models import Conversation
from cs_platform import roles
from gateway.models import ApiRequest
from tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

LIST = "/admin/gateway/apirequest/"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def issue(name: str = "CRM sidebar", **fields: Any) -> ApiKey:
    return keys.api_key_create(name=name, allowed_models=["support-assistant"], **fields).api_key


def kept(api_key: ApiKey | None, **fields: Any) -> ApiRequest:
    values: dict[str, Any] = {
        "client_ip": "198.51.100.7",
        "model": "support-assistant",
        "served_model": "qwen2.5-vl-7b",
        "mode": ApiRequest.Mode.ASSISTANT,
        "status_code": 200,
        "first_token_ms": 350,
        "duration_ms": 1200,
        "prompt_tokens": 900,
        "completion_tokens": 45,
        "request_id": "req-0001",
        **fields,
    }
    return ApiRequest.objects.create(api_key=api_key, **values)


def superuser_client() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw-root-1")
    client = Client()
    client.force_login(user)
    return client


def change_url(record: ApiRequest) -> str:
    return f"{LIST}{record.pk}/change/"


def listed(page: str, *records: ApiRequest) -> list[bool]:
    return [change_url(record) in page for record in records]


def test_it_lists_each_requests_columns_with_its_key_and_kept_conversation() -> None:
    client = superuser_client()
    api_key = issue()
    conversation: Any = ConversationFactory(channel=Conversation.Channel.API)
    record = kept(api_key, stream=True, client_disconnected=True, conversation=conversation)

    page = client.get(LIST).content.decode()

    for column in (
        "field-created_at",
        "field-key_display",
        "field-client_ip",
        "field-model",
        "field-served_model",
        "field-mode",
        "field-stream",
        "field-status_code",
        "field-error_code",
        "field-first_token_ms",
        "field-duration_ms",
        "field-prompt_tokens",
        "field-completion_tokens",
        "field-client_disconnected",
        "field-conversation_link",
    ):
        assert column in page
    assert f'<td class="field-key_display">CRM sidebar (csk_{api_key.prefix}_…)</td>' in page
    assert '<td class="field-client_ip">198.51.100.7</td>' in page
    assert '<td class="field-served_model">qwen2.5-vl-7b</td>' in page
    assert '<td class="field-first_token_ms">350</td>' in page
    assert '<td class="field-prompt_tokens">900</td>' in page
    assert (
        f'<td class="field-conversation_link"><a href="/admin/conversations/conversation/{conversation.pk}'
        f'/change/">{str(conversation.pk)[:8]}</a></td>'
    ) in page
    assert listed(page, record) == [True]


def test_it_shows_a_request_without_a_conversation_or_whose_key_was_deleted() -> None:
    client = superuser_client()
    api_key = issue()
    kept(api_key)
    api_key.delete()

    page = client.get(LIST).content.decode()

    assert '<td class="field-key_display">(deleted key)</td>' in page
    assert '<td class="field-conversation_link">-</td>' in page


def test_it_shows_a_request_read_only_and_refuses_to_add_change_or_delete_one() -> None:
    client = superuser_client()
    record = kept(issue())
    before = model_to_dict(record)

    view = client.get(change_url(record))
    add = client.get(f"{LIST}add/")
    change = client.post(change_url(record), {"status_code": "500", "model": "other"})
    delete = client.post(f"{LIST}{record.pk}/delete/", {"post": "yes"})
    bulk_delete = client.post(LIST, {"action": "delete_selected", "_selected_action": [record.pk]})

    assert view.status_code == 200
    page = view.content.decode()
    assert 'name="_save"' not in page
    assert 'name="model"' not in page
    assert '<div class="readonly">req-0001</div>' in page
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert 'value="delete_selected"' not in client.get(LIST).content.decode()
    assert bulk_delete.status_code == 200
    record.refresh_from_db()
    assert model_to_dict(record) == before
    assert ApiRequest.objects.count() == 1


@pytest.mark.parametrize("group", [roles.AGENT, roles.SUPERVISOR, roles.MANAGER])
def test_it_refuses_staff_in_every_role_even_with_the_permissions_given_by_hand(group: str) -> None:
    record = kept(issue())
    roles.roles_sync()
    user = User.objects.create_user("sue", password="pw-sue-1", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)

    refused = [client.get(LIST).status_code, client.get(change_url(record)).status_code]
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="gateway"))
    user = User.objects.get(pk=user.pk)  # forget the cached permissions
    client.force_login(user)
    refused_by_hand = [client.get(LIST).status_code, client.get(change_url(record)).status_code]

    assert refused == [403, 403]
    assert refused_by_hand == [403, 403]
    assert "/admin/gateway/" not in client.get("/admin/").content.decode()
    assert ApiRequest.objects.count() == 1


def test_it_filters_by_status_mode_stream_error_code_key_and_date() -> None:
    client = superuser_client()
    crm, bot = issue("CRM sidebar"), issue("Chat bot")
    answered = kept(crm)
    streamed = kept(crm, stream=True, mode=ApiRequest.Mode.PROXY, model="qwen2.5-vl-7b")
    refused = kept(bot, status_code=429, error_code="insufficient_quota", served_model="")
    records = (answered, streamed, refused)
    today = timezone.localdate()

    page = client.get(LIST).content.decode()

    for parameter in (
        "status_code=429",
        "mode__exact=proxy",
        "stream__exact=1",
        "error_code=insufficient_quota",
        "error_code=-",
        "client_disconnected__exact=0",
        f"api_key__id__exact={bot.pk}",
        f"created_at__year={today.year}",
    ):
        assert f'href="?{parameter}"' in page
    assert '<a href="?error_code=-">none</a>' in page
    assert listed(client.get(LIST, {"status_code": "429"}).content.decode(), *records) == [
        False,
        False,
        True,
    ]
    assert listed(client.get(LIST, {"mode__exact": "proxy"}).content.decode(), *records) == [
        False,
        True,
        False,
    ]
    assert listed(client.get(LIST, {"stream__exact": "1"}).content.decode(), *records) == [
        False,
        True,
        False,
    ]
    assert listed(client.get(LIST, {"error_code": "insufficient_quota"}).content.decode(), *records) == [
        False,
        False,
        True,
    ]
    assert listed(client.get(LIST, {"error_code": "-"}).content.decode(), *records) == [True, True, False]
    assert listed(client.get(LIST, {"api_key__id__exact": crm.pk}).content.decode(), *records) == [
        True,
        True,
        False,
    ]
    last_year = client.get(LIST, {"created_at__year": today.year - 1}).content.decode()
    assert listed(last_year, *records) == [False, False, False]


def test_it_finds_a_request_by_its_id_client_ip_model_or_its_keys_prefix_or_name() -> None:
    client = superuser_client()
    crm, bot = issue("CRM sidebar"), issue("Chat bot")
    wanted = kept(crm, request_id="req-wanted", client_ip="203.0.113.50", model="qwen2.5-vl-7b")
    other = kept(bot, request_id="req-other", client_ip="198.51.100.7")

    for term in (
        "req-wanted",
        "203.0.113.50",
        "qwen2.5",
        crm.prefix,
        f"csk_{crm.prefix}_…",
        "CRM sidebar",
    ):
        page = client.get(LIST, {"q": term}).content.decode()
        assert listed(page, wanted, other) == [True, False], term


def test_it_lists_twenty_requests_in_as_many_queries_as_two() -> None:
    client = superuser_client()

    def queries_for_the_list() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(LIST)
        assert response.status_code == 200
        return len(captured)

    for _ in range(2):
        kept(issue(), conversation=ConversationFactory(channel=Conversation.Channel.API))
    two = queries_for_the_list()
    for _ in range(18):
        kept(issue(), conversation=ConversationFactory(channel=Conversation.Channel.API))
    twenty = queries_for_the_list()

    assert ApiRequest.objects.count() == 20
    assert twenty == two


def test_it_shows_a_keys_tokens_this_month_and_links_its_requests(settings: Any) -> None:
    settings.TIME_ZONE = "UTC"
    client = superuser_client()
    api_key, other = issue(monthly_tokens=100000), issue("Other")
    kept(api_key, prompt_tokens=1000, completion_tokens=200)
    kept(api_key, prompt_tokens=30, completion_tokens=None, status_code=502, error_code="upstream_error")
    last_month = kept(api_key, prompt_tokens=5000, completion_tokens=500)
    month_start = timezone.localtime().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ApiRequest.objects.filter(pk=last_month.pk).update(created_at=month_start - timedelta(seconds=1))
    kept(other, prompt_tokens=7000, completion_tokens=700)

    page = client.get(f"/admin/access/apikey/{api_key.pk}/change/").content.decode()
    no_quota = client.get(f"/admin/access/apikey/{other.pk}/change/").content.decode()

    assert (
        '<div class="readonly">1,230 tokens of its monthly quota of 100,000 in 2 request(s) since '
        f'{month_start:%Y-%m-%d} · <a href="/admin/gateway/apirequest/?api_key__id__exact={api_key.pk}">'
        "all its requests</a></div>"
    ) in page
    assert f"7,700 tokens in 1 request(s) since {month_start:%Y-%m-%d} · " in no_quota
    listed_for_key = client.get(LIST, {"api_key__id__exact": api_key.pk}).content.decode()
    assert listed_for_key.count('<td class="field-key_display">') == 3
