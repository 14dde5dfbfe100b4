"""The widget's REST API: creating conversations, reading history, quick entries, rate limits."""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from typing import Any
from unittest import mock

import httpx
import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from conversations import replies, services
from conversations.models import Conversation, Message, SatisfactionRating
from conversations.serializers import attachment_data
from cs_platform.asgi import application
from tests import factories
from tests.factories import attachment_for

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
ConversationFactory: Any = factories.ConversationFactory
FaqEntryFactory: Any = factories.FaqEntryFactory
MessageFactory: Any = factories.MessageFactory

CREATE_URL = "/api/widget/conversations"
NOT_AUTHENTICATED = {
    "code": "not_authenticated",
    "detail": "Send the conversation's token as 'Authorization: Bearer <token>'.",
}
INVALID_TOKEN = {"code": "invalid_token", "detail": "This token does not open this conversation."}

# Every test comes from its own address: the rate limits (per address) live in real Redis.
_addresses = itertools.count(random.randrange(1, 2**20) * 8)


def unique_address() -> str:
    number = next(_addresses) % 2**24
    return f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}"


def create(body: Any = None, *, address: str | None = None, **headers: Any) -> Any:
    client = Client(REMOTE_ADDR=address or unique_address())
    if body is None:
        # What a browser's fetch(url, {method: "POST"}) sends: no body and no Content-Type.
        response: Any = client.generic("POST", CREATE_URL, b"", **headers)
    else:
        response = client.post(CREATE_URL, json.dumps(body), content_type="application/json", **headers)
    return response


def messages_url(conversation: Conversation) -> str:
    return f"/api/widget/conversations/{conversation.pk}/messages"


def frozen_ratelimit_clock() -> Any:
    """django-ratelimit's clock, held still so a burst of requests cannot straddle two windows."""
    return mock.patch("django_ratelimit.core.time", mock.Mock(time=mock.Mock(return_value=time.time())))


# --- creating a conversation ---------------------------------------------------------------------


def test_it_creates_a_conversation_and_returns_its_token_once() -> None:
    response = create({"locale": "en"})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "token", "ws_path", "customer_verified"}
    assert body["customer_verified"] is False
    conversation = Conversation.objects.get()
    assert body["id"] == str(conversation.pk)
    assert body["ws_path"] == f"/ws/conversations/{conversation.pk}/"
    assert len(body["token"]) >= 40
    assert conversation.token_hash == services.token_hash(body["token"])
    assert body["token"] not in conversation.token_hash
    assert (conversation.status, conversation.channel) == (
        Conversation.Status.OPEN,
        Conversation.Channel.WIDGET,
    )


def test_it_opens_the_new_conversations_history_with_its_token() -> None:
    body = create().json()

    response = Client().get(
        f"/api/widget/conversations/{body['id']}/messages", HTTP_AUTHORIZATION=f"Bearer {body['token']}"
    )

    assert response.status_code == 200
    assert response.json() == {"messages": []}


def test_it_gives_each_conversation_its_own_token() -> None:
    first = create().json()
    second = create().json()

    assert first["id"] != second["id"]
    assert first["token"] != second["token"]


@pytest.mark.django_db(transaction=True)
async def test_it_opens_the_websocket_at_ws_path_with_the_token() -> None:
    transport = httpx.ASGITransport(app=application, client=(unique_address(), 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        created = await client.post(CREATE_URL, json={"locale": "zh-Hans"})
        other = await client.post(CREATE_URL, json={})
    assert (created.status_code, other.status_code) == (201, 201)
    body = created.json()

    communicator = WebsocketCommunicator(
        application, body["ws_path"], headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": body["token"]})
    ready = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert ready == {
        "type": "ready",
        "conversation": body["id"],
        "messages": [],
        "pending_reply": None,
        "handoff": None,
    }
    intruder = WebsocketCommunicator(application, body["ws_path"], headers=[(b"origin", b"http://localhost")])
    connected, _ = await intruder.connect()
    assert connected
    await intruder.send_json_to({"type": "hello", "token": other.json()["token"]})
    closed = await intruder.receive_output(timeout=5)
    await intruder.disconnect()

    assert closed == {"type": "websocket.close", "code": 4401}


def test_it_takes_the_locale_from_the_body_before_accept_language() -> None:
    response = create({"locale": "zh-Hans"}, HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")

    assert response.status_code == 201
    assert Conversation.objects.get().locale == "zh-Hans"


@pytest.mark.parametrize(
    ("accept_language", "locale"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-Hans"),
        ("zh-CN", "zh-Hans"),
        ("en-US,en;q=0.9", "en"),
        ("fr-FR,fr;q=0.9,zh-TW;q=0.8", "zh-Hans"),
        ("de-DE", "en"),
        ("", "en"),
    ],
)
def test_it_takes_the_locale_from_accept_language_without_one_in_the_body(
    accept_language: str, locale: str
) -> None:
    response = create({"metadata": {}}, HTTP_ACCEPT_LANGUAGE=accept_language)

    assert response.status_code == 201
    assert Conversation.objects.get().locale == locale


def test_it_defaults_to_english_without_a_body_or_accept_language() -> None:
    response = create()

    assert response.status_code == 201
    conversation = Conversation.objects.get()
    assert (conversation.locale, conversation.metadata) == ("en", {})


def test_it_refuses_an_unknown_locale_and_creates_nothing() -> None:
    response = create({"locale": "fr"}, HTTP_ACCEPT_LANGUAGE="en-US")

    assert response.status_code == 400
    assert response.json() == {"code": "invalid_request", "detail": 'locale: "fr" is not a valid choice.'}
    assert Conversation.objects.count() == 0


def test_it_explains_a_refusal_in_the_accept_language() -> None:
    response = create({"locale": "fr"}, HTTP_ACCEPT_LANGUAGE="zh-CN")

    assert response.status_code == 400
    assert response.json() == {"code": "invalid_request", "detail": "locale: “fr” 不是合法选项。"}
    assert Conversation.objects.count() == 0


def test_it_stores_the_metadata() -> None:
    metadata = {"page": "/orders/42", "plan": "pro", "cart": {"items": 3}}

    response = create({"locale": "en", "metadata": metadata})

    assert response.status_code == 201
    assert Conversation.objects.get().metadata == metadata


def test_it_accepts_metadata_of_exactly_4000_characters_of_json() -> None:
    metadata = {"note": "x" * (4000 - len(json.dumps({"note": ""})))}
    assert len(json.dumps(metadata)) == 4000

    response = create({"metadata": metadata})

    assert response.status_code == 201
    assert Conversation.objects.get().metadata == metadata


def test_it_refuses_metadata_over_4000_characters_and_creates_nothing() -> None:
    metadata = {"note": "x" * (4001 - len(json.dumps({"note": ""})))}

    response = create({"metadata": metadata})

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_request",
        "detail": "metadata: Metadata is limited to 4000 characters of JSON.",
    }
    assert Conversation.objects.count() == 0


def test_it_refuses_metadata_that_is_not_an_object() -> None:
    response = create({"metadata": ["a", "b"]})

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_request",
        "detail": 'metadata: Expected a dictionary of items but got type "list".',
    }
    assert Conversation.objects.count() == 0


def test_it_refuses_a_body_that_is_not_json() -> None:
    response = Client(REMOTE_ADDR=unique_address()).post(
        CREATE_URL, "{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert Conversation.objects.count() == 0


def test_it_records_the_customers_address_and_user_agent() -> None:
    address = unique_address()

    response = create({}, address=address, HTTP_USER_AGENT="Mozilla/5.0 (iPhone) WeChat/8.0")

    assert response.status_code == 201
    conversation = Conversation.objects.get()
    assert (conversation.customer_ip, conversation.customer_user_agent) == (
        address,
        "Mozilla/5.0 (iPhone) WeChat/8.0",
    )


def test_it_keeps_the_first_512_characters_of_a_long_user_agent() -> None:
    response = create({}, HTTP_USER_AGENT="A" * 600)

    assert response.status_code == 201
    assert Conversation.objects.get().customer_user_agent == "A" * 512


def test_it_ignores_x_forwarded_for_from_an_untrusted_peer(settings: Any) -> None:
    settings.TRUSTED_PROXIES = []
    address = unique_address()

    create({}, address=address, HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert Conversation.objects.get().customer_ip == address


def test_it_ignores_x_forwarded_for_from_a_peer_outside_the_trusted_proxies(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["192.168.0.0/16"]
    address = unique_address()

    create({}, address=address, HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert Conversation.objects.get().customer_ip == address


def test_it_takes_the_client_address_from_a_trusted_proxy(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]

    create({}, HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert Conversation.objects.get().customer_ip == "203.0.113.9"


def test_it_does_not_believe_hops_a_client_added_before_the_trusted_proxy(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]

    create({}, HTTP_X_FORWARDED_FOR="198.51.100.7, 203.0.113.9")

    assert Conversation.objects.get().customer_ip == "203.0.113.9"


def test_it_walks_back_through_a_chain_of_trusted_proxies(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "172.16.0.0/12"]

    create({}, HTTP_X_FORWARDED_FOR="198.51.100.7, 172.16.5.4")

    assert Conversation.objects.get().customer_ip == "198.51.100.7"


# --- history ----------------------------------------------------------------------------------------


def test_it_asks_for_a_token_when_none_is_sent() -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation)

    response = Client().get(messages_url(conversation))

    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED


def test_it_asks_for_a_bearer_token_when_another_scheme_is_sent() -> None:
    conversation = ConversationFactory()

    response = Client().get(messages_url(conversation), HTTP_AUTHORIZATION=f"Basic {conversation.token}")

    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED


def test_it_refuses_a_wrong_token() -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation)

    response = Client().get(messages_url(conversation), HTTP_AUTHORIZATION="Bearer not-the-token")

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


def test_it_refuses_another_conversations_token() -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="My address is 1 Secret Road")
    other = ConversationFactory()

    response = Client().get(messages_url(conversation), HTTP_AUTHORIZATION=f"Bearer {other.token}")

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert b"Secret Road" not in response.content


def test_it_refuses_a_token_for_a_conversation_that_does_not_exist() -> None:
    conversation = ConversationFactory()

    response = Client().get(
        f"/api/widget/conversations/{uuid.uuid4()}/messages",
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
    )

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


def test_it_lists_the_messages_oldest_first_in_the_contract_shape() -> None:
    conversation = ConversationFactory()
    attachment = attachment_for(conversation)
    first = services.message_post(
        conversation=conversation, text="Where is my parcel?", attachment_ids=[attachment.pk]
    )
    assert first.reply is not None
    citations = [{"title": "Delivery times", "url": "https://help.example.com/delivery"}]
    replies.reply_finish(
        reply_id=first.reply.pk, text="It ships tomorrow.", outcome=replies.ReplyOutcome.COMPLETE
    )
    # Citations come with knowledge retrieval, which is not built yet: set as it will save them.
    Message.objects.filter(pk=first.reply.pk).update(citations=citations)
    second = services.message_post(conversation=conversation, text="Thanks!")
    assert second.reply is not None
    other_conversation = ConversationFactory()
    MessageFactory(conversation=other_conversation, text="Not in this conversation")

    response = Client().get(messages_url(conversation), HTTP_AUTHORIZATION=f"Bearer {conversation.token}")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["messages"]
    messages = body["messages"]
    saved = {message.pk: message for message in Message.objects.filter(conversation=conversation)}
    assert [message["id"] for message in messages] == [
        first.message.pk,
        first.reply.pk,
        second.message.pk,
        second.reply.pk,
    ]
    assert [set(message) for message in messages] == [
        {
            "id",
            "role",
            "text",
            "status",
            "attachments",
            "source",
            "citations",
            "truncated",
            "error",
            "created_at",
        }
    ] * 4
    assert [m["error"] for m in messages] == [None] * 4
    assert [(m["role"], m["text"], m["status"], m["citations"]) for m in messages] == [
        ("customer", "Where is my parcel?", "complete", []),
        ("assistant", "It ships tomorrow.", "complete", citations),
        ("customer", "Thanks!", "complete", []),
        ("assistant", "", "streaming", []),
    ]
    assert [m["created_at"] for m in messages] == [saved[m["id"]].created_at.isoformat() for m in messages]
    assert [len(m["attachments"]) for m in messages] == [1, 0, 0, 0]
    sent = messages[0]["attachments"][0]
    expected = attachment_data(attachment)
    assert {key: sent[key] for key in ("id", "content_type", "width", "height")} == {
        "id": str(attachment.pk),
        "content_type": "image/jpeg",
        "width": 64,
        "height": 48,
    }
    assert sent["url"].split("?")[0] == expected["url"].split("?")[0]
    assert sent["thumbnail_url"].split("?")[0] == expected["thumbnail_url"].split("?")[0]


def test_it_lists_a_failed_reply_with_its_error_in_the_conversations_language() -> None:
    conversation = ConversationFactory(locale="zh-Hans")
    posted = services.message_post(conversation=conversation, text="订单到哪了？")
    assert posted.reply is not None
    replies.reply_fail(reply_id=posted.reply.pk, code="inference_timeout")

    response = Client().get(messages_url(conversation), HTTP_AUTHORIZATION=f"Bearer {conversation.token}")

    assert [(m["role"], m["status"], m["error"]) for m in response.json()["messages"]] == [
        ("customer", "complete", None),
        (
            "assistant",
            "failed",
            {"code": "inference_timeout", "detail": "智能助手响应超时，请重试，或转接人工客服。"},
        ),
    ]


def test_it_lists_system_and_agent_messages_in_order() -> None:
    conversation = ConversationFactory(locale="zh-Hans")
    # Not a phrase that asks for a person (that hands off by itself, with no reply): the button does.
    services.message_post(conversation=conversation, text="订单到哪了？")
    services.handoff_request(conversation=conversation, reason="asked for a person")
    MessageFactory(conversation=conversation, role=Message.Role.AGENT, text="您好，我是小王。")

    response = Client().get(messages_url(conversation), HTTP_AUTHORIZATION=f"Bearer {conversation.token}")

    assert [(m["role"], m["text"]) for m in response.json()["messages"]] == [
        ("customer", "订单到哪了？"),
        ("assistant", ""),
        ("system", "已为您转接人工客服，请稍候。"),
        ("agent", "您好，我是小王。"),
    ]


# --- rating a conversation (CSAT) -------------------------------------------------------------------


def csat_url(conversation: Conversation) -> str:
    return f"/api/widget/conversations/{conversation.pk}/csat"


def rate(conversation: Any, body: Any, *, token: str | None = None, address: str | None = None) -> Any:
    """POST a rating with the conversation's token (or another, or none with token="")."""
    headers: dict[str, Any] = (
        {} if token == "" else {"HTTP_AUTHORIZATION": f"Bearer {token or conversation.token}"}
    )
    return Client(REMOTE_ADDR=address or unique_address()).post(
        csat_url(conversation), json.dumps(body), content_type="application/json", **headers
    )


def saved_ratings() -> list[tuple[Any, int, str]]:
    return list(SatisfactionRating.objects.values_list("conversation_id", "score", "comment"))


def test_it_records_a_rating_of_an_earlier_conversation_with_its_token() -> None:
    conversation = ConversationFactory()
    current = ConversationFactory()

    response = rate(conversation, {"score": 4, "comment": "  Quick and polite.  "})

    assert response.status_code == 200
    rating = SatisfactionRating.objects.get()
    assert response.json() == {
        "conversation": str(conversation.pk),
        "score": 4,
        "comment": "Quick and polite.",
        "created_at": rating.created_at.isoformat(),
        "updated_at": rating.updated_at.isoformat(),
    }
    assert saved_ratings() == [(conversation.pk, 4, "Quick and polite.")]
    assert not SatisfactionRating.objects.filter(conversation=current).exists()


def test_it_records_a_rating_without_a_comment() -> None:
    conversation = ConversationFactory()

    response = rate(conversation, {"score": 5})

    assert response.status_code == 200
    assert response.json()["comment"] == ""
    assert saved_ratings() == [(conversation.pk, 5, "")]


def test_it_changes_the_rating_when_the_customer_rates_again() -> None:
    conversation = ConversationFactory()
    rate(conversation, {"score": 1, "comment": "Slow."})

    response = rate(conversation, {"score": 3, "comment": "Better after all."})

    assert response.status_code == 200
    assert (response.json()["score"], response.json()["comment"]) == (3, "Better after all.")
    assert saved_ratings() == [(conversation.pk, 3, "Better after all.")]


@pytest.mark.parametrize("score", [0, 6, -1, "5", 4.5, True, None, [5]])
def test_it_refuses_a_score_that_is_not_a_whole_number_from_1_to_5_and_changes_nothing(score: Any) -> None:
    conversation = ConversationFactory()
    services.csat_record(conversation=conversation, score=2, comment="Kept.")

    response = rate(conversation, {"score": score, "comment": "Replaced?"})

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_score",
        "detail": "A satisfaction score is a whole number from 1 to 5.",
    }
    assert saved_ratings() == [(conversation.pk, 2, "Kept.")]


def test_it_refuses_a_rating_without_a_score_and_records_nothing() -> None:
    conversation = ConversationFactory()

    response = rate(conversation, {"comment": "No stars."})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_score"
    assert saved_ratings() == []


def test_it_refuses_a_comment_over_2000_characters_and_records_nothing() -> None:
    conversation = ConversationFactory()

    response = rate(conversation, {"score": 4, "comment": "x" * 2001})

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_request",
        "detail": "comment: Ensure this field has no more than 2000 characters.",
    }
    assert saved_ratings() == []


def test_it_refuses_a_body_that_is_not_an_object_and_records_nothing() -> None:
    conversation = ConversationFactory()

    response = rate(conversation, [5])

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_request",
        "detail": 'Send a JSON object: {"score": 1..5, "comment": "..."}.',
    }
    assert saved_ratings() == []


def test_it_refuses_a_rating_without_a_token_and_records_nothing() -> None:
    conversation = ConversationFactory()

    response = rate(conversation, {"score": 5}, token="")

    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED
    assert saved_ratings() == []


def test_it_refuses_a_rating_with_another_conversations_token_and_changes_nothing() -> None:
    conversation = ConversationFactory()
    services.csat_record(conversation=conversation, score=5, comment="Great.")
    other = ConversationFactory()

    response = rate(conversation, {"score": 1, "comment": "Forged."}, token=other.token)

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert saved_ratings() == [(conversation.pk, 5, "Great.")]


def test_it_refuses_a_rating_of_a_conversation_that_does_not_exist() -> None:
    conversation = ConversationFactory()
    url = f"/api/widget/conversations/{uuid.uuid4()}/csat"

    response = Client().post(
        url, json.dumps({"score": 5}), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
    )  # fmt: skip

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert saved_ratings() == []


def test_it_refuses_a_31st_rating_in_a_minute_from_one_address() -> None:
    conversation = ConversationFactory()
    address = unique_address()

    with frozen_ratelimit_clock():
        statuses = [rate(conversation, {"score": 4}, address=address).status_code for _ in range(30)]
        refused = rate(conversation, {"score": 1, "comment": "Over the limit."}, address=address)

    assert statuses == [200] * 30
    assert refused.status_code == 429
    assert refused.json() == {
        "code": "rate_limited",
        "detail": "Too many ratings from this address; try again shortly.",
    }
    assert saved_ratings() == [(conversation.pk, 4, "")]


# --- quick entries ----------------------------------------------------------------------------------


def test_it_lists_the_published_quick_entries_of_a_locale_by_position() -> None:
    second = FaqEntryFactory(locale="zh-Hans", question="如何退货？", position=2)
    first = FaqEntryFactory(locale="zh-Hans", question="运费多少？", position=1)
    FaqEntryFactory(locale="zh-Hans", question="未发布的问题", position=0, is_published=False)
    FaqEntryFactory(locale="zh-Hans", question="不是快捷问题", position=0, is_quick_entry=False)
    FaqEntryFactory(locale="en", question="How do I return an item?", position=0)

    response = Client().get("/api/widget/faq?locale=zh-Hans")

    assert response.status_code == 200
    assert response.json() == {
        "entries": [
            {"id": first.pk, "question": "运费多少？"},
            {"id": second.pk, "question": "如何退货？"},
        ]
    }


def test_it_lists_quick_entries_in_the_accept_language_without_a_locale() -> None:
    FaqEntryFactory(locale="zh-Hans", question="运费多少？")
    english = FaqEntryFactory(locale="en", question="How much is shipping?")

    chinese_response = Client().get("/api/widget/faq", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")
    english_response = Client().get("/api/widget/faq")

    assert [entry["question"] for entry in chinese_response.json()["entries"]] == ["运费多少？"]
    assert english_response.json() == {"entries": [{"id": english.pk, "question": "How much is shipping?"}]}


def test_it_lists_no_quick_entries_when_none_are_published() -> None:
    FaqEntryFactory(locale="en", is_published=False)

    response = Client().get("/api/widget/faq?locale=en")

    assert response.status_code == 200
    assert response.json() == {"entries": []}


def test_it_refuses_an_unknown_faq_locale() -> None:
    response = Client().get("/api/widget/faq?locale=fr")

    assert response.status_code == 400
    assert response.json() == {"code": "invalid_locale", "detail": "locale must be one of zh-Hans, en."}


# --- rate limit -------------------------------------------------------------------------------------


def test_it_refuses_a_31st_conversation_in_a_minute_from_one_address() -> None:
    address = unique_address()

    with frozen_ratelimit_clock():
        statuses = [create({}, address=address).status_code for _ in range(30)]
        refused = create({}, address=address)
        elsewhere = create({})

    assert statuses == [201] * 30
    assert refused.status_code == 429
    assert refused.json() == {
        "code": "rate_limited",
        "detail": "Too many new conversations from this address; try again shortly.",
    }
    assert elsewhere.status_code == 201
    assert Conversation.objects.count() == 31
    assert Conversation.objects.filter(customer_ip=address).count() == 30


def test_it_limits_each_client_behind_a_trusted_proxy_separately(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    proxy = unique_address()
    customer = f"198.51.{random.randrange(256)}.{random.randrange(1, 255)}"
    neighbour = f"203.0.{random.randrange(256)}.{random.randrange(1, 255)}"

    with frozen_ratelimit_clock():
        statuses = [create({}, address=proxy, HTTP_X_FORWARDED_FOR=customer).status_code for _ in range(30)]
        refused = create({}, address=proxy, HTTP_X_FORWARDED_FOR=customer)
        neighbour_response = create({}, address=proxy, HTTP_X_FORWARDED_FOR=neighbour)

    assert statuses == [201] * 30
    assert refused.status_code == 429
    assert neighbour_response.status_code == 201
    assert Conversation.objects.filter(customer_ip=customer).count() == 30
    assert Conversation.objects.filter(customer_ip=neighbour).count() == 1


# --- error shapes and rate-limit headers ------------------------------------------------------------


def test_it_refuses_a_body_that_is_not_json_with_invalid_json() -> None:
    response = Client(REMOTE_ADDR=unique_address()).post(
        CREATE_URL, "{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {"code": "invalid_json", "detail": "The request body is not valid JSON."}
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/widget/conversations/not-a-uuid/messages",
        "/api/widget/nothing-here",
        "/api/other",
    ],
)
def test_it_answers_an_unknown_api_path_with_a_json_404(path: str) -> None:
    response = Client().get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"code": "not_found", "detail": "There is nothing at this address."}


def test_it_answers_an_unknown_page_outside_the_api_with_the_html_404() -> None:
    response = Client().get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_it_answers_a_server_error_in_the_api_with_a_json_500(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(**_: Any) -> Any:
        raise RuntimeError("the database is on fire")

    monkeypatch.setattr(services, "conversation_create", explode)
    client = Client(REMOTE_ADDR=unique_address(), raise_request_exception=False)

    response = client.post(CREATE_URL, "{}", content_type="application/json")

    assert response.status_code == 500
    assert response.json() == {
        "code": "server_error",
        "detail": "Something went wrong on our side; please try again.",
    }
    assert "on fire" not in response.content.decode()


def test_it_tells_a_rate_limited_client_when_to_come_back() -> None:
    address = unique_address()
    conversation = ConversationFactory()

    with frozen_ratelimit_clock():
        for _ in range(30):
            create({}, address=address)
            rate(conversation, {"score": 4}, address=address)
        refused_create = create({}, address=address)
        refused_rating = rate(conversation, {"score": 4}, address=address)

    assert (refused_create.status_code, refused_rating.status_code) == (429, 429)
    for refused in (refused_create, refused_rating):
        assert 1 <= int(refused["Retry-After"]) <= 60


def test_it_gives_429_its_reason_phrase_under_daphne() -> None:
    from twisted.web.http import RESPONSES

    import cs_platform.asgi  # noqa: F401  (what daphne loads)

    assert RESPONSES[429] == b"Too Many Requests"
