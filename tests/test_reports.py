"""The reports' summary: every figure against known conversations, aggregates agreeing with live counts,
days in TIME_ZONE, the beat task and the recompute command, JSON and CSV, permissions, bad input."""

from __future__ import annotations

import csv
import io
import sys
import types
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.test import Client

from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from reports import selectors, services, tasks
from reports.models import DailyStat
from tests import factories
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

BEIJING = ZoneInfo("Asia/Shanghai")
# "Now" in every test: noon on 10 March 2026 in Beijing. The 8th and 9th are past days, the 10th today.
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=BEIJING)
DAY_8, DAY_9, DAY_10 = date(2026, 3, 8), date(2026, 3, 9), date(2026, 3, 10)

# What the fixture's conversations add up to over the 8th to the 10th (worked out by hand below).
EXPECTED = {
    "conversations": 10,
    "with_customer_message": 9,
    "csat_count": 5,
    "csat_average": 3.4,  # (5 + 2 + 4 + 1 + 5) / 5
    "csat_distribution": {"1": 1, "2": 1, "3": 0, "4": 1, "5": 2},
    "thumbs_up": 3,
    "thumbs_down": 1,
    "handoffs": 2,
    "handoff_rate": 0.2222,  # 2 / 9
    "ai_resolution_rate": 0.4444,  # 4 / 9: c1, c4, c8, c10 (not c9: its reply was unanswered)
    "unanswered": 2,
    # Model replies' times to first token: 100 200 250 300 400 500 700 (N = 7). Nearest rank:
    # p50 is the 4th (ceil 3.5), p95 the 7th (ceil 6.65).
    "ttft_p50_ms": 300,
    "ttft_p95_ms": 700,
    "review_queue_open": 2,  # what the (stubbed) review selector answers
}


@pytest.fixture(autouse=True)
def _beijing(settings: Any, frozen_now: Callable[[datetime], None]) -> None:
    settings.TIME_ZONE = "Asia/Shanghai"
    settings.REPORTS_RECOMPUTE_DAYS = 7
    frozen_now(NOW)


class ReviewStub:
    """review.selectors as the summary imports it, answering `value` and recording its calls."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.calls: list[dict[str, Any]] = []

    def review_queue_open_count(self, **kwargs: Any) -> int:
        self.calls.append(kwargs)
        return self.value


@pytest.fixture
def review_stub(monkeypatch: pytest.MonkeyPatch) -> ReviewStub:
    """The review queue's count, stubbed: the review app's own tests check what it counts."""
    stub = ReviewStub(2)
    module = types.ModuleType("review.selectors")
    module.review_queue_open_count = stub.review_queue_open_count  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "review.selectors", module)
    return stub


def conversation_at(local: datetime, *, customer_message: bool = True) -> Conversation:
    """A conversation created at `local` (Beijing time), with a customer message unless told not to."""
    conversation: Any = ConversationFactory()
    Conversation.objects.filter(pk=conversation.pk).update(created_at=local)
    if customer_message:
        MessageFactory(conversation=conversation, text="Where is my parcel?")
    return conversation


def reply(
    conversation: Conversation,
    *,
    ttft: int | None = None,
    source: str = Message.Source.MODEL,
    status: str = Message.Status.COMPLETE,
    unanswered: bool = False,
    thumbs: int | None = None,
) -> Message:
    message: Any = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=source,
        status=status,
        text="An answer.",
        first_token_latency_ms=ttft,
        is_unanswered=unanswered,
    )
    if thumbs is not None:
        Feedback.objects.create(message=message, rating=thumbs)
    return message


def csat(conversation: Conversation, score: int) -> None:
    SatisfactionRating.objects.create(conversation=conversation, score=score)


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=BEIJING)


@pytest.fixture
def known() -> dict[str, Conversation]:
    """Ten conversations from the 8th to the 10th (Beijing), one each side of the period."""
    c: dict[str, Conversation] = {}
    # Outside: 23:50 on the 7th in Beijing. It has everything, and none of it may count.
    c["c0"] = conversation_at(at(date(2026, 3, 7), 23, 50))
    reply(c["c0"], ttft=9000, thumbs=-1)
    csat(c["c0"], 3)
    Ticket.objects.create(conversation=c["c0"], reason="outside")

    # The 8th. c1: answered by the model, thumbs-up, CSAT 5 -> resolved by the AI.
    c["c1"] = conversation_at(at(DAY_8, 10))
    reply(c["c1"], ttft=100, thumbs=1)
    csat(c["c1"], 5)
    # c2, at 23:30 Beijing (15:30 UTC): an unanswered reply, thumbs-down, handed off, CSAT 2.
    c["c2"] = conversation_at(at(DAY_8, 23, 30))
    reply(c["c2"], ttft=300, unanswered=True, thumbs=-1)
    Ticket.objects.create(conversation=c["c2"], reason="Wants a person")
    csat(c["c2"], 2)
    # c3, at 00:10 Beijing (the 7th in UTC): opened, nothing written.
    c["c3"] = conversation_at(at(DAY_8, 0, 10), customer_message=False)

    # The 9th. c4: an FAQ answer (its time to first token is not a model's) -> resolved, CSAT 4.
    c["c4"] = conversation_at(at(DAY_9, 9))
    reply(c["c4"], ttft=5, source=Message.Source.FAQ)
    csat(c["c4"], 4)
    # c5: the model's reply failed after its first token: measured, but not an answer.
    c["c5"] = conversation_at(at(DAY_9, 11))
    reply(c["c5"], ttft=700, status=Message.Status.FAILED)
    # c6: answered (thumbs-up), then handed off and resolved by a person, CSAT 1.
    c["c6"] = conversation_at(at(DAY_9, 14))
    reply(c["c6"], ttft=200, thumbs=1)
    Ticket.objects.create(conversation=c["c6"], status=Ticket.Status.RESOLVED, reason="Refund")
    MessageFactory(conversation=c["c6"], role=Message.Role.AGENT, source=Message.Source.AGENT, text="Done.")
    csat(c["c6"], 1)
    # c7, at 23:59:59: a question nobody answered yet.
    c["c7"] = conversation_at(at(DAY_9, 23, 59, 59))

    # Today, the 10th. c10 at 00:05 Beijing (still the 9th in UTC).
    c["c10"] = conversation_at(at(DAY_10, 0, 5))
    reply(c["c10"], ttft=250)
    c["c8"] = conversation_at(at(DAY_10, 8))
    reply(c["c8"], ttft=500, thumbs=1)
    csat(c["c8"], 5)
    # c9: the model said it had nothing; nobody asked for a person -> unanswered, not resolved by the AI.
    c["c9"] = conversation_at(at(DAY_10, 9))
    reply(c["c9"], ttft=400, unanswered=True)
    return c


def test_summary_counts_every_figure_of_known_conversations(
    known: dict[str, Conversation], review_stub: ReviewStub
) -> None:
    summary = selectors.summary_get(start=DAY_8, end=DAY_10)

    assert summary.as_dict() == EXPECTED
    assert list(summary.as_dict()) == list(selectors.SUMMARY_KEYS)
    # Nothing was aggregated yet: every day was counted live.
    assert (summary.days_from_aggregates, summary.days_live) == (0, 3)
    # The review queue is asked about the same conversations: created from the 8th's midnight in
    # Beijing to the 11th's (exclusive).
    assert review_stub.calls == [
        {"created_from": at(DAY_8, 0), "created_to": at(date(2026, 3, 11), 0)},
    ]


def test_aggregates_and_live_counts_agree(known: dict[str, Conversation], review_stub: ReviewStub) -> None:
    live = selectors.summary_get(start=DAY_8, end=DAY_10)
    rows = services.daily_stats_recompute(start=DAY_8, end=DAY_9)
    assert [row.day for row in rows] == [DAY_8, DAY_9]

    from_aggregates = selectors.summary_get(start=DAY_8, end=DAY_10)

    assert (from_aggregates.days_from_aggregates, from_aggregates.days_live) == (2, 1)
    assert from_aggregates.as_dict() == live.as_dict() == EXPECTED
    # Day by day too, and for a period of past days only (all from rows).
    for day in (DAY_8, DAY_9):
        stored = selectors.summary_get(start=day, end=day)
        assert stored.days_from_aggregates == 1
        DailyStat.objects.filter(day=day).delete()
        assert selectors.summary_get(start=day, end=day).as_dict() == stored.as_dict()


def test_a_day_row_holds_that_days_conversations(known: dict[str, Conversation]) -> None:
    row = services.daily_stats_compute(day=DAY_8)

    assert row.time_zone == "Asia/Shanghai"
    assert (row.conversations, row.with_customer_message, row.handoffs, row.ai_resolved, row.unanswered) == (
        3,
        2,
        1,
        1,
        1,
    )
    assert [row.csat_1, row.csat_2, row.csat_3, row.csat_4, row.csat_5] == [0, 1, 0, 0, 1]
    assert (row.thumbs_up, row.thumbs_down) == (1, 1)
    assert row.ttft_histogram == {"100": 1, "300": 1}
    # Computing it again rewrites the same row.
    services.daily_stats_compute(day=DAY_8)
    assert DailyStat.objects.filter(day=DAY_8).count() == 1


def test_days_are_days_in_time_zone(known: dict[str, Conversation], review_stub: ReviewStub) -> None:
    eighth = selectors.summary_get(start=DAY_8, end=DAY_8)
    # c1, c2 (23:30 Beijing, 15:30 UTC) and c3 (00:10 Beijing, the 7th in UTC); not c0 (23:50 the 7th).
    assert eighth.conversations == 3
    assert eighth.csat_distribution == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}
    # The 9th: c4 to c7 (23:59:59); not c10, 00:05 on the 10th in Beijing though the 9th in UTC.
    ninth = selectors.summary_get(start=DAY_9, end=DAY_9)
    assert ninth.conversations == 4
    assert (ninth.ttft_p50_ms, ninth.ttft_p95_ms) == (200, 700)
    assert selectors.summary_get(start=DAY_10, end=DAY_10).conversations == 3
    # The same rows stored as aggregates give the same days.
    services.daily_stats_recompute(start=DAY_8, end=DAY_9)
    assert selectors.summary_get(start=DAY_8, end=DAY_8).as_dict() == eighth.as_dict()
    assert selectors.summary_get(start=DAY_9, end=DAY_9).as_dict() == ninth.as_dict()


def test_rows_from_another_time_zone_are_not_read(
    known: dict[str, Conversation], review_stub: ReviewStub, settings: Any
) -> None:
    services.daily_stats_recompute(start=DAY_8, end=DAY_9)
    settings.TIME_ZONE = "UTC"

    summary = selectors.summary_get(start=DAY_8, end=DAY_8)

    # Beijing's rows are ignored; the 8th in UTC is c1 and c2 (c3 was the 7th in UTC).
    assert (summary.days_from_aggregates, summary.days_live) == (0, 1)
    assert summary.conversations == 2


def test_today_is_always_live(known: dict[str, Conversation], review_stub: ReviewStub) -> None:
    services.daily_stats_compute(day=DAY_10)
    DailyStat.objects.filter(day=DAY_10).update(conversations=999)

    summary = selectors.summary_get(start=DAY_10, end=DAY_10)

    assert (summary.days_from_aggregates, summary.days_live) == (0, 1)
    assert summary.conversations == 3


def test_beat_task_recomputes_recent_days_and_catches_late_ratings(
    known: dict[str, Conversation], review_stub: ReviewStub, settings: Any
) -> None:
    settings.REPORTS_RECOMPUTE_DAYS = 2
    assert tasks.daily_stats_update() == 2
    assert sorted(DailyStat.objects.values_list("day", flat=True)) == [DAY_8, DAY_9]

    # A CSAT and a ticket come to the 8th's empty conversation two days later.
    csat(known["c3"], 3)
    Ticket.objects.create(conversation=known["c3"], reason="Later")
    stale = selectors.summary_get(start=DAY_8, end=DAY_8)
    assert (stale.csat_count, stale.handoffs) == (2, 1)

    assert tasks.daily_stats_update() == 2
    assert DailyStat.objects.count() == 2
    fresh = selectors.summary_get(start=DAY_8, end=DAY_8)
    assert (fresh.csat_count, fresh.handoffs, fresh.csat_distribution["3"]) == (3, 2, 1)
    assert fresh.days_from_aggregates == 1


def test_the_beat_schedule_runs_the_task() -> None:
    names = [entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()]
    assert "reports.tasks.daily_stats_update" in names


def test_recompute_command_writes_a_range(known: dict[str, Conversation]) -> None:
    out = io.StringIO()
    call_command("reports_recompute", "--start", "2026-03-07", "--end", "2026-03-09", stdout=out)

    assert sorted(DailyStat.objects.values_list("day", "conversations")) == [
        (date(2026, 3, 7), 1),
        (DAY_8, 3),
        (DAY_9, 4),
    ]
    assert "3 day(s)" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("reports_recompute", "--start", "2026-03-09", "--end", "2026-03-08")
    with pytest.raises(CommandError):
        call_command("reports_recompute", "--start", "yesterday", "--end", "2026-03-08")


def test_an_empty_period_has_no_average_and_no_percentiles(review_stub: ReviewStub) -> None:
    summary = selectors.summary_get(start=DAY_8, end=DAY_10)

    assert summary.as_dict() == {
        "conversations": 0,
        "with_customer_message": 0,
        "csat_count": 0,
        "csat_average": None,
        "csat_distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
        "thumbs_up": 0,
        "thumbs_down": 0,
        "handoffs": 0,
        "handoff_rate": 0.0,
        "ai_resolution_rate": 0.0,
        "unanswered": 0,
        "ttft_p50_ms": None,
        "ttft_p95_ms": None,
        "review_queue_open": 2,
    }


def test_review_queue_count_is_zero_only_while_the_review_app_has_no_selector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "review.selectors", None)  # an import of it raises ImportError

    assert selectors.summary_get(start=DAY_8, end=DAY_8).review_queue_open == 0


def test_review_queue_count_comes_from_the_review_app() -> None:
    """Unstubbed: whatever the review app answers (there is no review item here), an int."""
    assert selectors.summary_get(start=DAY_8, end=DAY_8).review_queue_open == 0


@pytest.mark.parametrize(
    ("counts", "p50", "p95"),
    [
        ({7: 1}, 7, 7),
        ({100: 1, 200: 1}, 100, 200),
        # 20 values: p95 is the 19th, p50 the 10th.
        ({ms: 1 for ms in range(1, 21)}, 10, 19),
        # 100 values: p95 is the 95th (integer arithmetic: no float just above 95).
        ({ms: 1 for ms in range(1, 101)}, 50, 95),
        ({10: 98, 5000: 2}, 10, 10),
        ({10: 94, 5000: 6}, 10, 5000),
    ],
)
def test_percentiles_are_nearest_rank(counts: dict[int, int], p50: int, p95: int) -> None:
    histogram = Counter(counts)
    assert selectors.percentile_nearest_rank(histogram, 50) == p50
    assert selectors.percentile_nearest_rank(histogram, 95) == p95


# The API.

SUMMARY_URL = "/api/reports/summary"


def client_for(user: Any) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_api_returns_the_summary_as_json(known: dict[str, Conversation], review_stub: ReviewStub) -> None:
    services.daily_stats_recompute(start=DAY_8, end=DAY_9)
    response = client_for(make_user("Manager")).get(SUMMARY_URL, {"start": "2026-03-08", "end": "2026-03-10"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == EXPECTED


def test_api_returns_the_summary_as_csv(known: dict[str, Conversation], review_stub: ReviewStub) -> None:
    response = client_for(make_user("Supervisor")).get(
        SUMMARY_URL, {"start": "2026-03-08", "end": "2026-03-10", "format": "csv"}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="summary-2026-03-08-2026-03-10.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [
        [
            "conversations",
            "with_customer_message",
            "csat_count",
            "csat_average",
            "csat_1",
            "csat_2",
            "csat_3",
            "csat_4",
            "csat_5",
            "thumbs_up",
            "thumbs_down",
            "handoffs",
            "handoff_rate",
            "ai_resolution_rate",
            "unanswered",
            "ttft_p50_ms",
            "ttft_p95_ms",
            "review_queue_open",
        ],
        [
            "10",
            "9",
            "5",
            "3.4",
            "1",
            "1",
            "0",
            "1",
            "2",
            "3",
            "1",
            "2",
            "0.2222",
            "0.4444",
            "2",
            "300",
            "700",
            "2",
        ],
    ]


def test_csv_leaves_nulls_empty(review_stub: ReviewStub) -> None:
    response = client_for(make_user("Manager")).get(
        SUMMARY_URL, {"start": "2026-03-08", "end": "2026-03-08", "format": "csv"}
    )
    header, values = list(csv.reader(io.StringIO(response.content.decode())))
    row = dict(zip(header, values, strict=True))
    assert (row["csat_average"], row["ttft_p50_ms"], row["ttft_p95_ms"], row["handoff_rate"]) == (
        "",
        "",
        "",
        "0.0",
    )


@pytest.mark.parametrize(
    ("group", "fields", "status_code"),
    [
        ("Supervisor", {}, 200),
        ("Manager", {}, 200),
        (None, {"is_superuser": True, "is_staff": True}, 200),
        ("Agent", {}, 403),
        (None, {"is_staff": True}, 403),
        ("Manager", {"is_active": False}, 403),
    ],
)
def test_api_permissions_per_role(
    review_stub: ReviewStub, group: str | None, fields: dict[str, Any], status_code: int
) -> None:
    user = make_user(group, **fields)
    client = Client()
    # An inactive account's session is no session: Django's backend refuses the user it names.
    client.force_login(user)
    response = client.get(SUMMARY_URL, {"start": "2026-03-08", "end": "2026-03-08"})

    assert response.status_code == status_code
    if status_code == 403:
        body = response.json()
        assert set(body) == {"code", "detail"}
        assert body["code"] == ("permission_denied" if user.is_active else "not_authenticated")
    # The CSV is guarded the same way.
    csv_response = client.get(SUMMARY_URL, {"start": "2026-03-08", "end": "2026-03-08", "format": "csv"})
    assert csv_response.status_code == status_code


def test_api_refuses_anonymous_requests() -> None:
    response = Client().get(SUMMARY_URL, {"start": "2026-03-08", "end": "2026-03-08"})

    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"end": "2026-03-08"}, "invalid_date"),
        ({"start": "2026-03-08"}, "invalid_date"),
        ({"start": "2026-3-8", "end": "2026-03-08"}, "invalid_date"),
        ({"start": "20260308", "end": "2026-03-08"}, "invalid_date"),
        ({"start": "2026-02-30", "end": "2026-03-08"}, "invalid_date"),
        ({"start": "yesterday", "end": "2026-03-08"}, "invalid_date"),
        ({"start": "2026-03-09", "end": "2026-03-08"}, "invalid_range"),
        ({"start": "2025-02-02", "end": "2026-03-09"}, "range_too_long"),  # 401 days
        ({"start": "2026-03-08", "end": "2026-03-08", "format": "xml"}, "invalid_format"),
    ],
)
def test_api_refuses_bad_input(review_stub: ReviewStub, params: dict[str, str], code: str) -> None:
    response = client_for(make_user("Manager")).get(SUMMARY_URL, params)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["detail"]


def test_api_accepts_a_period_of_the_longest_length(review_stub: ReviewStub) -> None:
    start = DAY_9 - timedelta(days=399)  # 400 days, the 9th included
    response = client_for(make_user("Manager")).get(
        SUMMARY_URL, {"start": start.isoformat(), "end": DAY_9.isoformat()}
    )

    assert response.status_code == 200
    assert response.json()["conversations"] == 0
