"""Gateway API keys (DESIGN.md, Access): issued and checked in access/keys.py, `manage.py api_key`, and
admin for superusers only, where a new key is shown once."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group, Permission, User
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict
from django.test import Client
from django.utils import timezone

from access import keys
from access.models import ApiKey
from cs_platform import roles

KEY_PATTERN = re.compile(r"csk_[a-z0-9]{10}_[A-Za-z0-9]{40}")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _models(settings: Any) -> None:
    settings.GATEWAY_ASSISTANT_MODEL = "support-assistant"
    settings.INFERENCE_MODEL = "qwen2.5-vl-7b"


def issue(**fields: Any) -> keys.IssuedKey:
    return keys.api_key_create(name=fields.pop("name", "CRM sidebar"), **fields)


def command(*args: str) -> str:
    out = StringIO()
    call_command("api_key", *args, stdout=out)
    return out.getvalue()


async def keys_issue_async(**fields: Any) -> keys.IssuedKey:
    return await sync_to_async(issue)(**fields)


def bearer(key: str) -> str:
    return f"Bearer {key}"


# --- Issuing ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_issues_a_key_in_the_documented_format_and_keeps_only_the_secrets_hash() -> None:
    issued = issue(owner=" Support tools ", note="for the ticket sidebar")

    assert KEY_PATTERN.fullmatch(issued.key)
    prefix, secret = issued.key.removeprefix("csk_").split("_")
    api_key = ApiKey.objects.get()
    assert api_key.pk == issued.api_key.pk
    assert (api_key.prefix, api_key.name, api_key.owner, api_key.note) == (
        prefix,
        "CRM sidebar",
        "Support tools",
        "for the ticket sidebar",
    )
    assert api_key.secret_sha256 == keys._secret_hash(secret)
    assert (api_key.allowed_models, api_key.requests_per_minute, api_key.tokens_per_minute) == (
        ["support-assistant"],
        60,
        None,
    )
    assert (api_key.monthly_tokens, api_key.expires_at, api_key.revoked_at, api_key.last_used_at) == (
        None,
        None,
        None,
        None,
    )
    stored = " ".join(str(value) for value in ApiKey.objects.values().get().values())
    assert secret not in stored
    assert issued.key not in stored


@pytest.mark.django_db
def test_it_issues_each_key_its_own_prefix_and_secret() -> None:
    first, second = issue().key, issue().key

    assert first[:15] != second[:15]
    assert first[16:] != second[16:]


@pytest.mark.django_db
def test_it_draws_another_prefix_when_the_first_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = issue(name="First").api_key
    ApiKey.objects.filter(pk=taken.pk).update(prefix="a" * 10)
    draws = iter(["a"] * 50 + ["b"] * 50)
    monkeypatch.setattr(keys.secrets, "choice", lambda alphabet: next(draws))

    issued = issue(name="Second")

    assert issued.key == "csk_" + "b" * 10 + "_" + "b" * 40
    assert sorted(ApiKey.objects.values_list("name", "prefix")) == [("First", "a" * 10), ("Second", "b" * 10)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  "}, "Give the key a name: what will call with it."),
        ({"requests_per_minute": 0}, "requests_per_minute must be 1 or more, or None for no limit (not 0)."),
        ({"tokens_per_minute": -5}, "tokens_per_minute must be 1 or more, or None for no limit (not -5)."),
        ({"monthly_tokens": 0}, "monthly_tokens must be 1 or more, or None for no limit (not 0)."),
        (
            {"expires_at": datetime(2020, 1, 1, tzinfo=UTC)},
            "The expiry 2020-01-01T00:00:00+00:00 is already past.",
        ),
        ({"name": "x" * 101}, "name: Ensure this value has at most 100 characters (it has 101)."),
    ],
)
def test_it_refuses_to_issue_a_key_it_could_not_use_and_saves_nothing(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(keys.ApiKeyError) as error:
        issue(**fields)

    assert str(error.value) == message
    assert not ApiKey.objects.exists()


# --- Authenticating --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_connections_closed")
async def test_it_authenticates_a_good_key_and_notes_when_it_was_used() -> None:
    issued = await keys_issue_async()

    api_key = await keys.api_key_authenticate(authorization=bearer(issued.key))

    assert api_key.pk == issued.api_key.pk
    stored = await ApiKey.objects.aget(pk=api_key.pk)
    assert stored.last_used_at is not None
    assert stored.last_used_at == api_key.last_used_at
    assert timezone.now() - stored.last_used_at < timedelta(seconds=10)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_connections_closed")
async def test_it_takes_the_scheme_in_any_case_and_spaces_around_the_key() -> None:
    issued = await keys_issue_async()

    api_key = await keys.api_key_authenticate(authorization=f"  bearer   {issued.key}  ")

    assert api_key.pk == issued.api_key.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_connections_closed")
@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (
            "",
            "You didn't provide an API key. Send it in the Authorization header: Authorization: Bearer KEY.",
        ),
        (
            "Bearer ",
            "You didn't provide an API key. Send it in the Authorization header: Authorization: Bearer KEY.",
        ),
        (
            "{key}",
            "You didn't provide an API key. Send it in the Authorization header: Authorization: Bearer KEY.",
        ),
        (
            "Basic {key}",
            "You didn't provide an API key. Send it in the Authorization header: Authorization: Bearer KEY.",
        ),
        ("Bearer sk-proj-abcdef", "Incorrect API key provided."),
        ("Bearer {key}x", "Incorrect API key provided."),
        ("Bearer {key_without_start}", "Incorrect API key provided."),
        ("Bearer csk_aaaaaaaaaa_{secret}", "Incorrect API key provided."),  # unknown prefix
        ("Bearer csk_{prefix}_" + "A" * 40, "Incorrect API key provided."),  # wrong secret
        ("Bearer csk_{prefix}_{secret}_", "Incorrect API key provided."),  # malformed
    ],
)
async def test_it_refuses_a_missing_malformed_unknown_or_wrong_key_and_changes_nothing(
    authorization: str, message: str
) -> None:
    issued = await keys_issue_async()
    prefix, secret = issued.key.removeprefix("csk_").split("_")
    before = await ApiKey.objects.values().aget(pk=issued.api_key.pk)
    header = authorization.format(
        key=issued.key, key_without_start=issued.key.removeprefix("csk_"), prefix=prefix, secret=secret
    )

    with pytest.raises(keys.ApiKeyRefused) as error:
        await keys.api_key_authenticate(authorization=header)

    assert error.value.message == message
    assert await ApiKey.objects.values().aget(pk=issued.api_key.pk) == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_connections_closed")
async def test_it_refuses_a_revoked_key_and_changes_nothing() -> None:
    issued = await keys_issue_async()
    await sync_to_async(keys.api_key_revoke)(prefix=issued.api_key.prefix)
    before = await ApiKey.objects.values().aget(pk=issued.api_key.pk)

    with pytest.raises(keys.ApiKeyRefused) as error:
        await keys.api_key_authenticate(authorization=bearer(issued.key))

    assert error.value.message == "This API key has been revoked."
    assert await ApiKey.objects.values().aget(pk=issued.api_key.pk) == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_connections_closed")
async def test_it_refuses_a_key_from_the_moment_it_expires(frozen_now: Callable[[datetime], None]) -> None:
    expires_at = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    frozen_now(expires_at - timedelta(seconds=1))
    issued = await keys_issue_async(expires_at=expires_at)
    assert (await keys.api_key_authenticate(authorization=bearer(issued.key))).pk == issued.api_key.pk
    frozen_now(expires_at)
    before = await ApiKey.objects.values().aget(pk=issued.api_key.pk)

    with pytest.raises(keys.ApiKeyRefused) as error:
        await keys.api_key_authenticate(authorization=bearer(issued.key))

    assert error.value.message == "This API key expired on 2030-06-01T12:00:00+00:00."
    assert await ApiKey.objects.values().aget(pk=issued.api_key.pk) == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_connections_closed")
async def test_it_writes_last_used_at_at_most_once_a_minute(frozen_now: Callable[[datetime], None]) -> None:
    start = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    frozen_now(start)
    issued = await keys_issue_async()

    async def used_at(at: datetime) -> datetime | None:
        frozen_now(at)
        await keys.api_key_authenticate(authorization=bearer(issued.key))
        return (await ApiKey.objects.aget(pk=issued.api_key.pk)).last_used_at

    assert await used_at(start) == start
    assert await used_at(start + timedelta(seconds=59)) == start
    assert await used_at(start + timedelta(seconds=60)) == start + timedelta(seconds=60)
    assert await used_at(start + timedelta(seconds=61)) == start + timedelta(seconds=60)


def test_it_says_why_a_key_is_refused_without_the_database() -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)
    good = ApiKey(secret_sha256=keys._secret_hash("s" * 40))

    assert keys.refusal_reason(good, "s" * 40, now=now) is None
    assert keys.refusal_reason(None, "s" * 40, now=now) == "Incorrect API key provided."
    assert keys.refusal_reason(good, "t" * 40, now=now) == "Incorrect API key provided."
    good.expires_at = now
    assert (
        keys.refusal_reason(good, "s" * 40, now=now) == "This API key expired on 2030-06-01T00:00:00+00:00."
    )
    good.revoked_at = now
    assert keys.refusal_reason(good, "s" * 40, now=now) == "This API key has been revoked."
    # A wrong secret says nothing about the key's state.
    assert keys.refusal_reason(good, "t" * 40, now=now) == "Incorrect API key provided."


# --- Revoking --------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("written", ["{prefix}", "csk_{prefix}", "csk_{prefix}_…", "{key}", " {key} "])
def test_it_revokes_a_key_named_by_its_prefix_or_whole(written: str) -> None:
    issued = issue()
    other = issue(name="Other")

    api_key = keys.api_key_revoke(prefix=written.format(prefix=issued.api_key.prefix, key=issued.key))

    assert api_key.pk == issued.api_key.pk
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is not None
    assert ApiKey.objects.get(pk=other.api_key.pk).revoked_at is None


@pytest.mark.django_db
def test_it_keeps_when_a_key_was_revoked_when_revoked_again() -> None:
    issued = issue()
    first = keys.api_key_revoke(prefix=issued.api_key.prefix).revoked_at

    again = keys.api_key_revoke(prefix=issued.api_key.prefix)

    assert again.revoked_at == first
    assert ApiKey.objects.get().revoked_at == first


@pytest.mark.django_db
def test_it_revokes_the_keys_selected_counting_only_those_revoked_now() -> None:
    first, second, third = issue(), issue(), issue()
    keys.api_key_revoke(prefix=second.api_key.prefix)

    assert keys.api_keys_revoke(key_ids=[first.api_key.pk, second.api_key.pk]) == 1
    assert set(ApiKey.objects.filter(revoked_at__isnull=False).values_list("pk", flat=True)) == {
        first.api_key.pk,
        second.api_key.pk,
    }
    assert ApiKey.objects.get(pk=third.api_key.pk).revoked_at is None


@pytest.mark.django_db
def test_it_says_which_prefix_it_could_not_find_without_repeating_a_secret() -> None:
    issued = issue()
    unknown = "csk_zzzzzzzzzz_" + issued.key[-40:]

    with pytest.raises(keys.ApiKeyError) as error:
        keys.api_key_revoke(prefix=unknown)

    assert str(error.value) == "There is no API key with the prefix 'zzzzzzzzzz' (`manage.py api_key list`)."
    assert ApiKey.objects.get().revoked_at is None


# --- manage.py api_key -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_connections_closed")
async def test_it_prints_a_created_key_that_authenticates_and_warns_it_is_shown_once() -> None:
    output = await sync_to_async(command)("create", "--name", "CRM sidebar", "--owner", "Support tools")

    lines = output.splitlines()
    key = next(line for line in lines if KEY_PATTERN.fullmatch(line))
    api_key = await keys.api_key_authenticate(authorization=bearer(key))
    assert lines == [
        f"Issued API key {api_key.pk} “CRM sidebar” (prefix {api_key.prefix}):",
        "",
        key,
        "",
        "Copy the key now: it is not shown again (only a hash of it is kept). Whoever loses it revokes it "
        "and issues a new one.",
        "Models: support-assistant",
        "Limits: 60 rpm",
        "Expires: never",
    ]
    assert (api_key.name, api_key.owner) == ("CRM sidebar", "Support tools")


@pytest.mark.django_db
def test_it_prints_only_the_key_with_quiet() -> None:
    output = command("create", "--name", "nightly export", "--quiet")

    assert KEY_PATTERN.fullmatch(output.rstrip("\n"))
    assert output.count("\n") == 1
    assert ApiKey.objects.get().prefix == output[4:14]


@pytest.mark.django_db
def test_it_creates_a_key_with_every_option_of_the_command() -> None:
    command(
        "create",
        "--name",
        "Partner app",
        "--note",
        "contract 42",
        "--expires",
        "2031-02-03T04:05:06+01:00",
        "--no-request-limit",
        "--tokens-per-minute",
        "20000",
        "--monthly-tokens",
        "5000000",
        "--model",
        "support-assistant",
        "--model",
        "qwen2.5-vl-7b",
        "--model",
        "support-assistant",
        "--keep-conversations",
        "--fetch-image-urls",
        "--quiet",
    )

    api_key = ApiKey.objects.get()
    assert model_to_dict(api_key, exclude=["id"]) == {
        "name": "Partner app",
        "owner": "",
        "note": "contract 42",
        "allowed_models": ["support-assistant", "qwen2.5-vl-7b"],
        "keeps_conversations": True,
        "fetches_image_urls": True,
        "requests_per_minute": None,
        "tokens_per_minute": 20000,
        "monthly_tokens": 5000000,
        "expires_at": datetime(2031, 2, 3, 3, 5, 6, tzinfo=UTC),
        "created_by": None,
    }


@pytest.mark.django_db
def test_it_lets_a_key_given_a_date_work_through_that_day_in_time_zone(settings: Any) -> None:
    settings.TIME_ZONE = "Asia/Shanghai"

    output = command("create", "--name", "Trial", "--expires", "2031-03-31")

    api_key = ApiKey.objects.get()
    assert api_key.expires_at == datetime(2031, 4, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert api_key.expires_at == datetime(2031, 3, 31, 16, 0, tzinfo=UTC)
    assert "Expires: 2031-04-01 00:00 CST (works through 2031-03-31)" in output.splitlines()


@pytest.mark.django_db
def test_it_reads_an_expiry_without_an_offset_in_time_zone(settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Berlin"

    command("create", "--name", "Trial", "--expires", "2031-07-01T09:30", "--quiet")

    assert ApiKey.objects.get().expires_at == datetime(2031, 7, 1, 7, 30, tzinfo=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--requests-per-minute", "0"],
            "--requests-per-minute must be 1 or more (use --no-request-limit for none).",
        ),
        (
            ["--requests-per-minute", "-3"],
            "--requests-per-minute must be 1 or more (use --no-request-limit for none).",
        ),
        (["--requests-per-minute", "ten"], "--requests-per-minute 'ten' is not a whole number."),
        (["--tokens-per-minute", "0"], "--tokens-per-minute must be 1 or more (leave it out for no limit)."),
        (["--monthly-tokens", "1.5"], "--monthly-tokens '1.5' is not a whole number."),
        (["--monthly-tokens", "0"], "--monthly-tokens must be 1 or more (leave it out for no quota)."),
        (["--expires", "2020-01-01"], "The expiry 2020-01-02T00:00:00+00:00 is already past."),
        (
            ["--expires", "next week"],
            "--expires 'next week' is neither a date (2027-03-31: the key works through that day) nor an "
            "ISO 8601 datetime (2027-03-31T18:00:00+01:00).",
        ),
        (["--model", " "], "--model needs a model name."),
        (
            ["--requests-per-minute", "5", "--no-request-limit"],
            "Error: argument --no-request-limit: not allowed with argument --requests-per-minute",
        ),
    ],
)
def test_it_refuses_bad_create_options_with_a_sentence_and_saves_nothing(
    arguments: list[str], message: str
) -> None:
    with pytest.raises(CommandError) as error:
        command("create", "--name", "Trial", *arguments)

    assert str(error.value) == message
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_it_refuses_to_create_a_key_without_a_name() -> None:
    with pytest.raises(CommandError, match=r"^Give the key a name: what will call with it\.$"):
        command("create", "--name", " ")

    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_it_lists_each_key_its_limits_and_state_never_a_secret(
    settings: Any, frozen_now: Callable[[datetime], None]
) -> None:
    settings.TIME_ZONE = "UTC"
    frozen_now(datetime(2030, 6, 1, 12, 0, tzinfo=UTC))
    active = issue(name="CRM sidebar", owner="Support tools", tokens_per_minute=20000, monthly_tokens=1000000)
    expiring = issue(
        name="Trial",
        requests_per_minute=None,
        expires_at=datetime(2030, 6, 2, tzinfo=UTC),
        allowed_models=["support-assistant", "qwen2.5-vl-7b"],
    )
    revoked = issue(name="Old app")
    keys.api_key_revoke(prefix=revoked.api_key.prefix)
    ApiKey.objects.filter(pk=active.api_key.pk).update(last_used_at=datetime(2030, 6, 1, 11, 58, tzinfo=UTC))
    frozen_now(datetime(2030, 6, 3, tzinfo=UTC))

    output = command("list")

    header, *rows = output.splitlines()
    assert header.split() == [
        "PREFIX",
        "NAME",
        "OWNER",
        "MODELS",
        "LIMITS",
        "EXPIRES",
        "LAST",
        "USED",
        "STATE",
    ]
    # Columns are two spaces apart at least; an empty owner leaves only spaces.
    assert [re.split(r"\s{2,}", line) for line in rows] == [
        [
            active.api_key.prefix,
            "CRM sidebar",
            "Support tools",
            "support-assistant",
            "60 rpm, 20000 tpm, 1000000 tokens/month",
            "never",
            "2030-06-01 11:58 UTC",
            "active",
        ],
        [
            expiring.api_key.prefix,
            "Trial",
            "support-assistant,qwen2.5-vl-7b",
            "none",
            "2030-06-02 00:00 UTC",
            "never",
            "expired",
        ],
        [revoked.api_key.prefix, "Old app", "support-assistant", "60 rpm", "never", "never", "revoked"],
    ]
    for issued in (active, expiring, revoked):
        assert issued.key[15:] not in output


@pytest.mark.django_db
def test_it_says_when_there_are_no_keys_to_list() -> None:
    assert command("list") == "No API keys: issue one with `manage.py api_key create --name NAME`.\n"


@pytest.mark.django_db
@pytest.mark.parametrize("written", ["{prefix}", "csk_{prefix}", "{key}"])
def test_it_names_the_key_the_command_revoked(written: str) -> None:
    issued = issue(name="CRM sidebar")
    other = issue(name="Other")

    output = command("revoke", written.format(prefix=issued.api_key.prefix, key=issued.key))

    assert output == (
        f"Revoked API key {issued.api_key.prefix} “CRM sidebar”: requests with it are refused from now on.\n"
    )
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=other.api_key.pk).revoked_at is None


@pytest.mark.django_db
def test_it_says_nothing_changed_when_the_command_revokes_a_key_again(
    settings: Any, frozen_now: Callable[[datetime], None]
) -> None:
    settings.TIME_ZONE = "UTC"
    frozen_now(datetime(2030, 6, 1, 12, 0, tzinfo=UTC))
    issued = issue(name="CRM sidebar")
    command("revoke", issued.api_key.prefix)
    frozen_now(datetime(2030, 6, 1, 13, 0, tzinfo=UTC))

    output = command("revoke", issued.api_key.prefix)

    assert output == (
        f"API key {issued.api_key.prefix} “CRM sidebar” was already revoked (2030-06-01 12:00 UTC); "
        "nothing changed.\n"
    )
    assert ApiKey.objects.get().revoked_at == datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_it_refuses_to_revoke_an_unknown_prefix_and_changes_nothing() -> None:
    issue()

    with pytest.raises(CommandError) as error:
        command("revoke", "zzzzzzzzzz")

    assert str(error.value) == "There is no API key with the prefix 'zzzzzzzzzz' (`manage.py api_key list`)."
    assert ApiKey.objects.get().revoked_at is None


# --- Admin: superusers only, the key shown once -----------------------------------------------------


def superuser_client() -> tuple[Client, User]:
    user = User.objects.create_superuser("root", "root@example.com", "pw-root-1")
    client = Client()
    client.force_login(user)
    return client, user


def staff_client(group: str, *, with_permissions: bool = False) -> Client:
    roles.roles_sync()
    user = User.objects.create_user("sue", password="pw-sue-1", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    if with_permissions:
        # Given by hand: still no way in.
        user.user_permissions.add(*Permission.objects.filter(content_type__app_label="access"))
    client = Client()
    client.force_login(user)
    return client


def add_form(**fields: Any) -> dict[str, Any]:
    return {
        "name": "CRM sidebar",
        "owner": "Support tools",
        "note": "",
        "allowed_models": ["support-assistant"],
        "requests_per_minute": "60",
        "tokens_per_minute": "",
        "monthly_tokens": "",
        "expires_at_0": "",
        "expires_at_1": "",
        **fields,
    }


@pytest.mark.django_db
def test_it_shows_a_key_a_superuser_adds_in_admin_once_and_only_once() -> None:
    client, user = superuser_client()

    response = client.post(
        "/admin/access/apikey/add/",
        add_form(allowed_models=["support-assistant", "qwen2.5-vl-7b"], fetches_image_urls="on"),
        follow=True,
    )

    assert response.status_code == 200
    page = response.content.decode()
    keys_shown = KEY_PATTERN.findall(page)
    assert len(keys_shown) == 1
    api_key = ApiKey.objects.get()
    key = keys_shown[0]
    assert api_key.prefix == key[4:14]
    assert api_key.secret_sha256 == keys._secret_hash(key[15:])
    assert f'<code style="user-select: all; white-space: nowrap">{key}</code>' in page
    assert "Copy the new key now: it is not shown again (only a hash of it is kept)." in page
    assert (api_key.name, api_key.owner, api_key.created_by) == ("CRM sidebar", "Support tools", user)
    assert (api_key.allowed_models, api_key.fetches_image_urls, api_key.keeps_conversations) == (
        ["support-assistant", "qwen2.5-vl-7b"],
        True,
        False,
    )
    assert (api_key.requests_per_minute, api_key.tokens_per_minute, api_key.monthly_tokens) == (
        60,
        None,
        None,
    )

    for path in ("/admin/access/apikey/", f"/admin/access/apikey/{api_key.pk}/change/"):
        again = client.get(path).content.decode()
        assert key[15:] not in again
        assert f"csk_{api_key.prefix}_…" in again


@pytest.mark.django_db
def test_it_offers_the_assistant_checked_and_the_inference_model_in_the_add_form() -> None:
    client, _ = superuser_client()

    page = client.get("/admin/access/apikey/add/").content.decode()

    assert re.search(r'<input[^>]*value="support-assistant"[^>]*checked', page)
    assert "support-assistant: the grounded assistant" in page
    assert re.search(r'<input[^>]*value="qwen2.5-vl-7b"', page)
    assert not re.search(r'<input[^>]*value="qwen2.5-vl-7b"[^>]*checked', page)
    assert "qwen2.5-vl-7b: the inference server&#x27;s model, a plain proxy to it" in page
    assert 'name="other_model"' not in page
    assert 'name="prefix"' not in page
    assert "secret" not in page


@pytest.mark.django_db
def test_it_takes_the_servers_model_by_name_without_inference_model(settings: Any) -> None:
    settings.INFERENCE_MODEL = ""
    client, _ = superuser_client()
    assert 'name="other_model"' in client.get("/admin/access/apikey/add/").content.decode()

    response = client.post(
        "/admin/access/apikey/add/", add_form(allowed_models=[], other_model=" Qwen/Qwen2.5-VL-7B ")
    )

    assert response.status_code == 302
    assert ApiKey.objects.get().allowed_models == ["Qwen/Qwen2.5-VL-7B"]


@pytest.mark.django_db
def test_it_keeps_a_model_a_key_holds_selectable_and_saved() -> None:
    client, _ = superuser_client()
    api_key = issue(allowed_models=["support-assistant", "old-model"]).api_key

    page = client.get(f"/admin/access/apikey/{api_key.pk}/change/").content.decode()
    assert re.search(r'<input[^>]*value="old-model"[^>]*checked', page)
    response = client.post(
        f"/admin/access/apikey/{api_key.pk}/change/",
        add_form(allowed_models=["support-assistant", "old-model"], requests_per_minute="30"),
    )

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert (api_key.allowed_models, api_key.requests_per_minute) == (["support-assistant", "old-model"], 30)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"allowed_models": []}, "Allow at least one model: a key that may call none opens nothing."),
        (
            {"allowed_models": ["gpt-4o"]},
            "Select a valid choice. gpt-4o is not one of the available choices.",
        ),
        ({"requests_per_minute": "0"}, "0 would refuse every request: leave it empty for no limit."),
        ({"monthly_tokens": "0"}, "0 would refuse every request: leave it empty for no limit."),
        (
            {"expires_at_0": "2020-01-01", "expires_at_1": "00:00:00"},
            "That moment has passed: the key would never work.",
        ),
    ],
)
def test_it_refuses_in_admin_a_key_that_could_not_work_and_issues_nothing(
    fields: dict[str, Any], message: str
) -> None:
    client, _ = superuser_client()

    response = client.post("/admin/access/apikey/add/", add_form(**fields))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_it_shows_the_key_record_read_only_on_the_change_page_never_the_secret(settings: Any) -> None:
    settings.TIME_ZONE = "UTC"
    client, _ = superuser_client()
    issued = issue()
    ApiKey.objects.filter(pk=issued.api_key.pk).update(last_used_at=datetime(2030, 6, 1, 12, 5, tzinfo=UTC))

    page = client.get(f"/admin/access/apikey/{issued.api_key.pk}/change/").content.decode()

    assert f'<div class="readonly">csk_{issued.api_key.prefix}_…</div>' in page
    assert '<div class="readonly">active</div>' in page
    assert "June 1, 2030, 12:05" in page
    assert issued.key[15:] not in page
    assert issued.api_key.secret_sha256 not in page
    assert 'name="prefix"' not in page


@pytest.mark.django_db
def test_it_finds_a_key_in_admin_by_its_prefix_or_the_whole_key() -> None:
    client, _ = superuser_client()
    wanted, other = issue(name="Wanted"), issue(name="Other")

    for term in (wanted.api_key.prefix, f"csk_{wanted.api_key.prefix}_…", wanted.key):
        page = client.get("/admin/access/apikey/", {"q": term}).content.decode()
        assert f"/admin/access/apikey/{wanted.api_key.pk}/change/" in page
        assert f"/admin/access/apikey/{other.api_key.pk}/change/" not in page


@pytest.mark.django_db
def test_it_lists_the_keys_columns_in_admin_and_filters_by_state() -> None:
    client, _ = superuser_client()
    active = issue(name="Active one", tokens_per_minute=20000)
    revoked = issue(name="Revoked one")
    keys.api_key_revoke(prefix=revoked.api_key.prefix)

    page = client.get("/admin/access/apikey/").content.decode()
    for column in (
        "field-name",
        "field-owner",
        "field-key_display",
        "field-models_display",
        "field-requests_per_minute",
        "field-tokens_per_minute",
        "field-monthly_tokens",
        "field-expires_at",
        "field-last_used_at",
        "field-state",
    ):
        assert column in page
    for parameter in ("state=active", "state=expired", "state=revoked", "keeps_conversations__exact=1"):
        assert f'href="?{parameter}"' in page

    revoked_page = client.get("/admin/access/apikey/", {"state": "revoked"}).content.decode()
    assert f"/admin/access/apikey/{revoked.api_key.pk}/change/" in revoked_page
    assert f"/admin/access/apikey/{active.api_key.pk}/change/" not in revoked_page


@pytest.mark.django_db
def test_it_revokes_the_keys_selected_in_admin_and_says_how_many() -> None:
    client, _ = superuser_client()
    first, second, kept = issue(), issue(), issue()
    keys.api_key_revoke(prefix=second.api_key.prefix)

    response = client.post(
        "/admin/access/apikey/",
        {"action": "revoke_selected", "_selected_action": [first.api_key.pk, second.api_key.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert (
        "Revoked 1 API key: requests with them are refused now. 1 of those selected had been revoked already."
        in response.content.decode()
    )
    assert ApiKey.objects.get(pk=first.api_key.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=kept.api_key.pk).revoked_at is None


@pytest.mark.django_db
def test_it_keeps_a_revoked_key_read_only_in_admin() -> None:
    client, _ = superuser_client()
    issued = issue(name="Old app")
    revoked_at = keys.api_key_revoke(prefix=issued.api_key.prefix).revoked_at

    page = client.get(f"/admin/access/apikey/{issued.api_key.pk}/change/")
    response = client.post(
        f"/admin/access/apikey/{issued.api_key.pk}/change/", add_form(name="Renamed", requests_per_minute="1")
    )

    assert page.status_code == 200
    assert 'name="name"' not in page.content.decode()
    assert '<div class="readonly">revoked</div>' in page.content.decode()
    assert response.status_code == 403
    api_key = ApiKey.objects.get()
    assert (api_key.name, api_key.requests_per_minute, api_key.revoked_at) == ("Old app", 60, revoked_at)


@pytest.mark.django_db
@pytest.mark.parametrize("group", [roles.SUPERVISOR, roles.MANAGER])
@pytest.mark.parametrize("with_permissions", [False, True])
def test_it_lets_no_supervisor_or_manager_see_or_issue_keys(group: str, with_permissions: bool) -> None:
    client = staff_client(group, with_permissions=with_permissions)
    api_key = issue().api_key
    before = ApiKey.objects.values().get()

    assert client.get("/admin/access/apikey/").status_code == 403
    assert client.get(f"/admin/access/apikey/{api_key.pk}/change/").status_code == 403
    assert client.get("/admin/access/apikey/add/").status_code == 403
    assert client.post("/admin/access/apikey/add/", add_form()).status_code == 403
    assert client.post(f"/admin/access/apikey/{api_key.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (
        client.post(
            "/admin/access/apikey/", {"action": "revoke_selected", "_selected_action": [api_key.pk]}
        ).status_code
        == 403
    )
    index = client.get("/admin/")
    assert index.status_code == 200
    assert "/admin/access/" not in index.content.decode()
    assert list(ApiKey.objects.values()) == [before]


@pytest.mark.django_db
def test_it_gives_no_role_group_a_permission_on_api_keys() -> None:
    roles.roles_sync()

    assert not Permission.objects.filter(content_type__model="apikey", group__isnull=False).exists()
