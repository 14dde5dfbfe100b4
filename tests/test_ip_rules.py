"""IP rules per scope (DESIGN.md, Access): matching, precedence and defaults, the per-process cache,
`manage.py ip_rule`, admin for superusers only, and enforcement over HTTP and websockets."""

from __future__ import annotations

import ipaddress
import re
import threading
import uuid
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, Permission, User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.test import Client

from access import services
from access.models import IpRule
from access.networks import network_parse
from access.rules import (
    EMPTY_RULES,
    Reason,
    RuleCache,
    RuleSet,
    Scope,
    ip_verdict,
    rule_cache,
    rules_read,
    scope_for_path,
)
from cs_platform import roles
from cs_platform.asgi import application

PUBLIC = "203.0.113.9"
OTHER_PUBLIC = "198.51.100.7"
PRIVATE = "10.1.2.3"
PROXY = "10.0.0.2"


@pytest.fixture(autouse=True)
def _fresh_rule_cache(settings: Any) -> Iterator[None]:
    """Each test reads the rules of its own database: none cached from another test, none left after it
    (a rule a test added is rolled back without a signal, and must not refuse the next test's client)."""
    settings.TRUSTED_PROXIES = []
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1/32", "::1/128"]
    settings.METRICS_TOKEN = ""
    rule_cache.invalidate()
    yield
    rule_cache.invalidate()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def rules(*rows: tuple[str, str, str]) -> RuleSet:
    """A rule set from (scope, action, cidr) rows, numbered from 1, without the database."""
    return RuleSet.build((number, *row) for number, row in enumerate(rows, 1))


def rule_add(scope: str, cidr: str, *, deny: bool = False, note: str = "") -> IpRule:
    return services.ip_rule_create(
        scope=scope, cidr=cidr, action=IpRule.Action.DENY if deny else IpRule.Action.ALLOW, note=note
    )


def command(*args: str) -> str:
    out = StringIO()
    call_command("ip_rule", *args, stdout=out)
    return out.getvalue()


# --- Networks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("2001:DB8::7", "2001:db8::7/128"),
        ("2001:db8:0:0::/32", "2001:db8::/32"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:192.0.2.1", "192.0.2.1/32"),
        ("192.168.0.0/255.255.0.0", "192.168.0.0/16"),
    ],
)
def test_it_stores_a_network_in_one_normal_form(written: str, stored: str) -> None:
    assert str(network_parse(written)) == stored


@pytest.mark.parametrize("written", ["", "10.0.0.300", "10.0.0.0/33", "example.com", "fe80::1%eth0", "1.2.3"])
def test_it_refuses_what_is_not_a_network_with_a_sentence(written: str) -> None:
    with pytest.raises(ValueError, match=re.escape("203.0.113.7, 10.0.0.0/8 or 2001:db8::/32")):
        network_parse(written)


@pytest.mark.django_db
def test_the_model_validates_and_normalises_the_network() -> None:
    rule = IpRule(scope=IpRule.Scope.STAFF, cidr="192.0.2.1")
    rule.full_clean()
    assert rule.cidr == "192.0.2.1/32"

    with pytest.raises(ValidationError) as error:
        IpRule(scope=IpRule.Scope.STAFF, cidr="192.0.2.256").full_clean()
    assert "is not an IP address or network" in str(error.value.message_dict["cidr"])


# --- Which scope a path is in ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/chat/", Scope.WIDGET),
        ("/api/widget/conversations", Scope.WIDGET),
        ("/ws/conversations/5b0c4c0e-0000-4000-8000-000000000000/", Scope.WIDGET),
        ("/kb/", Scope.WIDGET),
        ("/kb/returns/", Scope.WIDGET),
        ("/v1/chat/completions", Scope.API),
        ("/v1", Scope.API),
        ("/admin/", Scope.STAFF),
        ("/admin", Scope.STAFF),
        ("/admin/login/", Scope.STAFF),
        ("/agent/", Scope.STAFF),
        ("/api/agent/session", Scope.STAFF),
        ("/reports/", Scope.STAFF),
        ("/reports/export/daily.csv", Scope.STAFF),
        ("/api/reports/summary", Scope.STAFF),
        ("/ws/agent/", Scope.STAFF),
        ("/metrics", Scope.METRICS),
        ("/metrics/", Scope.METRICS),
        ("/healthz", None),
        ("/readyz", None),
        ("/static/widget/embed.js", None),
        ("/favicon.ico", None),
        ("/", None),
        ("/administrator", None),
        ("/v10/", None),
    ],
)
def test_each_path_is_in_its_scope(path: str, scope: Scope | None) -> None:
    assert scope_for_path(path) == scope


# --- Verdicts: precedence and defaults -------------------------------------------------------------


def test_a_matching_deny_rule_refuses_even_an_address_an_allow_rule_admits() -> None:
    rule_set = rules(("staff", "allow", "10.0.0.0/8"), ("staff", "deny", "10.1.2.0/24"))

    assert ip_verdict(scope="staff", address="10.1.2.3", rules=rule_set).reason is Reason.DENY_RULE
    assert ip_verdict(scope="staff", address="10.1.2.3", rules=rule_set).rule_id == 2
    admitted = ip_verdict(scope="staff", address="10.9.9.9", rules=rule_set)
    assert (admitted.admitted, admitted.reason, admitted.rule_id) == (True, Reason.ALLOW_RULE, 1)


def test_a_deny_rule_refuses_what_the_default_would_admit() -> None:
    rule_set = rules(("widget", "deny", OTHER_PUBLIC), ("staff", "deny", "127.0.0.1"))

    assert not ip_verdict(scope="widget", address=OTHER_PUBLIC, rules=rule_set).admitted
    assert ip_verdict(scope="widget", address=PUBLIC, rules=rule_set).admitted
    assert not ip_verdict(scope="staff", address="127.0.0.1", rules=rule_set).admitted
    assert ip_verdict(scope="staff", address="127.0.0.2", rules=rule_set).admitted


def test_a_scope_with_an_allow_rule_admits_only_matching_addresses() -> None:
    rule_set = rules(("widget", "allow", "192.0.2.0/24"))

    assert ip_verdict(scope="widget", address="192.0.2.200", rules=rule_set).admitted
    refused = ip_verdict(scope="widget", address=PUBLIC, rules=rule_set)
    assert (refused.admitted, refused.reason) == (False, Reason.NOT_IN_ALLOW_RULES)
    # Even loopback: the allow list is the whole list.
    assert not ip_verdict(scope="widget", address="127.0.0.1", rules=rule_set).admitted
    # Other scopes keep their defaults.
    assert ip_verdict(scope="api", address=PUBLIC, rules=rule_set).admitted


def test_deny_rules_alone_leave_the_scopes_default_in_place() -> None:
    rule_set = rules(("staff", "deny", "10.9.0.0/16"))

    assert ip_verdict(scope="staff", address=PRIVATE, rules=rule_set).reason is Reason.DEFAULT_PRIVATE
    assert not ip_verdict(scope="staff", address=PUBLIC, rules=rule_set).admitted


@pytest.mark.parametrize("scope", ["widget", "api"])
def test_with_no_rules_the_widget_and_the_gateway_are_open(scope: str) -> None:
    for address in (PUBLIC, "2001:db8::1", PRIVATE, "127.0.0.1", None):
        verdict = ip_verdict(scope=scope, address=address, rules=EMPTY_RULES)
        assert (verdict.admitted, verdict.reason) == (True, Reason.DEFAULT_OPEN)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1", "fd12::1"],
)
def test_with_no_rules_staff_admits_loopback_and_private_addresses(address: str) -> None:
    verdict = ip_verdict(scope="staff", address=address, rules=EMPTY_RULES)
    assert (verdict.admitted, verdict.reason) == (True, Reason.DEFAULT_PRIVATE)


@pytest.mark.parametrize(
    "address",
    [PUBLIC, "172.32.0.1", "192.169.0.1", "169.254.1.1", "fe80::1", "100.64.0.1", "2001:db8::1", "8.8.8.8"],
)
def test_with_no_rules_staff_refuses_public_and_link_local_addresses(address: str) -> None:
    verdict = ip_verdict(scope="staff", address=address, rules=EMPTY_RULES)
    assert (verdict.admitted, verdict.reason) == (False, Reason.DEFAULT_NOT_PRIVATE)


def test_with_no_metrics_allow_rule_the_metrics_settings_decide() -> None:
    verdict = ip_verdict(scope="metrics", address=PUBLIC, rules=rules(("metrics", "deny", OTHER_PUBLIC)))
    assert (verdict.admitted, verdict.reason) == (True, Reason.METRICS_SETTINGS)


def test_an_unknown_address_is_refused_where_only_known_ones_are_admitted() -> None:
    with_allow = rules(("widget", "allow", "0.0.0.0/0"), ("widget", "allow", "::/0"))

    assert ip_verdict(scope="widget", address=None, rules=with_allow).reason is Reason.UNKNOWN_ADDRESS
    assert ip_verdict(scope="staff", address=None, rules=EMPTY_RULES).reason is Reason.UNKNOWN_ADDRESS
    assert not ip_verdict(scope="staff", address="not-an-address", rules=EMPTY_RULES).admitted
    # A deny rule cannot match what is unknown; an open scope stays open.
    assert ip_verdict(scope="widget", address=None, rules=rules(("widget", "deny", "0.0.0.0/0"))).admitted


def test_ipv6_rules_match_ipv6_addresses_and_never_ipv4_ones() -> None:
    rule_set = rules(("staff", "allow", "2001:db8:1::/48"), ("widget", "deny", "::/0"))

    assert ip_verdict(scope="staff", address="2001:db8:1:ffff::5", rules=rule_set).admitted
    assert not ip_verdict(scope="staff", address="2001:db8:2::5", rules=rule_set).admitted
    assert not ip_verdict(scope="staff", address="10.0.0.1", rules=rule_set).admitted
    assert not ip_verdict(scope="widget", address="2001:db8:2::5", rules=rule_set).admitted
    assert ip_verdict(scope="widget", address=PUBLIC, rules=rule_set).admitted


def test_an_ipv4_mapped_address_is_matched_by_the_ipv4_rule() -> None:
    rule_set = rules(("widget", "deny", "198.51.100.0/24"), ("staff", "allow", "::ffff:192.0.2.0/120"))

    assert not ip_verdict(scope="widget", address="::ffff:198.51.100.7", rules=rule_set).admitted
    assert ip_verdict(scope="staff", address="192.0.2.9", rules=rule_set).admitted
    assert ip_verdict(scope="staff", address="::ffff:192.0.2.9", rules=rule_set).admitted


@pytest.mark.django_db
def test_disabled_rules_are_not_applied() -> None:
    deny = rule_add("widget", OTHER_PUBLIC, deny=True)
    allow = rule_add("staff", "192.0.2.0/24")
    services.ip_rule_set_enabled(rule_id=deny.pk, enabled=False)
    services.ip_rule_set_enabled(rule_id=allow.pk, enabled=False)

    rule_set = rules_read()

    assert rule_set == EMPTY_RULES
    assert ip_verdict(scope="widget", address=OTHER_PUBLIC, rules=rule_set).admitted
    assert ip_verdict(scope="staff", address=PRIVATE, rules=rule_set).admitted


@pytest.mark.django_db
def test_a_row_with_an_unreadable_network_is_skipped_and_the_others_apply(caplog: Any) -> None:
    rule_add("widget", OTHER_PUBLIC, deny=True)
    IpRule.objects.bulk_create([IpRule(scope="widget", cidr="bogus", action="deny")])

    rule_set = rules_read()

    assert [rule.network for rule in rule_set.deny["widget"]] == [ipaddress.ip_network(f"{OTHER_PUBLIC}/32")]
    assert "unreadable network 'bogus'" in caplog.text


# --- The cache -------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingReader:
    def __init__(self, *results: RuleSet | Exception) -> None:
        self.results = list(results)
        self.calls = 0

    def __call__(self) -> RuleSet:
        self.calls += 1
        result = self.results[min(self.calls, len(self.results)) - 1]
        if isinstance(result, Exception):
            raise result
        return result


def test_the_cache_reads_the_rules_at_most_once_per_interval(settings: Any) -> None:
    settings.IP_RULES_CACHE_SECONDS = 5
    first, second = rules(("staff", "deny", "127.0.0.1")), rules(("staff", "deny", "127.0.0.2"))
    clock, reader = FakeClock(), CountingReader(first, second)
    cache = RuleCache(reader=reader, clock=clock)

    assert cache.current_if_fresh() is None  # never read: due
    assert cache.current() is first
    clock.now += 4.9
    assert cache.current() is first
    assert cache.current_if_fresh() is first
    assert reader.calls == 1
    clock.now += 0.1
    assert cache.current_if_fresh() is None
    assert cache.current() is second
    assert reader.calls == 2


def test_an_invalidated_cache_reads_again_at_once(settings: Any) -> None:
    settings.IP_RULES_CACHE_SECONDS = 5
    first, second = rules(("api", "deny", PUBLIC)), EMPTY_RULES
    reader = CountingReader(first, second)
    cache = RuleCache(reader=reader, clock=FakeClock())

    assert cache.current() is first
    cache.invalidate()
    assert cache.current() is second
    assert reader.calls == 2


def test_a_failed_read_keeps_the_rules_read_before_and_is_tried_again_later(
    settings: Any, caplog: Any
) -> None:
    settings.IP_RULES_CACHE_SECONDS = 5
    first, third = rules(("widget", "deny", PUBLIC)), EMPTY_RULES
    clock, reader = FakeClock(), CountingReader(first, OperationalError("database is down"), third)
    cache = RuleCache(reader=reader, clock=clock)
    assert cache.current() is first

    clock.now += 5
    assert cache.current() is first
    assert "IP rules could not be read (OperationalError: database is down); keeping the rules" in caplog.text
    # The failure is not retried on every request, but after the interval again.
    clock.now += 1
    assert cache.current() is first
    assert reader.calls == 2
    clock.now += 4
    assert cache.current() is third


def test_a_process_that_never_read_the_rules_applies_the_defaults(settings: Any, caplog: Any) -> None:
    settings.IP_RULES_CACHE_SECONDS = 5
    cache = RuleCache(reader=CountingReader(OperationalError("no database")), clock=FakeClock())

    rule_set = cache.current()

    assert rule_set is EMPTY_RULES
    assert "applying the defaults" in caplog.text
    assert not ip_verdict(scope="staff", address=PUBLIC, rules=rule_set).admitted
    assert ip_verdict(scope="staff", address=PRIVATE, rules=rule_set).admitted
    assert ip_verdict(scope="widget", address=PUBLIC, rules=rule_set).admitted


def test_threads_asking_at_once_cause_one_read(settings: Any) -> None:
    settings.IP_RULES_CACHE_SECONDS = 5
    release = threading.Event()
    started = threading.Event()
    loaded = rules(("staff", "deny", PUBLIC))
    calls: list[int] = []

    def slow_reader() -> RuleSet:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return loaded

    cache = RuleCache(reader=slow_reader, clock=FakeClock())
    results: list[RuleSet] = []
    threads = [threading.Thread(target=lambda: results.append(cache.current())) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert started.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)

    assert calls == [1]
    # None of them went on without rules: with none read yet, they waited for the one read.
    assert results == [loaded] * 8


@pytest.mark.django_db
def test_a_rule_saved_or_deleted_in_this_process_applies_at_once(settings: Any) -> None:
    settings.IP_RULES_CACHE_SECONDS = 3600
    assert rule_cache.current() == EMPTY_RULES

    rule = rule_add("widget", OTHER_PUBLIC, deny=True)
    assert not ip_verdict(scope="widget", address=OTHER_PUBLIC, rules=rule_cache.current()).admitted

    services.ip_rule_delete(rule_id=rule.pk)
    assert ip_verdict(scope="widget", address=OTHER_PUBLIC, rules=rule_cache.current()).admitted


# --- manage.py ip_rule ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_adds_lists_disables_enables_and_removes_rules() -> None:
    added = command("add", "--scope", "staff", "--cidr", "192.0.2.1", "--deny", "--note", "old VPN exit")
    command("add", "--scope", "Widget", "--cidr", "2001:db8::/32", "--note", "office")

    deny = IpRule.objects.get(scope="staff")
    allow = IpRule.objects.get(scope="widget")
    assert f"Added IP rule {deny.pk}: deny 192.0.2.1/32 on staff." in added
    assert (deny.action, deny.cidr, deny.note, deny.enabled) == ("deny", "192.0.2.1/32", "old VPN exit", True)
    assert (allow.action, allow.cidr, allow.created_by) == ("allow", "2001:db8::/32", None)

    listing = command("list").splitlines()
    assert listing[0].split() == ["ID", "SCOPE", "ACTION", "CIDR", "ENABLED", "NOTE"]
    assert listing[1].split() == [str(deny.pk), "staff", "deny", "192.0.2.1/32", "yes", "old", "VPN", "exit"]
    assert listing[2].split() == [str(allow.pk), "widget", "allow", "2001:db8::/32", "yes", "office"]
    # The columns line up: each starts where its heading does.
    assert listing[1].index("192.0.2.1/32") == listing[0].index("CIDR") == listing[2].index("2001:db8::/32")
    assert command("list", "--scope", "widget").splitlines()[1:] == [listing[2]]

    assert f"Disabled IP rule {deny.pk}" in command("disable", str(deny.pk))
    assert not IpRule.objects.get(pk=deny.pk).enabled
    assert command("list").splitlines()[1].split()[4] == "no"
    assert f"Enabled IP rule {deny.pk}" in command("enable", str(deny.pk))
    assert IpRule.objects.get(pk=deny.pk).enabled

    assert f"Removed IP rule {deny.pk}: deny 192.0.2.1/32 (staff)" in command("remove", str(deny.pk))
    assert list(IpRule.objects.values_list("pk", flat=True)) == [allow.pk]


@pytest.mark.django_db
def test_the_command_says_what_the_defaults_are_when_there_are_no_rules() -> None:
    assert "No IP rules: the widget and the api are open" in command("list")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["add", "--scope", "intranet", "--cidr", "10.0.0.0/8"],
            "Unknown scope 'intranet': choose one of widget",
        ),
        (["add", "--scope", "staff", "--cidr", "10.0.0.256"], "'10.0.0.256' is not an IP address or network"),
        (["add", "--scope", "staff", "--cidr", ""], "Write an IPv4 or IPv6 address or network"),
        (
            ["add", "--scope", "staff", "--cidr", "10.0.0.0/8", "--deny", "--allow"],
            "not allowed with argument",
        ),
        (["add", "--cidr", "10.0.0.0/8"], "the following arguments are required: --scope"),
        (["list", "--scope", "nope"], "Unknown scope 'nope'"),
        (["remove", "999999"], "There is no IP rule 999999"),
        (["enable", "999999"], "There is no IP rule 999999"),
        (["disable", "999999"], "There is no IP rule 999999"),
        (["remove", "seven"], "invalid int value: 'seven'"),
        (["rename", "1"], "invalid choice: 'rename'"),
    ],
)
def test_the_command_refuses_bad_input_with_a_sentence(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        command(*args)
    assert not IpRule.objects.exists()


@pytest.mark.django_db
def test_the_command_refuses_a_rule_that_exists_already_and_says_which() -> None:
    rule = rule_add("staff", "192.0.2.0/24", deny=True)
    services.ip_rule_set_enabled(rule_id=rule.pk, enabled=False)

    with pytest.raises(CommandError, match=rf"Rule {rule.pk} already says this.*ip_rule enable {rule.pk}"):
        command("add", "--scope", "staff", "--cidr", "192.0.2.7/24", "--deny")
    assert IpRule.objects.count() == 1


# --- Admin: superusers only -----------------------------------------------------------------------


def superuser_client() -> tuple[Client, User]:
    user = User.objects.create_superuser("root", "root@example.com", "pw-root-1")
    client = Client()
    client.force_login(user)
    return client, user


def supervisor_client(*, with_permissions: bool = False) -> Client:
    roles.roles_sync()
    user = User.objects.create_user("sue", password="pw-sue-1", is_staff=True)
    user.groups.add(Group.objects.get(name=roles.SUPERVISOR))
    if with_permissions:
        # Given by hand: still no way in.
        user.user_permissions.add(*Permission.objects.filter(content_type__app_label="access"))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_a_superuser_lists_the_rules_with_their_fields_and_the_switch() -> None:
    client, _ = superuser_client()
    rule = rule_add("staff", "192.0.2.0/24", deny=True, note="contractor range")

    page = client.get("/admin/access/iprule/").content.decode()

    for column in ("field-cidr", "field-scope", "field-action", "field-enabled", "field-note"):
        assert column in page
    assert "contractor range" in page
    assert f'name="form-0-id" value="{rule.pk}"' in page
    assert 'name="form-0-enabled"' in page  # list_editable: the switch is a checkbox in the list
    for parameter in ("scope__exact=staff", "action__exact=deny", "enabled__exact=1"):  # the filters
        assert f'href="?{parameter}"' in page


@pytest.mark.django_db
def test_a_superuser_switches_a_rule_off_in_the_list() -> None:
    client, _ = superuser_client()
    rule = rule_add("widget", OTHER_PUBLIC, deny=True)

    response = client.post(
        "/admin/access/iprule/",
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": str(rule.pk),
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    assert not IpRule.objects.get(pk=rule.pk).enabled
    assert ip_verdict(scope="widget", address=OTHER_PUBLIC, rules=rule_cache.current()).admitted


@pytest.mark.django_db
def test_a_superuser_adds_a_rule_stored_normalised_and_signed() -> None:
    client, user = superuser_client()

    response = client.post(
        "/admin/access/iprule/add/",
        {"scope": "staff", "action": "allow", "cidr": " 192.0.2.1 ", "note": "jump host", "enabled": "on"},
    )

    assert response.status_code == 302
    rule = IpRule.objects.get()
    assert (rule.cidr, rule.created_by, rule.enabled) == ("192.0.2.1/32", user, True)


@pytest.mark.django_db
def test_admin_shows_a_clear_error_for_a_bad_network_and_saves_nothing() -> None:
    client, _ = superuser_client()

    response = client.post(
        "/admin/access/iprule/add/",
        {"scope": "staff", "action": "deny", "cidr": "10.0.0.0/40", "note": "", "enabled": "on"},
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "&#x27;10.0.0.0/40&#x27; is not an IP address or network; write an IPv4 or IPv6" in page
    assert not IpRule.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("with_permissions", [False, True])
def test_a_supervisor_cannot_see_or_change_the_rules(with_permissions: bool) -> None:
    client = supervisor_client(with_permissions=with_permissions)
    rule = rule_add("widget", "192.0.2.0/24")

    assert client.get("/admin/access/iprule/").status_code == 403
    assert client.get(f"/admin/access/iprule/{rule.pk}/change/").status_code == 403
    assert client.get("/admin/access/iprule/add/").status_code == 403
    assert client.post(f"/admin/access/iprule/{rule.pk}/delete/", {"post": "yes"}).status_code == 403
    index = client.get("/admin/")
    assert index.status_code == 200
    assert "/admin/access/" not in index.content.decode()
    assert IpRule.objects.filter(pk=rule.pk).exists()


@pytest.mark.django_db
def test_no_role_group_holds_a_permission_on_ip_rules() -> None:
    roles.roles_sync()

    assert not Permission.objects.filter(content_type__app_label="access", group__isnull=False).exists()


# --- Websockets ------------------------------------------------------------------------------------


async def socket_from(
    path: str, address: str | None, *, forwarded_for: str | None = None
) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost")]
    if forwarded_for is not None:
        headers.append((b"x-forwarded-for", forwarded_for.encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    communicator.scope["client"] = [address, 50123] if address is not None else None
    return communicator


async def assert_socket_refused(communicator: WebsocketCommunicator) -> None:
    """Accepted, then closed with 4403: the code reaches the client (a close before the accept would be
    an HTTP 403 to the handshake, which a browser reports as 1006)."""
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}
    await communicator.wait(timeout=5)


def conversation_path() -> str:
    return f"/ws/conversations/{uuid.uuid4()}/"


@pytest.mark.django_db(transaction=True)
async def test_websocket_a_denied_address_is_closed_with_4403_on_each_scope() -> None:
    await services_add("widget", OTHER_PUBLIC, deny=True)
    await services_add("staff", "127.0.0.1/32", deny=True)

    await assert_socket_refused(await socket_from(conversation_path(), OTHER_PUBLIC))
    await assert_socket_refused(await socket_from("/ws/agent/", "127.0.0.1"))
    await assert_socket_refused(await socket_from("/ws/agent/", PUBLIC))  # staff's default


@pytest.mark.django_db(transaction=True)
async def test_websocket_an_admitted_address_reaches_the_consumer() -> None:
    await services_add("widget", OTHER_PUBLIC, deny=True)

    customer = await socket_from(conversation_path(), PUBLIC)
    connected, _ = await customer.connect()
    assert connected
    assert await customer.receive_nothing(timeout=0.2)  # open, waiting for its hello
    await customer.disconnect()

    # The console's own check answers (4401: no session), not the IP rules.
    agent = await socket_from("/ws/agent/", PRIVATE)
    connected, _ = await agent.connect()
    assert connected
    assert (await agent.receive_output(timeout=5))["code"] == 4401


@pytest.mark.django_db(transaction=True)
async def test_websocket_forwarded_for_counts_only_from_a_trusted_proxy(settings: Any) -> None:
    settings.TRUSTED_PROXIES = [f"{PROXY}/32"]

    await assert_socket_refused(await socket_from("/ws/agent/", PROXY, forwarded_for=PUBLIC))
    await assert_socket_refused(await socket_from("/ws/agent/", PUBLIC, forwarded_for="127.0.0.1"))
    agent = await socket_from("/ws/agent/", PROXY, forwarded_for="10.8.8.8")
    await agent.connect()
    assert (await agent.receive_output(timeout=5))["code"] == 4401


@pytest.mark.django_db(transaction=True)
async def test_websocket_an_unknown_peer_is_refused_on_staff() -> None:
    # daphne names no client on a unix socket: an unknown address.
    await assert_socket_refused(await socket_from("/ws/agent/", None))


async def services_add(scope: str, cidr: str, *, deny: bool = False) -> IpRule:
    return await database_sync_to_async(rule_add)(scope, cidr, deny=deny)


# --- HTTP ------------------------------------------------------------------------------------------


def get(path: str, address: str, **extra: Any) -> Any:
    return Client().get(path, REMOTE_ADDR=address, **extra)


def refused_by_rules(response: Any) -> bool:
    return (
        response.status_code == 403
        and response.get("Content-Type") == "application/json"
        and (response.json().get("code") == "ip_not_allowed")
    )


def assert_refused(response: Any) -> None:
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "ip_not_allowed"
    assert "not allowed" in body["detail"]


@pytest.mark.django_db
def test_http_staff_pages_admit_private_addresses_and_refuse_public_ones_by_default() -> None:
    for path in ("/admin/login/", "/agent/", "/api/agent/session", "/reports/", "/api/reports/summary"):
        assert_refused(get(path, PUBLIC))
        # Admitted: the page's own answer (a login redirect, 401/403 of its own, or the page).
        assert not refused_by_rules(get(path, PRIVATE)), path
    refused = get("/admin/login/", PUBLIC).json()
    assert refused["detail"] == (
        "Access to the staff pages (admin, agent console and reports) is not allowed from your address "
        f"({PUBLIC}) by this platform's IP rules. Ask the platform's administrator if you need it."
    )
    assert get("/admin/login/", "127.0.0.1").status_code == 200


@pytest.mark.django_db
def test_http_a_deny_rule_for_loopback_refuses_the_staff_pages() -> None:
    rule_add("staff", "127.0.0.1/32", deny=True)

    assert_refused(get("/admin/login/", "127.0.0.1"))
    assert get("/admin/login/", "127.0.0.2").status_code == 200
    # Other scopes are not touched by a staff rule.
    assert get("/chat/", "127.0.0.1").status_code == 200


@pytest.mark.django_db
def test_http_the_widget_is_open_until_a_rule_says_otherwise() -> None:
    for path in ("/chat/", "/api/widget/faq", "/kb/"):
        assert get(path, PUBLIC).status_code == 200, path

    rule_add("widget", PUBLIC, deny=True)
    for path in ("/chat/", "/api/widget/faq", "/kb/"):
        assert_refused(get(path, PUBLIC))
        assert get(path, OTHER_PUBLIC).status_code == 200, path

    rule_add("widget", "192.0.2.0/24")
    assert_refused(get("/chat/", OTHER_PUBLIC))
    assert get("/chat/", "192.0.2.77").status_code == 200


@pytest.mark.django_db
def test_http_a_refusal_of_the_widget_api_is_readable_by_the_embedding_page(settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://shop.example"]
    rule_add("widget", PUBLIC, deny=True)

    response = get("/api/widget/faq", PUBLIC, HTTP_ORIGIN="https://shop.example")

    assert_refused(response)
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


@pytest.mark.django_db
def test_http_the_gateway_is_open_until_a_rule_says_otherwise() -> None:
    # An admitted request reaches the gateway, which asks for its key.
    assert get("/v1/models", PUBLIC).status_code == 401

    rule_add("api", "198.51.100.0/24")
    assert get("/v1/models", OTHER_PUBLIC).status_code == 401
    response = get("/v1/models", PUBLIC)
    assert_refused(response)
    assert "the API gateway" in response.json()["detail"]
    # In OpenAI's shape too, which is what the gateway's clients read.
    assert response.json()["error"] == {
        "message": response.json()["detail"],
        "type": "invalid_request_error",
        "param": None,
        "code": "ip_not_allowed",
    }


@pytest.mark.django_db
def test_http_health_checks_and_static_files_stay_open_to_a_deny_everything_rule(settings: Any) -> None:
    settings.WHITENOISE_USE_FINDERS = True  # served from the source folders, as the embedded default does
    for scope in IpRule.Scope.values:
        rule_add(scope, "0.0.0.0/0", deny=True)

    assert get("/healthz", PUBLIC).status_code == 200
    assert get("/readyz", PUBLIC).status_code in {200, 503}  # open; its answer is its own business
    assert get("/static/widget/embed.js", PUBLIC).status_code == 200
    assert get("/favicon.ico", PUBLIC).status_code == 200
    assert_refused(get("/chat/", PUBLIC))
    assert_refused(get("/metrics", "127.0.0.1"))


@pytest.mark.django_db
def test_http_metrics_with_no_rules_keep_their_settings(settings: Any) -> None:
    settings.METRICS_TOKEN = "metrics-secret"

    assert get("/metrics", "127.0.0.1").status_code == 200
    # METRICS_ALLOWED_IPS (loopback) is the metrics default; a private address needs it or the token.
    refused = get("/metrics", PRIVATE)
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    token = {"HTTP_AUTHORIZATION": "Bearer metrics-secret"}
    assert get("/metrics", PUBLIC, **token).status_code == 200


@pytest.mark.django_db
def test_http_metrics_allow_rules_replace_the_allowed_ips_and_a_deny_rule_beats_the_token(
    settings: Any,
) -> None:
    settings.METRICS_TOKEN = "metrics-secret"
    token = {"HTTP_AUTHORIZATION": "Bearer metrics-secret"}
    rule_add("metrics", "10.0.0.0/8", note="Prometheus")
    rule_add("metrics", "10.66.0.0/16", deny=True)

    assert get("/metrics", PRIVATE).status_code == 200  # no token needed: the rule admits it
    assert_refused(get("/metrics", "127.0.0.1"))  # in METRICS_ALLOWED_IPS, but not in the rules
    assert_refused(get("/metrics", PUBLIC, **token))  # the token admits no address the rules refuse
    assert_refused(get("/metrics", "10.66.1.1", **token))


@pytest.mark.django_db
def test_http_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(settings: Any) -> None:
    settings.TRUSTED_PROXIES = [f"{PROXY}/32"]
    rule_add("widget", OTHER_PUBLIC, deny=True)

    # A public client claims to be loopback: staff still sees the public peer.
    assert_refused(get("/admin/login/", PUBLIC, HTTP_X_FORWARDED_FOR="127.0.0.1"))
    # A client from a private address blames a denied one: still admitted as itself.
    assert get("/chat/", "10.5.5.5", HTTP_X_FORWARDED_FOR=OTHER_PUBLIC).status_code == 200


@pytest.mark.django_db
def test_http_the_trusted_proxys_forwarded_for_is_believed(settings: Any) -> None:
    settings.TRUSTED_PROXIES = [f"{PROXY}/32"]
    rule_add("widget", OTHER_PUBLIC, deny=True)

    assert_refused(get("/admin/login/", PROXY, HTTP_X_FORWARDED_FOR=PUBLIC))
    assert get("/admin/login/", PROXY, HTTP_X_FORWARDED_FOR="192.168.4.4").status_code == 200
    assert_refused(get("/chat/", PROXY, HTTP_X_FORWARDED_FOR=f"10.9.9.9, {OTHER_PUBLIC}"))
    # Without the header the proxy itself is the client (a private address).
    assert get("/admin/login/", PROXY).status_code == 200
    # A trusted proxy passing on something that is not an address: unknown, and refused on staff.
    response = get("/admin/login/", PROXY, HTTP_X_FORWARDED_FOR="unknown")
    assert_refused(response)
    assert "could not be determined" in response.json()["detail"]
