"""The reports page (/reports/) and its CSV tables: every figure against known conversations, in the
page, in the CSVs and from the selector; aggregates agreeing with live counts; the charts drawn with
the data; questions grouped when alike; permissions per role; bad periods."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from knowledge.models import Article
from reports import selectors, services
from reports.models import DailyStat
from reports.selectors import Ranked, Timing
from review.models import ReviewItem
from tests import factories
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory
ArticleFactory: Any = factories.ArticleFactory

BEIJING = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=BEIJING)
DAY_8, DAY_9, DAY_10 = date(2026, 3, 8), date(2026, 3, 9), date(2026, 3, 10)
PERIOD = {"start": "2026-03-08", "end": "2026-03-10"}


@pytest.fixture(autouse=True)
def _beijing(settings: Any, frozen_now: Callable[[datetime], None]) -> None:
    settings.TIME_ZONE = "Asia/Shanghai"
    frozen_now(NOW)


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=BEIJING)


def conversation(
    created: datetime,
    question: str,
    *,
    ttft: int,
    unanswered: bool = False,
    cites: tuple[Article, ...] = (),
    thumbs: int | None = None,
    score: int | None = None,
    ticket: dict[str, Any] | None = None,
) -> Conversation:
    """A conversation created at `created` with one question and the model's reply to it."""
    made: Any = ConversationFactory()
    Conversation.objects.filter(pk=made.pk).update(created_at=created)
    MessageFactory(conversation=made, text=question)
    reply: Any = MessageFactory(
        conversation=made,
        role=Message.Role.ASSISTANT,
        source=Message.Source.MODEL,
        text="An answer.",
        first_token_latency_ms=ttft,
        is_unanswered=unanswered,
        citations=[{"article": article.pk, "title": article.title, "url": "/kb/x/"} for article in cites],
    )
    if thumbs is not None:
        Feedback.objects.create(message=reply, rating=thumbs)
    if score is not None:
        SatisfactionRating.objects.create(conversation=made, score=score)
    if ticket is not None:
        Ticket.objects.create(conversation=made, **ticket)
    made.refresh_from_db()
    return made


@pytest.fixture
def known() -> dict[str, Any]:
    """Five conversations from the 8th to today, the 10th (Beijing), whose every figure is worked out
    by hand in the tests below."""
    parcels = ArticleFactory(title="Tracking a parcel")
    refunds = ArticleFactory(title="Refunds")
    c: dict[str, Any] = {"parcels": parcels, "refunds": refunds}
    # The 8th. a1: answered, citing both articles (parcels twice: one reply counts once), thumbs-up, CSAT 5.
    c["a1"] = conversation(
        at(DAY_8, 10), "Where is my parcel?", ttft=100, cites=(parcels, refunds, parcels), thumbs=1, score=5
    )
    # a2: unanswered, thumbs-down (queued for review, then judged a wrong answer), handed off because the
    # knowledge base had nothing; first reply after 2 min, resolved after an hour.
    c["a2"] = conversation(
        at(DAY_8, 15),
        "How do I get a refund?",
        ttft=300,
        unanswered=True,
        thumbs=-1,
        ticket={
            "trigger": Ticket.Trigger.KNOWLEDGE_MISS,
            "status": Ticket.Status.RESOLVED,
            "first_response_seconds": 120,
            "resolution_seconds": 3600,
        },
    )
    ReviewItem.objects.filter(conversation=c["a2"]).update(
        verdict=ReviewItem.Verdict.WRONG_ANSWER, reviewed_at=NOW
    )
    # The 9th. a3: the same question in other case and punctuation, unanswered, CSAT 2 (queued, open).
    c["a3"] = conversation(at(DAY_9, 9), "how do i get a refund", ttft=200, unanswered=True, score=2)
    # a4: a question alike (a word more), unanswered, citing refunds; the customer pressed the button,
    # an agent answered after a minute, not resolved yet.
    c["a4"] = conversation(
        at(DAY_9, 11),
        "How do I get a refund now?",
        ttft=400,
        unanswered=True,
        cites=(refunds,),
        ticket={"trigger": Ticket.Trigger.CUSTOMER_BUTTON, "first_response_seconds": 60},
    )
    # Today. a5: a Chinese question, unanswered, citing parcels; button, answered in 30 s, resolved in 10 min.
    c["a5"] = conversation(
        at(DAY_10, 8),
        "我的发票在哪里？",
        ttft=500,
        unanswered=True,
        cites=(parcels,),
        ticket={
            "trigger": Ticket.Trigger.CUSTOMER_BUTTON,
            "status": Ticket.Status.RESOLVED,
            "first_response_seconds": 30,
            "resolution_seconds": 600,
        },
    )
    return c


def expected_report(known: dict[str, Any]) -> dict[str, Any]:
    parcels, refunds = known["parcels"], known["refunds"]
    return {
        "days": [
            # day, conversations, with a question, AI resolved, handed off, unanswered, up, down,
            # CSAT count, CSAT average, TTFT p50, p95 (nearest rank of [100, 300], [200, 400], [500]).
            (DAY_8, 2, 2, 1, 1, 1, 1, 1, 1, 5.0, 100, 300),
            # a3 had no ticket, but its reply was unanswered: not resolved by the AI.
            (DAY_9, 2, 2, 0, 1, 2, 0, 0, 1, 2.0, 200, 400),
            (DAY_10, 1, 1, 0, 1, 1, 0, 0, 0, None, 500, 500),
        ],
        "thumbs_up_ratio": 0.5,
        "unanswered_rate": 0.8,  # 4 of 5
        "handoff_reasons": [
            Ranked("customer_button", "Customer pressed the button", 2, 0.6667),
            Ranked("knowledge_miss", "Knowledge base had nothing", 1, 0.3333),
        ],
        # First replies 30, 60, 120 s: p50 the 2nd, p95 the 3rd. Resolutions 600, 3600 s.
        "first_response": Timing(count=3, p50_seconds=60, p95_seconds=120),
        "resolution": Timing(count=2, p50_seconds=600, p95_seconds=3600),
        "cited_articles": [
            Ranked(str(parcels.pk), "Tracking a parcel", 2, 0.5),
            Ranked(str(refunds.pk), "Refunds", 2, 0.5),
        ],
        # "How do I get a refund?" and "how do i get a refund" are one question exactly; "… now?" is alike.
        "unanswered_questions": [
            Ranked(
                "how do i get a refund", "How do I get a refund?", 3, 0.75, ("How do I get a refund now?",)
            ),
            Ranked("我的发票在哪里", "我的发票在哪里？", 1, 0.25),
        ],
        "review_verdicts": [
            Ranked("open", "Not reviewed yet", 1, 0.5),
            Ranked("wrong_answer", "Wrong answer", 1, 0.5),
        ],
    }


def report_figures(report: selectors.Report) -> dict[str, Any]:
    return {
        "days": [
            (
                d.day,
                d.conversations,
                d.with_customer_message,
                d.ai_resolved,
                d.handoffs,
                d.unanswered,
                d.thumbs_up,
                d.thumbs_down,
                d.csat_count,
                d.csat_average,
                d.ttft_p50_ms,
                d.ttft_p95_ms,
            )
            for d in report.days
        ],
        "thumbs_up_ratio": report.thumbs_up_ratio,
        "unanswered_rate": report.unanswered_rate,
        "handoff_reasons": report.handoff_reasons,
        "first_response": report.first_response,
        "resolution": report.resolution,
        "cited_articles": sorted(report.cited_articles, key=lambda row: row.label, reverse=True),
        "unanswered_questions": report.unanswered_questions,
        "review_verdicts": report.review_verdicts,
    }


def test_report_counts_every_figure_of_known_conversations(known: dict[str, Any]) -> None:
    report = selectors.report_get(start=DAY_8, end=DAY_10)

    assert report_figures(report) == expected_report(known)
    assert report.summary.as_dict() == {
        "conversations": 5,
        "with_customer_message": 5,
        "csat_count": 2,
        "csat_average": 3.5,
        "csat_distribution": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1},
        "thumbs_up": 1,
        "thumbs_down": 1,
        "handoffs": 3,
        "handoff_rate": 0.6,
        "ai_resolution_rate": 0.2,
        "unanswered": 4,
        "ttft_p50_ms": 300,
        "ttft_p95_ms": 500,
        "review_queue_open": 1,
    }
    # The page's summary is the API's.
    assert report.summary == selectors.summary_get(start=DAY_8, end=DAY_10)
    assert [day.live for day in report.days] == [True, True, True]


def test_aggregates_and_live_counts_agree_on_every_table(known: dict[str, Any]) -> None:
    live = selectors.report_get(start=DAY_8, end=DAY_10)
    services.daily_stats_recompute(start=DAY_8, end=DAY_9)

    from_aggregates = selectors.report_get(start=DAY_8, end=DAY_10)

    assert (from_aggregates.summary.days_from_aggregates, from_aggregates.summary.days_live) == (2, 1)
    assert [day.live for day in from_aggregates.days] == [False, False, True]
    assert report_figures(from_aggregates) == report_figures(live)
    assert replace(from_aggregates.summary, days_from_aggregates=0, days_live=3) == live.summary


def test_a_row_of_an_older_version_is_not_read(known: dict[str, Any]) -> None:
    services.daily_stats_recompute(start=DAY_8, end=DAY_9)
    DailyStat.objects.filter(day=DAY_8).update(version=DailyStat.VERSION - 1, handoff_triggers={})

    report = selectors.report_get(start=DAY_8, end=DAY_10)

    assert [day.live for day in report.days] == [True, False, True]
    assert report_figures(report) == expected_report(known)


def test_a_deleted_article_is_still_counted_under_its_number(known: dict[str, Any]) -> None:
    refunds_id = known["refunds"].pk
    known["refunds"].delete()

    cited = selectors.report_get(start=DAY_8, end=DAY_10).cited_articles

    assert Ranked(str(refunds_id), f"Article {refunds_id} (deleted)", 2, 0.5) in cited


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Where is my parcel?", "where is my parcel"),
        ("  WHERE is my   parcel!!", "where is my parcel"),
        ("我的包裹在哪里？", "我的包裹在哪里"),
        ("ＡＢＣ　１２３", "abc 123"),  # full-width letters and digits, as an IME types them
        ("🙂 ...", ""),
    ],
)
def test_question_keys_ignore_case_punctuation_and_width(text: str, key: str) -> None:
    assert selectors.question_key(text) == key


def test_questions_not_alike_stay_apart() -> None:
    questions = {
        selectors.question_key(text): [count, text]
        for text, count in [
            ("Where is my parcel?", 4),
            ("Where is my parcel now?", 1),
            ("How do I change my address?", 2),
            ("我的包裹在哪里", 2),
            ("我的包裹在哪", 1),
        ]
    }

    grouped = selectors._group_questions(questions, limit=10)

    assert [(row.label, row.count, row.variants) for row in grouped] == [
        ("Where is my parcel?", 5, ("Where is my parcel now?",)),
        ("我的包裹在哪里", 3, ("我的包裹在哪",)),
        ("How do I change my address?", 2, ()),
    ]


# The page and its CSVs.


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def card_values(html: str) -> dict[str, str]:
    return dict(
        re.findall(
            r'data-figure="([a-z_]+)">\s*<div class="reports-card-title">[^<]*</div>\s*'
            r'<div class="reports-card-value">([^<]*)</div>',
            html,
        )
    )


def test_page_shows_every_headline_figure(known: dict[str, Any]) -> None:
    response = client_for(make_user("Manager", is_staff=True)).get("/reports/", PERIOD)

    assert response.status_code == 200
    html = response.content.decode()
    assert card_values(html) == {
        "conversations": "5",
        "ai_resolution_rate": "20.0 %",
        "handoff_rate": "60.0 %",
        "unanswered_rate": "80.0 %",
        "csat_average": "3.50",
        "thumbs_up_ratio": "50.0 %",
        "ttft": "300 / 500 ms",
        "first_response": "1 min / 2 min",
        "resolution": "10 min / 1 h",
        "review_queue_open": "1",
    }
    # Three days counted live, none from aggregates yet.
    assert "0 days from the daily aggregates" in html
    assert "3 counted live" in html


def test_page_draws_its_charts_from_the_data(known: dict[str, Any]) -> None:
    html = client_for(make_user("Supervisor")).get("/reports/", PERIOD).content.decode()

    daily = html[html.index('id="chart-daily"') : html.index('id="chart-ttft"')]
    # One bar per non-zero value of a day: the 8th resolved one and handed off one, the 9th handed off
    # one and left one unanswered (other), today handed off one.
    assert re.findall(r"<title>([^<]+)</title></rect>", daily) == [
        "03-08: 1 Resolved by the AI",
        "03-08: 1 Handed off",
        "03-09: 1 Handed off",
        "03-09: 1 Other",
        "03-10: 1 Handed off",
    ]
    ttft = html[html.index('id="chart-ttft"') : html.index('id="chart-csat"')]
    assert re.findall(r"<title>([^<]+)</title></circle>", ttft) == [
        "03-08: 100 ms p50",
        "03-09: 200 ms p50",
        "03-10: 500 ms p50",
        "03-08: 300 ms p95",
        "03-09: 400 ms p95",
        "03-10: 500 ms p95",
    ]
    csat = html[html.index('id="chart-csat"') : html.index('id="chart-handoff_reasons"')]
    assert re.findall(r"<title>([^<]+)</title></rect>", csat) == [
        "5 ★: 1",
        "4 ★: 0",
        "3 ★: 0",
        "2 ★: 1",
        "1 ★: 0",
    ]
    reasons = html[html.index('id="chart-handoff_reasons"') : html.index('id="chart-review_verdicts"')]
    assert re.findall(r"<title>([^<]+)</title></rect>", reasons) == [
        "Customer pressed the button: 2 (67 %)",
        "Knowledge base had nothing: 1 (33 %)",
    ]


def test_an_empty_period_says_so_in_every_chart_and_table() -> None:
    html = client_for(make_user("Manager")).get("/reports/", PERIOD).content.decode()

    assert html.count("Nothing in this period") == 5 + 4  # the charts, then the ranked tables
    assert card_values(html)["csat_average"] == "–"


def csv_rows(response: Any) -> list[list[str]]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_every_table_exports_as_csv(known: dict[str, Any]) -> None:
    client = client_for(make_user("Manager"))
    parcels, refunds = known["parcels"], known["refunds"]

    def export(table: str) -> list[list[str]]:
        response = client.get(f"/reports/export/{table}.csv", PERIOD)
        assert f'filename="{table}-2026-03-08-2026-03-10.csv"' in response["Content-Disposition"]
        return csv_rows(response)

    assert export("daily") == [
        [
            "day",
            "conversations",
            "with_customer_message",
            "ai_resolved",
            "handoffs",
            "unanswered",
            "thumbs_up",
            "thumbs_down",
            "csat_count",
            "csat_average",
            "ttft_p50_ms",
            "ttft_p95_ms",
        ],
        ["2026-03-08", "2", "2", "1", "1", "1", "1", "1", "1", "5.0", "100", "300"],
        ["2026-03-09", "2", "2", "0", "1", "2", "0", "0", "1", "2.0", "200", "400"],
        ["2026-03-10", "1", "1", "0", "1", "1", "0", "0", "0", "", "500", "500"],
    ]
    assert export("csat") == [
        ["score", "count", "share"],
        ["5", "1", "0.5"],
        ["4", "0", "0.0"],
        ["3", "0", "0.0"],
        ["2", "1", "0.5"],
        ["1", "0", "0.0"],
    ]
    assert export("handoff_reasons") == [
        ["reason", "count", "share"],
        ["Customer pressed the button", "2", "0.6667"],
        ["Knowledge base had nothing", "1", "0.3333"],
    ]
    assert export("agent_times") == [
        ["measure", "tickets", "p50_seconds", "p95_seconds"],
        ["First agent reply", "3", "60", "120"],
        ["Resolution", "2", "600", "3600"],
    ]
    assert sorted(export("cited_articles")[1:]) == sorted(
        [[parcels.title, "2", "0.5"], [refunds.title, "2", "0.5"]]
    )
    assert export("unanswered_questions") == [
        ["question", "count", "share", "variants"],
        ["How do I get a refund?", "3", "0.75", "How do I get a refund now?"],
        ["我的发票在哪里？", "1", "0.25", ""],
    ]
    assert export("review_verdicts") == [
        ["verdict", "count", "share"],
        ["Not reviewed yet", "1", "0.5"],
        ["Wrong answer", "1", "0.5"],
    ]


def test_the_page_shows_the_tables_it_exports(known: dict[str, Any]) -> None:
    html = client_for(make_user("Manager")).get("/reports/", PERIOD).content.decode()

    questions = html[html.index('id="table-unanswered_questions"') : html.index('id="table-review_verdicts"')]
    assert (
        '<td class="kind-text">How do I get a refund?</td><td class="kind-count">3</td>'
        '<td class="kind-rate">75.0 %</td><td class="kind-text">How do I get a refund now?</td>' in questions
    )
    times = html[html.index('id="table-agent_times"') : html.index('id="table-cited_articles"')]
    assert (
        '<td class="kind-text">First agent reply</td><td class="kind-count">3</td>'
        '<td class="kind-seconds">1 min</td><td class="kind-seconds">2 min</td>'
    ) in times
    for table in ("daily", "csat", "handoff_reasons", "agent_times", "cited_articles"):
        assert f'href="/reports/export/{table}.csv?start=2026-03-08&amp;end=2026-03-10"' in html


def test_csv_cells_never_start_a_formula(known: dict[str, Any]) -> None:
    formula = conversation(at(DAY_9, 12), '=HYPERLINK("http://evil")', ttft=50, unanswered=True)
    assert formula.pk

    rows = csv_rows(client_for(make_user("Manager")).get("/reports/export/unanswered_questions.csv", PERIOD))

    assert ['\'=HYPERLINK("http://evil")', "1", "0.2", ""] in rows


def test_the_default_period_is_the_last_30_days(known: dict[str, Any]) -> None:
    html = client_for(make_user("Manager")).get("/reports/").content.decode()

    assert 'name="start" value="2026-02-09"' in html
    assert 'name="end" value="2026-03-10"' in html
    assert card_values(html)["conversations"] == "5"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2026-03-09", "end": "2026-03-08"}, "The start must not be after the end."),
        ({"start": "yesterday", "end": "2026-03-08"}, "The start must be a day as YYYY-MM-DD"),
        ({"start": "2026-02-30", "end": "2026-03-08"}, "The start must be a day as YYYY-MM-DD"),
        ({"start": "2025-01-01", "end": "2026-03-08"}, "A period may span at most 400 days."),
    ],
)
def test_a_bad_period_is_refused_with_its_reason(params: dict[str, str], message: str) -> None:
    client = client_for(make_user("Manager"))

    page = client.get("/reports/", params)
    assert page.status_code == 400
    assert message in page.content.decode()
    assert 'role="alert"' in page.content.decode()
    export = client.get("/reports/export/daily.csv", params)
    assert export.status_code == 400
    assert message in export.content.decode()


def test_an_unknown_table_is_not_found() -> None:
    assert client_for(make_user("Manager")).get("/reports/export/secrets.csv", PERIOD).status_code == 404


@pytest.mark.parametrize(
    ("group", "fields", "status_code"),
    [
        ("Supervisor", {"is_staff": True}, 200),
        ("Manager", {"is_staff": True}, 200),
        ("Manager", {}, 200),
        (None, {"is_superuser": True, "is_staff": True}, 200),
        ("Agent", {"is_staff": True}, 403),
        (None, {"is_staff": True}, 403),
    ],
)
def test_page_and_exports_per_role(group: str | None, fields: dict[str, Any], status_code: int) -> None:
    client = client_for(make_user(group, **fields))

    assert client.get("/reports/", PERIOD).status_code == status_code
    assert client.get("/reports/export/daily.csv", PERIOD).status_code == status_code


def test_a_visitor_is_sent_to_the_login_page() -> None:
    for path in ("/reports/?start=2026-03-08&end=2026-03-10", "/reports/export/daily.csv"):
        response = Client().get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=/reports/")


def test_admin_links_to_the_reports_only_for_those_who_may_read_them() -> None:
    assert (
        'href="/reports/">Reports</a>'
        in client_for(make_user("Manager", is_staff=True)).get("/admin/").content.decode()
    )
    assert (
        'href="/reports/">Reports</a>'
        not in client_for(make_user("Agent", is_staff=True)).get("/admin/").content.decode()
    )


@pytest.mark.parametrize(
    ("tallest", "maximum"),
    [(0, 4), (1, 4), (3, 4), (5, 8), (9, 12), (13, 16), (41, 60), (99, 100), (550, 600), (1234, 1600)],
)
def test_count_axes_have_four_whole_steps(tallest: int, maximum: int) -> None:
    from reports.charts import integer_axis_maximum

    assert integer_axis_maximum(tallest) == maximum
    assert maximum % 4 == 0
    assert tallest <= maximum
