"""The agent console's REST API: staff sessions and CSRF, the queues, transcripts, claim, reply, resolve."""

from __future__ import annotations

import itertools
import json
import random
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents.events import agents_conversation_group
from conversations import services
from conversations.events import conversation_group
from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from tests import factories
from tests.factories import GroupListener, attachment_for, handed_off, make_user

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

_addresses = itertools.count(random.randrange(1, 2**20) * 8)


def unique_address() -> str:
    number = next(_addresses) % 2**24
    return f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}"


class AgentClient:
    """A browser with a staff session: it sends the CSRF token back on writes, as the console does."""

    def __init__(self, user: User | None) -> None:
        self.client = Client(enforce_csrf_checks=True, REMOTE_ADDR=unique_address())
        if user is not None:
            self.client.force_login(user)
        response = self.client.get("/api/agent/session")
        self.csrf_token = response.json()["csrf_token"]

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params)

    def post(self, path: str, body: Any = None, *, csrf: bool = True) -> Any:
        headers = {"HTTP_X_CSRFTOKEN": self.csrf_token} if csrf else {}
        return self.client.post(
            path, json.dumps(body if body is not None else {}), content_type="application/json", **headers
        )


def url(conversation: Conversation, action: str = "") -> str:
    base = f"/api/agent/conversations/{conversation.pk}"
    return f"{base}/{action}" if action else base


# --- who may use it ---------------------------------------------------------------------------------


def test_it_refuses_a_request_without_a_session_with_403_not_authenticated():
    response = AgentClient(None).get("/api/agent/conversations")

    assert response.status_code == 403
    assert response.json() == {
        "code": "not_authenticated",
        "detail": "Log in with a staff account first (POST /api/agent/session).",
    }


def test_it_refuses_staff_outside_the_agent_groups_with_403_not_an_agent():
    conversation = handed_off()
    staff = make_user(group=None, is_staff=True)
    client = AgentClient(staff)

    listed = client.get("/api/agent/conversations")
    claimed = client.post(url(conversation, "claim"))

    not_an_agent = {
        "code": "not_an_agent",
        "detail": "Only people in the Agent, Supervisor or Manager group may use the agent console.",
    }
    assert (listed.status_code, listed.json()) == (403, not_an_agent)
    assert (claimed.status_code, claimed.json()) == (403, not_an_agent)
    assert Ticket.objects.get(conversation=conversation).assignee is None


@pytest.mark.parametrize("group", ["Agent", "Supervisor", "Manager"])
def test_it_admits_each_agent_group(group):
    client = AgentClient(make_user(group=group))

    response = client.get("/api/agent/conversations")

    assert response.status_code == 200
    assert response.json() == {"queue": "waiting", "conversations": [], "counts": {"waiting": 0, "mine": 0}}


def test_it_admits_a_superuser_in_no_group():
    client = AgentClient(make_user(group=None, is_superuser=True, is_staff=True))

    assert client.get("/api/agent/conversations").status_code == 200


def test_it_refuses_a_post_without_the_csrf_token_and_changes_nothing():
    conversation = handed_off()
    client = AgentClient(make_user())

    response = client.post(url(conversation, "claim"), csrf=False)

    assert response.status_code == 403
    assert response.json() == {
        "code": "csrf_failed",
        "detail": "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header.",
    }
    ticket = Ticket.objects.get(conversation=conversation)
    assert (ticket.status, ticket.assignee) == (Ticket.Status.OPEN, None)


def test_it_logs_an_agent_in_and_out_through_the_session_endpoint():
    user = make_user(first_name="Li", last_name="Na", username="lina")
    client = AgentClient(None)

    logged_in = client.post("/api/agent/session", {"username": "lina", "password": "a-long-test-password"})
    listed = client.get("/api/agent/conversations")
    session = client.get("/api/agent/session").json()
    # Django rotates the CSRF token at login: the console takes the new one from the answer.
    logged_out = client.client.delete("/api/agent/session", HTTP_X_CSRFTOKEN=logged_in.json()["csrf_token"])
    after = client.get("/api/agent/conversations")

    assert logged_in.status_code == 200
    assert logged_in.json()["agent"] == {"id": user.pk, "username": "lina", "name": "Li Na"}
    assert logged_in.json()["groups"] == ["Agent"]
    assert listed.status_code == 200
    assert (session["authenticated"], session["is_agent"], session["agent"]["name"]) == (True, True, "Li Na")
    assert logged_out.status_code == 204
    assert after.status_code == 403


def test_it_refuses_a_login_without_the_csrf_token():
    make_user(username="nocsrf")
    client = AgentClient(None)

    response = client.post(
        "/api/agent/session", {"username": "nocsrf", "password": "a-long-test-password"}, csrf=False
    )

    assert (response.status_code, response.json()["code"]) == (403, "csrf_failed")
    assert client.get("/api/agent/conversations").status_code == 403


def test_it_refuses_a_wrong_password_and_a_login_by_someone_outside_the_groups():
    make_user(username="wrongpass")
    make_user(group=None, username="outsider", is_staff=True)
    client = AgentClient(None)

    wrong = client.post("/api/agent/session", {"username": "wrongpass", "password": "not-it"})
    outsider = client.post("/api/agent/session", {"username": "outsider", "password": "a-long-test-password"})

    assert (wrong.status_code, wrong.json()) == (
        400,
        {"code": "invalid_credentials", "detail": "The username or password is wrong."},
    )
    assert (outsider.status_code, outsider.json()["code"]) == (403, "not_an_agent")
    assert client.get("/api/agent/session").json()["authenticated"] is False


# --- the queues -------------------------------------------------------------------------------------


def test_it_lists_the_waiting_queue_oldest_first_without_claimed_or_resolved_ones():
    newest = handed_off(minutes_ago=1, reason="Newest")
    oldest = handed_off(minutes_ago=30, reason="Oldest", locale=Conversation.Locale.ZH_HANS)
    middle = handed_off(minutes_ago=10, reason="Middle")
    claimed = handed_off(minutes_ago=40)
    resolved = handed_off(minutes_ago=50)
    ConversationFactory()  # the assistant still answers this one: no ticket
    colleague = make_user()
    Ticket.objects.filter(conversation=claimed).update(status=Ticket.Status.ASSIGNED, assignee=colleague)
    services.ticket_resolve(ticket=Ticket.objects.get(conversation=resolved))

    body = AgentClient(make_user()).get("/api/agent/conversations", queue="waiting").json()

    assert [row["id"] for row in body["conversations"]] == [str(oldest.pk), str(middle.pk), str(newest.pk)]
    first = body["conversations"][0]
    ticket = Ticket.objects.get(conversation=oldest)
    customer_message = Message.objects.get(conversation=oldest, role=Message.Role.CUSTOMER)
    assert first["status"] == "handed_off"
    assert first["locale"] == "zh-Hans"
    assert first["waiting_since"] == ticket.created_at.isoformat()
    assert first["ticket"]["id"] == ticket.pk
    assert first["ticket"]["reason"] == "Oldest"
    assert first["ticket"]["assignee"] is None
    # The handoff's system notice is not a preview: the customer's last words are.
    assert first["last_message"]["id"] == customer_message.pk
    assert first["last_message"]["text"] == "My parcel never arrived."
    assert first["last_message"]["internal"] is False
    assert body["counts"] == {"waiting": 3, "mine": 0}


def test_it_lists_mine_and_all():
    me = make_user()
    colleague = make_user()
    waiting = handed_off(minutes_ago=5)
    mine = handed_off(minutes_ago=20)
    theirs = handed_off(minutes_ago=30)
    Ticket.objects.filter(conversation=mine).update(status=Ticket.Status.ASSIGNED, assignee=me)
    Ticket.objects.filter(conversation=theirs).update(status=Ticket.Status.ASSIGNED, assignee=colleague)
    client = AgentClient(me)

    mine_body = client.get("/api/agent/conversations", queue="mine").json()
    all_body = client.get("/api/agent/conversations", queue="all").json()

    assert [row["id"] for row in mine_body["conversations"]] == [str(mine.pk)]
    assert mine_body["conversations"][0]["ticket"]["assignee"] == {
        "id": me.pk,
        "username": me.username,
        "name": me.username,
    }
    assert [row["id"] for row in all_body["conversations"]] == [str(theirs.pk), str(mine.pk), str(waiting.pk)]
    assert all_body["counts"] == {"waiting": 1, "mine": 1}


def test_it_reads_a_queue_in_the_same_number_of_queries_however_long_it_is():
    client = AgentClient(make_user())

    def queries_for_queue() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/api/agent/conversations", queue="all").status_code == 200
        return len(queries)

    for _ in range(2):
        handed_off()
    short = queries_for_queue()
    author = make_user()
    for number in range(4):
        conversation = handed_off()
        if number % 2:
            # Last messages with an image, and ones with an author: loaded in bulk, not per row.
            photo = attachment_for(conversation)
            photo.message = MessageFactory(conversation=conversation)
            photo.save(update_fields=["message"])
        else:
            MessageFactory(conversation=conversation, role=Message.Role.AGENT, author=author, internal=True)
    long = queries_for_queue()

    assert long == short


def test_it_refuses_an_unknown_queue():
    response = AgentClient(make_user()).get("/api/agent/conversations", queue="everything")

    assert (response.status_code, response.json()) == (
        400,
        {"code": "invalid_queue", "detail": "queue must be one of waiting, mine, all."},
    )


# --- a whole conversation ---------------------------------------------------------------------------


def test_it_returns_every_message_with_internal_notes_attachments_citations_and_ratings():
    agent = make_user(first_name="Ada", last_name="Chen")
    conversation = handed_off()
    photo = attachment_for(conversation)
    with_photo = MessageFactory(conversation=conversation, text="Here is the label.")
    photo.message = with_photo
    photo.save(update_fields=["message"])
    citation = {"article": 7, "title": "Lost parcels", "anchor": "claims", "url": "/kb/lost-parcels/#claims"}
    reply = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=Message.Source.MODEL,
        text="Please wait 3 days [1].",
        citations=[citation],
    )
    Feedback.objects.create(message=reply, rating=-1, comment="Too slow")
    SatisfactionRating.objects.create(conversation=conversation, score=2, comment="Meh")
    note = Message.objects.create(
        conversation=conversation,
        role=Message.Role.AGENT,
        source=Message.Source.AGENT,
        text="Customer is a VIP.",
        author=agent,
        internal=True,
    )

    response = AgentClient(make_user()).get(url(conversation))

    assert response.status_code == 200
    body = response.json()
    assert body["conversation"]["id"] == str(conversation.pk)
    assert body["conversation"]["status"] == "handed_off"
    assert body["conversation"]["csat"]["score"] == 2
    assert body["conversation"]["csat"]["comment"] == "Meh"
    assert body["ticket"]["reason"] == "Wants a person"
    assert [ticket["id"] for ticket in body["tickets"]] == [body["ticket"]["id"]]
    by_id = {message["id"]: message for message in body["messages"]}
    assert [message["id"] for message in body["messages"]] == list(
        Message.objects.filter(conversation=conversation)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
    )
    assert [attachment["id"] for attachment in by_id[with_photo.pk]["attachments"]] == [str(photo.pk)]
    assert by_id[reply.pk]["citations"] == [citation]
    assert by_id[reply.pk]["feedback"] == {"rating": -1, "comment": "Too slow"}
    assert by_id[note.pk]["internal"] is True
    assert by_id[note.pk]["author"] == {"id": agent.pk, "username": agent.username, "name": "Ada Chen"}
    assert by_id[with_photo.pk]["internal"] is False


def test_it_answers_404_for_an_unknown_conversation():
    response = AgentClient(make_user()).get("/api/agent/conversations/5b7f4c8e-0000-4000-8000-000000000000")

    assert (response.status_code, response.json()["code"]) == (404, "not_found")


# --- claim --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_claims_a_ticket_and_tells_the_customer_who_joined():
    agent = make_user(first_name="Mei", last_name="Lin")
    conversation = handed_off()
    customer = GroupListener(conversation_group(conversation.pk))
    try:
        response = AgentClient(agent).post(url(conversation, "claim"))
        joined = customer.receive()
    finally:
        customer.close()

    ticket = Ticket.objects.get(conversation=conversation)
    assert response.status_code == 200
    assert response.json()["ticket"]["id"] == ticket.pk
    assert response.json()["ticket"]["assignee"]["name"] == "Mei Lin"
    assert response.json()["claimed_here"] is True
    assert (ticket.status, ticket.assignee) == (Ticket.Status.ASSIGNED, agent)
    assert ticket.claimed_at is not None
    assert joined == {
        "type": "agent.joined",
        "conversation": str(conversation.pk),
        "agent": {"name": "Mei Lin"},
    }


def test_it_answers_409_already_claimed_naming_who_has_it():
    first = make_user(first_name="Wang", last_name="Fang")
    conversation = handed_off()
    AgentClient(first).post(url(conversation, "claim"))

    response = AgentClient(make_user()).post(url(conversation, "claim"))

    assert response.status_code == 409
    assert response.json() == {
        "code": "already_claimed",
        "detail": "Wang Fang has this conversation.",
        "assignee": {"id": first.pk, "username": first.username, "name": "Wang Fang"},
    }
    assert Ticket.objects.get(conversation=conversation).assignee == first


def test_it_answers_a_repeated_claim_by_the_same_agent_without_announcing_it_again():
    agent = make_user()
    conversation = handed_off()
    client = AgentClient(agent)
    client.post(url(conversation, "claim"))

    again = client.post(url(conversation, "claim"))

    assert again.status_code == 200
    assert again.json()["claimed_here"] is False
    assert Ticket.objects.get(conversation=conversation).assignee == agent


def test_it_refuses_to_claim_a_conversation_without_an_open_ticket():
    conversation = ConversationFactory()

    response = AgentClient(make_user()).post(url(conversation, "claim"))

    assert (response.status_code, response.json()["code"]) == (409, "no_ticket")
    assert not Ticket.objects.filter(conversation=conversation).exists()


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_two_agents_racing_claim_a_ticket():
    agents = [make_user(first_name="Racer", last_name=str(number)) for number in range(2)]
    conversation = handed_off()
    clients = [AgentClient(agent) for agent in agents]
    barrier = threading.Barrier(2)
    responses: list[Any] = [None, None]

    def claim(index: int) -> None:
        try:
            barrier.wait()
            responses[index] = clients[index].post(url(conversation, "claim"))
        finally:
            connection.close()  # this thread's own connection, so the test database can be dropped

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 409]
    winner = next(index for index, response in enumerate(responses) if response.status_code == 200)
    loser = responses[1 - winner]
    assert loser.json()["code"] == "already_claimed"
    assert f"Racer {winner}" in loser.json()["detail"]
    assert Ticket.objects.get(conversation=conversation).assignee == agents[winner]


# --- messages -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_sends_a_public_message_to_the_customer_and_records_the_first_response():
    agent = make_user(first_name="Mei", last_name="Lin")
    conversation = handed_off()
    client = AgentClient(agent)
    client.post(url(conversation, "claim"))
    customer = GroupListener(conversation_group(conversation.pk))
    try:
        first = client.post(url(conversation, "messages"), {"text": "  Hello, I am checking your parcel.  "})
        frame = customer.receive()
        second = client.post(url(conversation, "messages"), {"text": "Found it."})
        customer.receive()
    finally:
        customer.close()

    assert first.status_code == 201
    body = first.json()
    message = Message.objects.get(pk=body["id"])
    assert (message.role, message.source, message.author, message.internal, message.text) == (
        Message.Role.AGENT,
        Message.Source.AGENT,
        agent,
        False,
        "Hello, I am checking your parcel.",
    )
    assert (body["role"], body["source"], body["internal"], body["author"]["name"]) == (
        "agent",
        "agent",
        False,
        "Mei Lin",
    )
    assert frame["type"] == "agent.message"
    assert frame["conversation"] == str(conversation.pk)
    assert frame["agent_name"] == "Mei Lin"
    assert frame["message"]["id"] == message.pk
    assert frame["message"]["role"] == "agent"
    assert frame["message"]["text"] == "Hello, I am checking your parcel."
    assert frame["message"]["agent"] == {"name": "Mei Lin"}
    assert "internal" not in frame["message"]
    assert "author" not in frame["message"]
    ticket = Ticket.objects.get(conversation=conversation)
    # The first public message is the first response; the second does not move it.
    assert ticket.first_response_at == message.created_at
    assert second.status_code == 201


@pytest.mark.django_db(transaction=True)
def test_it_tells_the_conversations_agents_of_the_first_response_once():
    agent = make_user()
    conversation = handed_off()
    client = AgentClient(agent)
    client.post(url(conversation, "claim"))
    agents = GroupListener(agents_conversation_group(conversation.pk))
    try:
        first = client.post(url(conversation, "messages"), {"text": "Checking now."})
        received = [agents.receive(), agents.receive()]
        second = client.post(url(conversation, "messages"), {"text": "Found it."})
        received.append(agents.receive())
        # Group events arrive in order: a marker sent now comes next unless a second ticket.updated did.
        async_to_sync(agents.layer.group_send)(agents.group, {"type": "test.marker"})
        received.append(agents.receive())
    finally:
        agents.close()

    ticket = Ticket.objects.get(conversation=conversation)
    assert ticket.first_response_at is not None
    assert [event["type"] for event in received] == [
        "conversation.message",
        "ticket.updated",
        "conversation.message",
        "test.marker",
    ]
    assert received[0]["message"]["id"] == first.json()["id"]
    assert received[1]["conversation"] == str(conversation.pk)
    assert received[1]["ticket"]["id"] == ticket.pk
    assert received[1]["ticket"]["first_response_at"] == ticket.first_response_at.isoformat()
    assert received[1]["ticket"]["first_response_seconds"] == ticket.first_response_seconds
    assert received[1]["ticket"]["assignee"]["id"] == agent.pk
    assert received[2]["message"]["id"] == second.json()["id"]


@pytest.mark.django_db(transaction=True)
def test_it_keeps_an_internal_note_from_the_customer_and_from_the_first_response():
    agent = make_user()
    conversation = handed_off()
    client = AgentClient(agent)
    client.post(url(conversation, "claim"))
    customer = GroupListener(conversation_group(conversation.pk))
    try:
        note = client.post(
            url(conversation, "messages"), {"text": "Looks like fraud; check first.", "internal": True}
        )
        public = client.post(url(conversation, "messages"), {"text": "One moment please."})
        # Group events arrive in order: the next one for the customer is the public message.
        frame = customer.receive()
    finally:
        customer.close()

    assert note.status_code == 201
    assert note.json()["internal"] is True
    assert frame["type"] == "agent.message"
    assert frame["message"]["id"] == public.json()["id"]
    ticket = Ticket.objects.get(conversation=conversation)
    assert ticket.first_response_at == Message.objects.get(pk=public.json()["id"]).created_at
    history = Client().get(
        f"/api/widget/conversations/{conversation.pk}/messages",
        HTTP_AUTHORIZATION=f"Bearer {conversation_token(conversation)}",
    )
    texts = [message["text"] for message in history.json()["messages"]]
    assert "Looks like fraud; check first." not in texts
    assert "One moment please." in texts


def conversation_token(conversation: Conversation) -> str:
    return str(conversation.token)  # type: ignore[attr-defined]


def test_it_refuses_a_public_message_from_an_agent_who_has_not_claimed_the_conversation():
    conversation = handed_off()
    holder = make_user(first_name="Wang", last_name="Fang")
    client = AgentClient(make_user())

    unclaimed = client.post(url(conversation, "messages"), {"text": "Hi"})
    AgentClient(holder).post(url(conversation, "claim"))
    someone_elses = client.post(url(conversation, "messages"), {"text": "Hi"})

    assert (unclaimed.status_code, unclaimed.json()) == (
        409,
        {"code": "not_claimed", "detail": "Claim this conversation before answering or resolving it."},
    )
    assert (someone_elses.status_code, someone_elses.json()) == (
        409,
        {"code": "claimed_by_other", "detail": "Wang Fang has this conversation."},
    )
    assert not Message.objects.filter(conversation=conversation, role=Message.Role.AGENT).exists()


def test_it_lets_a_supervisor_answer_in_a_conversation_another_agent_holds():
    conversation = handed_off()
    AgentClient(make_user()).post(url(conversation, "claim"))

    response = AgentClient(make_user(group="Supervisor")).post(
        url(conversation, "messages"), {"text": "Taking over."}
    )

    assert response.status_code == 201


def test_it_lets_any_agent_leave_a_note_on_any_conversation():
    conversation = ConversationFactory()

    response = AgentClient(make_user()).post(
        url(conversation, "messages"), {"text": "Watch this one.", "internal": True}
    )

    assert response.status_code == 201
    assert Message.objects.get(pk=response.json()["id"]).internal is True


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"text": "   "}, {"code": "empty_message", "detail": "A message needs text."}),
        (
            {"text": "x" * 4001},
            {"code": "message_too_long", "detail": "A message can be at most 4000 characters."},
        ),
        ({}, {"code": "invalid_request", "detail": "text: This field is required."}),
        (
            [1, 2],
            {"code": "invalid_request", "detail": 'Send a JSON object: {"text": "...", "internal": false}.'},
        ),
    ],
)
def test_it_refuses_a_malformed_message_and_saves_nothing(body, expected):
    agent = make_user()
    conversation = handed_off()
    client = AgentClient(agent)
    client.post(url(conversation, "claim"))

    response = client.post(url(conversation, "messages"), body)

    assert (response.status_code, response.json()) == (400, expected)
    assert not Message.objects.filter(conversation=conversation, role=Message.Role.AGENT).exists()


# --- resolve and hand back ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_resolves_the_ticket_and_tells_the_customer_to_rate_the_conversation():
    agent = make_user()
    conversation = handed_off()
    client = AgentClient(agent)
    client.post(url(conversation, "claim"))
    customer = GroupListener(conversation_group(conversation.pk))
    try:
        response = client.post(url(conversation, "resolve"))
        frame = customer.receive()
    finally:
        customer.close()

    ticket = Ticket.objects.get(conversation=conversation)
    conversation.refresh_from_db()
    notice = (
        Message.objects.filter(conversation=conversation, role=Message.Role.SYSTEM).order_by("-id").first()
    )
    assert response.status_code == 200
    assert response.json()["ticket"]["status"] == "resolved"
    assert ticket.status == Ticket.Status.RESOLVED
    assert ticket.resolved_at is not None
    # A customer who writes again is answered by the assistant, not left in a closed room.
    assert conversation.status == Conversation.Status.OPEN
    assert frame["type"] == "conversation.resolved"
    assert frame["conversation"] == str(conversation.pk)
    assert frame["csat_requested"] is True
    assert notice is not None
    assert frame["message"]["id"] == notice.pk


@pytest.mark.django_db(transaction=True)
def test_it_hands_the_conversation_back_so_that_the_assistant_answers_again(enqueued_replies):
    agent = make_user(first_name="Mei", last_name="Lin")
    conversation = handed_off()
    client = AgentClient(agent)
    client.post(url(conversation, "claim"))
    customer = GroupListener(conversation_group(conversation.pk))
    try:
        response = client.post(url(conversation, "handback"))
        frame = customer.receive()
    finally:
        customer.close()
    posted = services.message_post(conversation=conversation, text="Thanks, one more question")

    conversation.refresh_from_db()
    assert response.status_code == 200
    assert response.json()["ticket"]["status"] == "resolved"
    assert conversation.status == Conversation.Status.OPEN
    assert frame["type"] == "agent.left"
    assert frame["agent"] == {"name": "Mei Lin"}
    assert frame["message"]["role"] == "system"
    assert posted.reply is not None
    assert enqueued_replies == [posted.reply.pk]


def test_it_refuses_to_resolve_a_conversation_someone_else_holds():
    conversation = handed_off()
    AgentClient(make_user(first_name="Wang", last_name="Fang")).post(url(conversation, "claim"))

    response = AgentClient(make_user()).post(url(conversation, "resolve"))

    assert (response.status_code, response.json()["code"]) == (409, "claimed_by_other")
    assert Ticket.objects.get(conversation=conversation).status == Ticket.Status.ASSIGNED
