"""The reports summary contract (DESIGN.md "Reports", the README's "Review, reports and staff roles"),
checked by the independent client in `client.py` against conversations it creates itself through the
public widget contract (REST, websocket frames, thumbs, CSAT and "talk to a person"). Written from the
documents only: every expected figure below is derived from what the documents say a figure means.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User

from tests.contract.client import AgentClient, Frame, WidgetClient, of_type
from tests.contract.conftest import PASSWORD, Server, staff_user_create

pytestmark = pytest.mark.django_db(transaction=True)

SUMMARY_PATH = "/api/reports/summary"
# DESIGN.md "Reports": the summary's keys, in the order the contract lists them.
SUMMARY_KEYS = [
    "conversations",
    "with_customer_message",
    "csat_count",
    "csat_average",
    "csat_distribution",
    "thumbs_up",
    "thumbs_down",
    "handoffs",
    "handoff_rate",
    "ai_resolution_rate",
    "unanswered",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "review_queue_open",
]
COUNT_KEYS = [
    "conversations",
    "with_customer_message",
    "csat_count",
    "thumbs_up",
    "thumbs_down",
    "handoffs",
    "unanswered",
    "review_queue_open",
]
SCORES = ["1", "2", "3", "4", "5"]


@pytest.fixture
def users(transactional_db: None) -> dict[str, User]:
    """A manager, a supervisor and an agent, created before the test's event loop runs."""
    return {
        "wang": staff_user_create("wang", "Wang", "Fang", group="Manager"),
        "mei": staff_user_create("mei", "Mei", "Chen", group="Supervisor"),
        "lin": staff_user_create("lin", "Lin", "Wei", group="Agent"),
    }


def today() -> date:
    """Today in the server's TIME_ZONE: the day the summary files a conversation created now under.

    The daphne process inherits this process's environment, so both read the same TIME_ZONE.
    """
    return datetime.now(ZoneInfo(settings.TIME_ZONE)).date()


def is_error(response: httpx.Response, status: int, code: str | None = None) -> bool:
    """An error answer as the contract shapes it: the status, and `{"code", "detail"}`."""
    body = response.json()
    return (
        response.status_code == status
        and isinstance(body, dict)
        and set(body) >= {"code", "detail"}
        and isinstance(body["code"], str)
        and bool(body["code"])
        and (code is None or body["code"] == code)
    )


async def logged_in(server: Server, username: str) -> AgentClient:
    """A staff member signed in through the agent session (the README: reports use that session)."""
    staff = AgentClient(server.url)
    response = await staff.login(username, PASSWORD)
    assert response.status_code == 200, response.text
    return staff


async def summary_response(
    staff: AgentClient, start: str | None, end: str | None, output_format: str | None = None
) -> httpx.Response:
    params = {
        name: value
        for name, value in (("start", start), ("end", end), ("format", output_format))
        if value is not None
    }
    return await staff.http.get(SUMMARY_PATH, params=params)


async def summary_of(staff: AgentClient, day: date) -> dict[str, Any]:
    """The JSON summary of one day, checked for the contract's keys and types."""
    response = await summary_response(staff, day.isoformat(), day.isoformat())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= set(SUMMARY_KEYS), body
    assert set(body["csat_distribution"]) == set(SCORES), body
    for key in COUNT_KEYS:
        assert type(body[key]) is int, (key, body)
    for score in SCORES:
        assert type(body["csat_distribution"][score]) is int, body
    for key in ("ttft_p50_ms", "ttft_p95_ms"):
        assert body[key] is None or type(body[key]) is int, (key, body)
    for key in ("handoff_rate", "ai_resolution_rate"):
        share = body[key]
        assert type(share) in {int, float}, (key, body)
        assert 0 <= share <= 1, (key, body)
        assert round(share, 4) == share, (key, body)  # "rounded to 4 decimals"
    assert body["csat_average"] is None or type(body["csat_average"]) in {int, float}, body
    return body


async def summary_once_settled(
    staff: AgentClient, day: date, expected: dict[str, Any], *, within: float = 15.0
) -> dict[str, Any]:
    """The summary, read again until every predicted figure is there (or `within` seconds pass).

    The documents say the review queue fills "by itself" without saying it does so before the rating
    is acknowledged, so this waits for that condition rather than reading once; the caller then
    asserts the exact figures on what came back.
    """
    deadline = time.monotonic() + within
    while True:
        body = await summary_of(staff, day)
        if all(body[key] == value for key, value in expected.items()) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.2)


async def answered(customer: WidgetClient, text: str) -> Frame:
    """Send a message and wait for the assistant's saved reply; its `reply.done` frame."""
    mark = customer.socket.mark()
    client_id = await customer.say(text)
    accepted = await customer.socket.wait_for(of_type("message.accepted", client_id=client_id), after=mark)
    assert accepted["reply_id"] is not None, accepted
    done = await customer.socket.wait_for(of_type("reply.done", reply_id=accepted["reply_id"]), after=mark)
    message = done["message"]
    assert message["role"] == "assistant", done
    assert message["status"] == "complete", done
    assert message["source"] == "model", done
    assert message["text"] == "Hello world", done  # the scripted server's default tokens
    return done


async def opened(server: Server) -> WidgetClient:
    """A customer with a new conversation and its socket open, as the widget does on first load."""
    customer = WidgetClient(server.url)
    assert (await customer.create_conversation()).status_code == 201
    ready = await customer.connect()
    assert ready["conversation"] == customer.conversation_id
    return customer


async def thumbs(customer: WidgetClient, message_id: Any, rating: int) -> None:
    mark = customer.socket.mark()
    await customer.socket.send(
        {"type": "feedback", "message_id": message_id, "rating": rating, "comment": ""}
    )
    await customer.socket.wait_for(of_type("feedback.saved"), after=mark)


def rate(part: int, whole: int) -> float:
    """A rate as the README defines it: a share, rounded to 4 decimals, 0.0 with none."""
    return round(part / whole, 4) if whole else 0.0


def csv_table(response: httpx.Response) -> tuple[list[str], list[str]]:
    """The CSV summary's header row and its one value row."""
    assert response.status_code == 200, response.text
    assert "csv" in response.headers["content-type"], response.headers
    rows = list(csv.reader(io.StringIO(response.text)))
    rows = [row for row in rows if row]
    assert len(rows) == 2, rows
    return rows[0], rows[1]


def flattened(summary: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary as the README says the CSV writes it: `csat_distribution` as csat_1…csat_5."""
    figures = {key: value for key, value in summary.items() if key != "csat_distribution"}
    figures.update({f"csat_{score}": summary["csat_distribution"][score] for score in SCORES})
    return figures


def same_value(csv_value: str, json_value: Any) -> bool:
    if json_value is None:
        return csv_value == ""
    if type(json_value) is int:
        return int(csv_value) == json_value
    return float(csv_value) == float(json_value)


async def test_it_counts_the_conversations_a_separate_client_creates(
    server: Server, users: dict[str, User]
) -> None:
    manager = await logged_in(server, "wang")
    day = today()
    customers: list[WidgetClient] = []
    try:
        baseline = await summary_of(manager, day)

        # 1. Answered by the model, thumbs-up and CSAT 5 (the `csat` frame).
        happy = await opened(server)
        customers.append(happy)
        happy_reply = await answered(happy, "How long does delivery take?")
        await thumbs(happy, happy_reply["message"]["id"], 1)
        await happy.socket.send({"type": "csat", "score": 5, "comment": "Very helpful."})
        await happy.socket.wait_for(of_type("csat.saved"))

        # 2. Answered, thumbs-down and CSAT 2 (the REST CSAT endpoint): two reasons to review it,
        # one review item (the README: "queued once").
        unhappy = await opened(server)
        customers.append(unhappy)
        unhappy_reply = await answered(unhappy, "Where is my refund?")
        await thumbs(unhappy, unhappy_reply["message"]["id"], -1)
        csat = await unhappy.http.post(
            f"/api/widget/conversations/{unhappy.conversation_id}/csat",
            json={"score": 2, "comment": "Did not answer my question."},
            headers={"Authorization": f"Bearer {unhappy.token}"},
        )
        assert csat.status_code == 200, csat.text
        assert csat.json()["score"] == 2

        # 3. Answered, then "talk to a person": a ticket.
        handed_off = await opened(server)
        customers.append(handed_off)
        await answered(handed_off, "Hello")
        await handed_off.socket.send({"type": "handoff", "reason": "I need to change my address"})
        started = await handed_off.socket.wait_for(of_type("handoff.started"))
        assert started["ticket"] is not None

        # 4. Opened, and the customer never wrote.
        silent = await opened(server)
        customers.append(silent)
        assert [m for m in (await silent.history()).json()["messages"] if m["role"] == "customer"] == []

        with_message = baseline["with_customer_message"] + 3
        expected: dict[str, Any] = {
            "conversations": baseline["conversations"] + 4,
            "with_customer_message": with_message,
            "csat_count": baseline["csat_count"] + 2,
            "thumbs_up": baseline["thumbs_up"] + 1,
            "thumbs_down": baseline["thumbs_down"] + 1,
            "handoffs": baseline["handoffs"] + 1,
            # The test database has no knowledge base, so retrieval finds nothing for any of the
            # three replies, and the README says such a reply is saved unanswered.
            "unanswered": baseline["unanswered"] + 3,
            "review_queue_open": baseline["review_queue_open"] + 1,
            "csat_distribution": {
                score: baseline["csat_distribution"][score] + (1 if score in {"2", "5"} else 0)
                for score in SCORES
            },
            "handoff_rate": rate(baseline["handoffs"] + 1, with_message),
            # "a complete assistant reply, none unanswered, and no ticket": none of these, since with no
            # knowledge base every reply is saved unanswered.
            "ai_resolution_rate": rate(
                round(baseline["ai_resolution_rate"] * baseline["with_customer_message"]), with_message
            ),
        }
        if baseline["csat_count"] == 0:
            expected["csat_average"] = 3.5

        after = await summary_once_settled(manager, day, expected)
        assert {key: after[key] for key in expected} == expected, (baseline, after)
        if baseline["csat_count"] != 0:
            assert 1 <= after["csat_average"] <= 5, after

        # A model reply exists now: the percentiles are whole milliseconds, p50 no later than p95.
        assert type(after["ttft_p50_ms"]) is int, after
        assert type(after["ttft_p95_ms"]) is int, after
        assert 0 <= after["ttft_p50_ms"] <= after["ttft_p95_ms"], after

        # The CSV form: a header row of the same figures and one row of the same values.
        header, values = csv_table(await summary_response(manager, day.isoformat(), day.isoformat(), "csv"))
        figures = flattened(after)
        assert len(header) == len(set(header)), header
        assert set(header) == set(figures), (header, figures)
        by_name = dict(zip(header, values, strict=True))
        assert {name: same_value(by_name[name], figures[name]) for name in header} == dict.fromkeys(
            header, True
        ), (by_name, figures)

        # The same day read as part of a longer period counts the same conversations.
        week = await summary_response(manager, (day - timedelta(days=6)).isoformat(), day.isoformat())
        assert week.status_code == 200, week.text
        assert week.json()["conversations"] >= after["conversations"]
    finally:
        for customer in customers:
            await customer.close()
        await manager.close()


async def test_it_lets_supervisors_and_managers_read_the_summary_and_refuses_everyone_else(
    server: Server, users: dict[str, User]
) -> None:
    day = today().isoformat()
    anonymous = AgentClient(server.url)
    await anonymous.session()
    agent = await logged_in(server, "lin")
    supervisor = await logged_in(server, "mei")
    manager = await logged_in(server, "wang")
    try:
        assert is_error(await summary_response(anonymous, day, day), 403, "not_authenticated")
        assert is_error(await summary_response(anonymous, day, day, "csv"), 403, "not_authenticated")
        assert is_error(await summary_response(agent, day, day), 403, "permission_denied")
        assert is_error(await summary_response(agent, day, day, "csv"), 403, "permission_denied")

        for staff in (supervisor, manager):
            allowed = await summary_response(staff, day, day)
            assert allowed.status_code == 200, allowed.text
            assert set(allowed.json()) >= set(SUMMARY_KEYS)
            header, _ = csv_table(await summary_response(staff, day, day, "csv"))
            assert set(header) == set(flattened(allowed.json()))

        # A day long before this platform existed: nothing in it, so no average and every rate 0.0.
        empty = await summary_of(manager, date(2000, 1, 1))
        assert {key: empty[key] for key in COUNT_KEYS} == dict.fromkeys(COUNT_KEYS, 0), empty
        assert empty["csat_distribution"] == dict.fromkeys(SCORES, 0), empty
        assert empty["csat_average"] is None
        assert empty["handoff_rate"] == 0.0
        assert empty["ai_resolution_rate"] == 0.0
    finally:
        for client in (anonymous, agent, supervisor, manager):
            await client.close()


@pytest.mark.parametrize(
    ("start", "end", "output_format", "code"),
    [
        ("2026-02-30", "2026-03-01", None, "invalid_date"),
        ("yesterday", "2026-03-01", None, "invalid_date"),
        ("2026-03-01", "03/02/2026", None, "invalid_date"),
        ("2026-03-02", "2026-03-01", None, "invalid_range"),
        ("2024-01-01", "2026-01-01", None, "range_too_long"),
        ("2026-03-01", "2026-03-01", "xml", "invalid_format"),
        (None, "2026-03-01", None, None),
        ("2026-03-01", None, None, None),
    ],
)
async def test_it_refuses_a_bad_period_with_a_code(
    server: Server,
    users: dict[str, User],
    start: str | None,
    end: str | None,
    output_format: str | None,
    code: str | None,
) -> None:
    """The README names the codes for bad dates, ranges and formats; for a missing date it names none,
    so there only a 400 with some code is required."""
    manager = await logged_in(server, "wang")
    try:
        response = await summary_response(manager, start, end, output_format)
        assert is_error(response, 400, code), (response.status_code, response.text)
    finally:
        await manager.close()
