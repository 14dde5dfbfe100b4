"""Rate limits as settings: new conversations, uploads per address and per conversation, websocket
messages per conversation and per address, staff sign-ins to admin and the console together; the
limit holds across two daphne processes sharing Redis; nothing refused is saved."""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from conversations.models import Attachment, Conversation, Message
from cs_platform import ratelimit
from cs_platform.asgi import application
from cs_platform.processes import free_port, stop_process_group
from tests import factories
from tests.factories import jpeg_bytes, make_user
from tests.processes import daphne_start, database_url

ConversationFactory: Any = factories.ConversationFactory
CREATE_URL = "/api/widget/conversations"
_addresses = itertools.count(random.randrange(2**20))


def unique_address() -> str:
    """An address of its own for each test (and each run: Redis keeps the counts for a window)."""
    number = next(_addresses) % 2**24
    return f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}"


def frozen_ratelimit_clock() -> Any:
    """django-ratelimit's clock held still, so a burst cannot straddle two windows."""
    return mock.patch("django_ratelimit.core.time", mock.Mock(time=mock.Mock(return_value=time.time())))


@pytest.mark.django_db
def test_new_conversations_per_address_follow_the_setting(settings: Any) -> None:
    settings.RATE_LIMIT_NEW_CONVERSATIONS = "2/m"
    client = Client(REMOTE_ADDR=unique_address())

    with frozen_ratelimit_clock():
        statuses = [client.generic("POST", CREATE_URL, b"").status_code for _ in range(2)]
        refused = client.generic("POST", CREATE_URL, b"")
        other = Client(REMOTE_ADDR=unique_address()).generic("POST", CREATE_URL, b"")

    assert statuses == [201, 201]
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert other.status_code == 201  # another address has its own budget
    assert Conversation.objects.count() == 3


@pytest.mark.django_db
def test_an_hourly_limit_says_when_within_the_hour(settings: Any) -> None:
    settings.RATE_LIMIT_NEW_CONVERSATIONS = "1/h"
    client = Client(REMOTE_ADDR=unique_address())

    with frozen_ratelimit_clock():
        assert client.generic("POST", CREATE_URL, b"").status_code == 201
        refused = client.generic("POST", CREATE_URL, b"")

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600


def upload(conversation: Any, address: str) -> Any:
    return Client(REMOTE_ADDR=address).post(
        f"/api/widget/conversations/{conversation.pk}/attachments",
        {"file": SimpleUploadedFile("photo.jpg", jpeg_bytes(), "image/jpeg")},
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
    )


@pytest.mark.django_db
def test_uploads_are_limited_per_conversation_and_per_address(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = str(tmp_path)
    settings.RATE_LIMIT_UPLOADS_PER_CONVERSATION = "2/m"
    settings.RATE_LIMIT_UPLOADS_PER_IP = "4/m"
    first, second, third = ConversationFactory(), ConversationFactory(), ConversationFactory()
    address, elsewhere = unique_address(), unique_address()

    with frozen_ratelimit_clock():
        # Every try counts, refused ones too: the third is over the conversation's limit.
        in_first = [upload(first, address).status_code for _ in range(3)]
        # The address has one try left of its four, for any conversation.
        in_second = [upload(second, address).status_code for _ in range(2)]
        # Another address has its own budget, but not for the first conversation, which is at its limit.
        first_from_elsewhere = upload(first, elsewhere)
        third_from_elsewhere = upload(third, elsewhere)

    assert in_first == [201, 201, 429]
    assert in_second == [201, 429]
    assert first_from_elsewhere.status_code == 429
    assert 1 <= int(first_from_elsewhere["Retry-After"]) <= 60
    assert third_from_elsewhere.status_code == 201
    assert [Attachment.objects.filter(conversation=c).count() for c in (first, second, third)] == [2, 1, 1]


async def open_from(conversation: Any, address: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    communicator.scope["client"] = [address, 50000]
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": conversation.token})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"
    return communicator


async def send(communicator: WebsocketCommunicator, text: str) -> dict[str, Any]:
    await communicator.send_json_to({"type": "message", "client_id": str(uuid.uuid4()), "text": text})
    while True:
        frame = await communicator.receive_json_from(timeout=10)
        if frame["type"] in ("message.accepted", "error"):
            return dict(frame)


@pytest.mark.django_db(transaction=True)
async def test_websocket_messages_are_limited_per_address_across_conversations(
    settings: Any, monkeypatch: pytest.MonkeyPatch, enqueued_replies: list[int]
) -> None:
    settings.WIDGET_MESSAGES_PER_MINUTE = 10
    settings.WIDGET_MESSAGES_PER_IP_PER_MINUTE = 3
    monkeypatch.setattr(ratelimit, "time", type("Clock", (), {"time": staticmethod(lambda: 1_900_000_000.0)}))
    address = unique_address()
    first = await database_sync_to_async(ConversationFactory)()
    second = await database_sync_to_async(ConversationFactory)()
    one, two = await open_from(first, address), await open_from(second, address)

    answers = [await send(one, "a"), await send(one, "b"), await send(two, "c"), await send(two, "d")]
    stranger = await open_from(second, unique_address())
    from_elsewhere = await send(stranger, "e")

    assert [answer["type"] for answer in answers] == ["message.accepted"] * 3 + ["error"]
    assert answers[3]["code"] == "rate_limited"
    assert 1 <= answers[3]["retry_after"] <= 60
    assert from_elsewhere["type"] == "message.accepted"
    texts = await database_sync_to_async(
        lambda: sorted(Message.objects.filter(role=Message.Role.CUSTOMER).values_list("text", flat=True))
    )()
    assert texts == ["a", "b", "c", "e"]  # "d" was refused, and not saved
    assert len(enqueued_replies) == 4
    for communicator in (one, two, stranger):
        await communicator.disconnect()


def admin_login(client: Client, password: str = "wrong-password") -> Any:  # noqa: S107 - a test's
    client.get("/admin/login/")
    return client.post(
        "/admin/login/?next=/admin/",
        {
            "username": "someone",
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )


@pytest.mark.django_db
def test_admin_and_console_sign_ins_share_one_budget_per_address(settings: Any) -> None:
    settings.RATE_LIMIT_STAFF_LOGINS = "3/m"
    make_user("Manager", username="someone", is_staff=True)
    address = unique_address()
    client = Client(REMOTE_ADDR=address, enforce_csrf_checks=True)

    with frozen_ratelimit_clock():
        tries = [admin_login(client).status_code for _ in range(2)]
        console = Client(REMOTE_ADDR=address, enforce_csrf_checks=True)
        session = console.get("/api/agent/session").json()
        third = console.post(
            "/api/agent/session",
            json.dumps({"username": "someone", "password": "wrong"}),
            content_type="application/json",
            HTTP_X_CSRFTOKEN=session["csrf_token"],
        )
        refused = admin_login(client, password="a-long-test-password")
        page = client.get("/admin/login/")

    assert tries == [200, 200]  # the login page again, saying the password was wrong
    assert third.status_code == 400
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many sign-in attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session  # the right password was not even checked
    assert page.status_code == 200  # opening the page costs nothing


@pytest.mark.parametrize("value", ["30", "0/m", "30/minute", "ten/m", "30/m/h"])
def test_a_rate_setting_must_be_a_rate(value: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "cs_platform.settings", "RATE_LIMIT_CSAT": value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "RATE_LIMIT_CSAT must be a rate such as 30/m" in result.stderr


@pytest.fixture
def two_servers(transactional_db: None, tmp_path: Path) -> Iterator[list[str]]:
    """Two daphne processes (the production entry point) on one database and one Redis, behind a
    trusted proxy address so that each test names its client in X-Forwarded-For."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": django_settings.REDIS_URL,
        "SECRET_KEY": "rate-limit-test",
        "REPLY_GENERATION_IN_PROCESS": "true",
        "TRUSTED_PROXIES": "127.0.0.1",
        "RATE_LIMIT_NEW_CONVERSATIONS": "4/h",
        "PYTHONUNBUFFERED": "1",
    }
    processes = []
    urls = []
    try:
        for name in ("a", "b"):
            port = free_port()
            processes.append(daphne_start(port=port, environment=environment, log=tmp_path / f"{name}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            stop_process_group(process)


def test_a_limit_holds_across_two_processes_sharing_redis(two_servers: list[str]) -> None:
    # Documentation addresses of their own for this run: Redis keeps an hour's counts between runs.
    client_address, other_address = (f"2001:db8::{uuid.uuid4().hex[:4]}:{n}" for n in (1, 2))
    statuses = []
    with httpx.Client(timeout=30) as http:
        for index in range(6):
            response = http.post(
                f"{two_servers[index % 2]}{CREATE_URL}", headers={"X-Forwarded-For": client_address}
            )
            statuses.append(response.status_code)
        other = http.post(f"{two_servers[1]}{CREATE_URL}", headers={"X-Forwarded-For": other_address})

    # Four in the hour from this client, whichever process took them; then both refuse it.
    assert statuses == [201, 201, 201, 201, 429, 429]
    assert other.status_code == 201  # another client has its own budget
    assert Conversation.objects.filter(customer_ip=client_address).count() == 4
