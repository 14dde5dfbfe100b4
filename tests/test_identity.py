"""A verified customer: the host site's customer id with its HMAC, checked when a conversation opens."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import random
from typing import Any

import pytest
from django.test import Client

from conversations import services
from conversations.api import customer_hash, customer_hash_matches
from conversations.models import Conversation
from tests import factories

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
ConversationFactory: Any = factories.ConversationFactory

CREATE_URL = "/api/widget/conversations"
SECRET = "identity-secret-for-tests"
WRONG_HASH = {"code": "invalid_identity", "detail": "The customer's hash does not match its id."}
NO_HASH = {
    "code": "invalid_identity",
    "detail": "The customer's id came without its hash (the HMAC-SHA256 of the id, in hex).",
}
NO_SECRET = {
    "code": "invalid_identity",
    "detail": "This platform cannot verify customers: it has no WIDGET_IDENTITY_SECRET.",
}

# Every test comes from its own address: the limit on new conversations (per address) lives in Redis.
_addresses = itertools.count(random.randrange(1, 2**20) * 8)


@pytest.fixture(autouse=True)
def _identity_secret(settings: Any) -> None:
    settings.WIDGET_IDENTITY_SECRET = SECRET


def unique_address() -> str:
    number = next(_addresses) % 2**24
    return f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}"


def signed(customer_id: str, secret: str = SECRET) -> str:
    """What the host site's server computes, written out here rather than through the code under test."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def create(body: Any) -> Any:
    client = Client(REMOTE_ADDR=unique_address())
    return client.post(CREATE_URL, json.dumps(body), content_type="application/json")


# --- verified -------------------------------------------------------------------------------------


def test_it_stores_a_customer_whose_hash_matches() -> None:
    response = create({"locale": "en", "customer": {"id": "C-42", "hash": signed("C-42")}})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "token", "ws_path", "customer_verified"}
    assert body["customer_verified"] is True
    conversation = Conversation.objects.get()
    assert body["id"] == str(conversation.pk)
    assert conversation.verified_customer_id == "C-42"


def test_it_accepts_the_hash_in_upper_case_hex() -> None:
    response = create({"customer": {"id": "C-42", "hash": signed("C-42").upper()}})

    assert response.status_code == 201
    assert response.json()["customer_verified"] is True
    assert Conversation.objects.get().verified_customer_id == "C-42"


def test_it_signs_an_id_of_every_character_as_its_utf8_bytes() -> None:
    customer_id = "客户-7 ✓ " + "x" * 121
    assert len(customer_id) == 128

    response = create({"customer": {"id": customer_id, "hash": signed(customer_id)}})

    assert response.status_code == 201
    assert Conversation.objects.get().verified_customer_id == customer_id


def test_it_takes_a_whole_number_id_as_its_decimal_string() -> None:
    response = create({"customer": {"id": 1234, "hash": signed("1234")}})

    assert response.status_code == 201
    assert Conversation.objects.get().verified_customer_id == "1234"


def test_it_opens_an_anonymous_conversation_without_a_customer() -> None:
    response = create({"locale": "en"})

    assert response.status_code == 201
    assert response.json()["customer_verified"] is False
    assert Conversation.objects.get().verified_customer_id == ""


def test_it_takes_a_null_customer_as_none() -> None:
    response = create({"customer": None})

    assert response.status_code == 201
    assert response.json()["customer_verified"] is False
    assert Conversation.objects.get().verified_customer_id == ""


def test_it_keeps_the_other_fields_alongside_a_verified_customer() -> None:
    response = create(
        {
            "locale": "zh-Hans",
            "metadata": {"plan": "gold"},
            "customer": {"id": "C-42", "hash": signed("C-42")},
        }
    )

    assert response.status_code == 201
    conversation = Conversation.objects.get()
    assert (conversation.locale, conversation.metadata, conversation.verified_customer_id) == (
        "zh-Hans",
        {"plan": "gold"},
        "C-42",
    )


# --- refused --------------------------------------------------------------------------------------


def test_it_refuses_a_wrong_hash_and_creates_nothing() -> None:
    response = create({"customer": {"id": "C-42", "hash": "0" * 64}})

    assert response.status_code == 403
    assert response.json() == WRONG_HASH
    assert Conversation.objects.count() == 0


def test_it_refuses_the_hash_of_another_id_and_creates_nothing() -> None:
    response = create({"customer": {"id": "C-43", "hash": signed("C-42")}})

    assert response.status_code == 403
    assert response.json() == WRONG_HASH
    assert Conversation.objects.count() == 0


def test_it_refuses_a_hash_made_with_another_secret_and_creates_nothing() -> None:
    response = create({"customer": {"id": "C-42", "hash": signed("C-42", secret="another-secret")}})

    assert response.status_code == 403
    assert response.json() == WRONG_HASH
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize(
    "given_hash",
    [
        signed("C-42")[:-1],  # one digit short
        signed("C-42") + "0",  # one digit over
        " " + signed("C-42"),  # not trimmed: the hash is exactly what the host signed
        "é" * 64,  # not ASCII (compare_digest would raise on it)
        "zz" * 32,  # not hex
    ],
)
def test_it_refuses_a_hash_that_is_not_the_ids_hex_hmac_and_creates_nothing(given_hash: str) -> None:
    response = create({"customer": {"id": "C-42", "hash": given_hash}})

    assert response.status_code == 403
    assert response.json() == WRONG_HASH
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize(
    "customer", [{"id": "C-42"}, {"id": "C-42", "hash": ""}, {"id": "C-42", "hash": None}]
)
def test_it_refuses_an_id_without_its_hash_and_creates_nothing(customer: dict[str, Any]) -> None:
    response = create({"customer": customer})

    assert response.status_code == 403
    assert response.json() == NO_HASH
    assert Conversation.objects.count() == 0


def test_it_refuses_a_customer_when_the_platform_has_no_secret_and_creates_nothing(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.WIDGET_IDENTITY_SECRET = ""

    with caplog.at_level(logging.WARNING, logger="conversations.api"):
        # Even the HMAC an empty key makes: no secret means nobody can be verified.
        response = create({"customer": {"id": "C-42", "hash": signed("C-42", secret="")}})

    assert response.status_code == 403
    assert response.json() == NO_SECRET
    assert Conversation.objects.count() == 0
    assert [record.getMessage() for record in caplog.records if record.name == "conversations.api"] == [
        "A widget conversation named a customer, but WIDGET_IDENTITY_SECRET is not set"
    ]


def test_it_still_opens_anonymous_conversations_without_a_secret(settings: Any) -> None:
    settings.WIDGET_IDENTITY_SECRET = ""

    response = create({"locale": "en"})

    assert response.status_code == 201
    assert response.json()["customer_verified"] is False
    assert Conversation.objects.get().verified_customer_id == ""


@pytest.mark.parametrize(
    ("customer", "detail"),
    [
        ("C-42", 'customer: Send the customer as {"id": "...", "hash": "..."}.'),
        (["C-42", "abc"], 'customer: Send the customer as {"id": "...", "hash": "..."}.'),
        ({"hash": "abc"}, "customer: The customer's id is a non-empty string."),
        ({"id": "", "hash": "abc"}, "customer: The customer's id is a non-empty string."),
        ({"id": None, "hash": "abc"}, "customer: The customer's id is a non-empty string."),
        ({"id": True, "hash": "abc"}, "customer: The customer's id is a non-empty string."),
        ({"id": 12.5, "hash": "abc"}, "customer: The customer's id is a non-empty string."),
        ({"id": ["C-42"], "hash": "abc"}, "customer: The customer's id is a non-empty string."),
        ({"id": "x" * 129, "hash": "abc"}, "customer: The customer's id is at most 128 characters."),
        ({"id": "C-42\x00", "hash": "abc"}, "customer: The customer's id cannot contain control characters."),
        ({"id": "C-42\n", "hash": "abc"}, "customer: The customer's id cannot contain control characters."),
        ({"id": "C-42", "hash": 1234}, "customer: The customer's hash is a string of hex digits."),
        ({"id": "C-42", "hash": ["abc"]}, "customer: The customer's hash is a string of hex digits."),
    ],
)
def test_it_refuses_a_customer_of_the_wrong_shape_and_creates_nothing(customer: Any, detail: str) -> None:
    response = create({"customer": customer})

    assert response.status_code == 400
    assert response.json() == {"code": "invalid_request", "detail": detail}
    assert Conversation.objects.count() == 0


def test_it_leaves_existing_conversations_as_they_were_on_a_refusal() -> None:
    existing = ConversationFactory(verified_customer_id="C-42")

    response = create({"customer": {"id": "C-42", "hash": signed("C-43")}})

    assert response.status_code == 403
    assert list(Conversation.objects.values_list("pk", "verified_customer_id")) == [(existing.pk, "C-42")]


# --- the functions the view uses ------------------------------------------------------------------


def test_it_computes_the_hash_the_host_site_computes() -> None:
    assert customer_hash(customer_id="C-42", secret=SECRET) == signed("C-42")
    # RFC 4231 test case 2: HMAC-SHA256 with the key "Jefe".
    assert (
        customer_hash(customer_id="what do ya want for nothing?", secret="Jefe")
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_it_matches_a_hash_in_either_case_only_for_its_own_id() -> None:
    good = signed("C-42")

    assert customer_hash_matches(customer_id="C-42", given_hash=good, secret=SECRET) is True
    assert customer_hash_matches(customer_id="C-42", given_hash=good.upper(), secret=SECRET) is True
    assert customer_hash_matches(customer_id="C-43", given_hash=good, secret=SECRET) is False
    assert customer_hash_matches(customer_id="C-42", given_hash=good, secret="other") is False
    assert customer_hash_matches(customer_id="C-42", given_hash="", secret=SECRET) is False


# --- stored, and shown to staff -------------------------------------------------------------------


def test_it_stores_the_verified_id_through_the_service() -> None:
    conversation, _token = services.conversation_create(locale="en", verified_customer_id="C-42")

    conversation.refresh_from_db()
    assert conversation.verified_customer_id == "C-42"


def test_it_shows_the_verified_id_read_only_on_the_admin_page(admin_client: Client) -> None:
    conversation = ConversationFactory(verified_customer_id="C-42")

    page = admin_client.get(f"/admin/conversations/conversation/{conversation.pk}/change/").content.decode()

    assert '<div class="form-row field-verified_customer_id">' in page
    assert '<div class="readonly">C-42</div>' in page
    assert 'name="verified_customer_id"' not in page


def test_it_finds_a_customers_conversations_by_verified_id_in_admin(admin_client: Client) -> None:
    theirs = ConversationFactory(verified_customer_id="C-42")
    ConversationFactory(verified_customer_id="C-7")
    ConversationFactory()

    response = admin_client.get("/admin/conversations/conversation/", {"q": "C-42"})

    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [theirs.pk]
