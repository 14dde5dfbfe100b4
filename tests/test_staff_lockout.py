"""Staff accounts lock after repeated failed sign-ins (django-axes): per account and address, admin's
sign-in and the console's alike; a success resets the count; a superuser unlocks early."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password"  # what make_user gives every user
_addresses = itertools.count(random.randrange(2**20))


def unique_address() -> str:
    number = next(_addresses) % 2**24
    return f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}"


def admin_sign_in(client: Client, username: str, password: str) -> Any:
    client.get("/admin/login/")
    return client.post(
        "/admin/login/?next=/admin/",
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )


def console_sign_in(client: Client, username: str, password: str) -> Any:
    token = client.get("/api/agent/session").json()["csrf_token"]
    return client.post(
        "/api/agent/session",
        json.dumps({"username": username, "password": password}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    settings.RATE_LIMIT_STAFF_LOGINS = "100/m"  # the lock-out is what is under test, not the rate


def test_admin_locks_an_account_for_the_address_that_failed() -> None:
    make_user("Supervisor", username="mei", is_staff=True)
    address = unique_address()
    client = Client(REMOTE_ADDR=address, enforce_csrf_checks=True)

    failures = [admin_sign_in(client, "mei", "wrong").status_code for _ in range(3)]
    locked = admin_sign_in(client, "mei", PASSWORD)
    elsewhere = Client(REMOTE_ADDR=unique_address(), enforce_csrf_checks=True)
    from_elsewhere = admin_sign_in(elsewhere, "mei", PASSWORD)

    assert failures[:2] == [200, 200]  # the form again, saying the password is wrong
    assert failures[2] == 429  # the third failure locks
    assert locked.status_code == 429  # the right password does not open it now
    assert "Account locked" in locked.content.decode()
    assert int(locked["Retry-After"]) == 15 * 60
    assert "_auth_user_id" not in client.session
    assert from_elsewhere.status_code == 302  # another address is not locked out
    assert elsewhere.session["_auth_user_id"]


def test_the_console_answers_a_locked_account_in_json() -> None:
    make_user("Agent", username="lin", is_staff=True)
    client = Client(REMOTE_ADDR=unique_address(), enforce_csrf_checks=True)

    failures = [console_sign_in(client, "lin", "wrong") for _ in range(3)]
    locked = console_sign_in(client, "lin", PASSWORD)

    assert [response.status_code for response in failures[:2]] == [400, 400]
    assert failures[0].json()["code"] == "invalid_credentials"
    assert locked.status_code == 429
    assert locked.json()["code"] == "locked_out"
    assert "locked here for 15 minutes" in locked.json()["detail"]


def test_admin_and_console_failures_count_together() -> None:
    make_user("Agent", username="sam", is_staff=True)
    address = unique_address()
    admin_client = Client(REMOTE_ADDR=address, enforce_csrf_checks=True)
    console_client = Client(REMOTE_ADDR=address, enforce_csrf_checks=True)

    admin_sign_in(admin_client, "sam", "wrong")
    admin_sign_in(admin_client, "sam", "wrong")
    third = console_sign_in(console_client, "sam", "wrong")

    assert third.status_code == 429
    assert third.json()["code"] == "locked_out"


def test_a_success_resets_the_count() -> None:
    make_user("Agent", username="wang", is_staff=True)
    address = unique_address()

    before = [console_sign_in(Client(REMOTE_ADDR=address), "wang", "wrong").status_code for _ in range(2)]
    signed_in = console_sign_in(Client(REMOTE_ADDR=address), "wang", PASSWORD)
    again = [console_sign_in(Client(REMOTE_ADDR=address), "wang", "wrong").status_code for _ in range(2)]

    assert before == [400, 400]
    assert signed_in.status_code == 200
    assert again == [400, 400]  # two more failures after the success: not three in a row


def test_a_superuser_unlocks_an_account_early() -> None:
    make_user("Supervisor", username="zhou", is_staff=True)
    client = Client(REMOTE_ADDR=unique_address(), enforce_csrf_checks=True)
    for _ in range(3):
        admin_sign_in(client, "zhou", "wrong")
    assert admin_sign_in(client, "zhou", PASSWORD).status_code == 429

    call_command("axes_reset_username", "zhou")

    assert admin_sign_in(client, "zhou", PASSWORD).status_code == 302
