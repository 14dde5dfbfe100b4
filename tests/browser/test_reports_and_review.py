"""The reports page and the review queue in headless Chromium, through daphne: a manager signs in and
reads the figures, charts and CSVs of known conversations; an agent is refused and a visitor is sent to
the login; a supervisor records a verdict and turns a corrected answer into a draft article."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, ViewportSize, expect

from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from knowledge.models import Article
from reports import selectors
from review import services as review_services
from review.models import ReviewItem
from tests import factories
from tests.browser.conftest import SCREENSHOTS, Platform
from tests.factories import make_user

pytestmark = pytest.mark.browser

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory
ArticleFactory: Any = factories.ArticleFactory

DESKTOP = ViewportSize(width=1280, height=800)
PASSWORD = "a-long-test-password"  # what make_user gives every user


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def save_screenshot(page: Page, screenshots: Path, name: str) -> Path:
    """The whole page into the test run's screenshots (`make screenshots` copies the README's into
    docs/screenshots/; a test run leaves the tree as it was)."""
    path = screenshots / name
    page.screenshot(path=str(path), full_page=True)
    return path


def signed_in(browser: Browser, platform: Platform, username: str, *, next_url: str = "/admin/") -> Page:
    """A browser of its own, signed in through the admin's login form, which then opens `next_url`."""
    page = browser.new_context(viewport=DESKTOP, locale="en-US").new_page()
    page.goto(f"{platform.url}/admin/login/?{urlencode({'next': next_url})}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    return page


def at(platform: Platform, path: str) -> re.Pattern[str]:
    """The address of `path` on the platform, whatever query admin keeps on it (its list's filters)."""
    return re.compile(rf"^{re.escape(platform.url + path)}(\?.*)?$")


# --- the known conversations ------------------------------------------------------------------------


def period() -> tuple[date, date]:
    """The three days before today (in TIME_ZONE, as the platform counts them): all past days."""
    today = selectors.today_get()
    return today - timedelta(days=3), today - timedelta(days=1)


def conversation_on(day: date, hour: int, *, question: str | None) -> Conversation:
    """A conversation created at `hour` on `day` in TIME_ZONE, with the customer's question if any."""
    conversation: Any = ConversationFactory()
    created = datetime.combine(day, time(hour), tzinfo=ZoneInfo(settings.TIME_ZONE))
    Conversation.objects.filter(pk=conversation.pk).update(created_at=created)
    if question is not None:
        MessageFactory(conversation=conversation, text=question)
    return conversation


def model_reply(
    conversation: Conversation,
    *,
    ttft: int,
    cites: tuple[Article, ...] = (),
    unanswered: bool = False,
    thumbs: int | None = None,
    text: str = "Parcels arrive within 3 days [1].",
) -> Message:
    reply: Any = MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=Message.Source.MODEL,
        text=text,
        model="test-model",
        first_token_latency_ms=ttft,
        total_latency_ms=ttft + 900,
        is_unanswered=unanswered,
        citations=[
            {"article": article.pk, "title": article.title, "anchor": "", "url": f"/kb/{article.slug}"}
            for article in cites
        ],
    )
    if thumbs is not None:
        Feedback.objects.create(message=reply, rating=thumbs)
    return reply


def ticket(conversation: Conversation, *, trigger: str, first_response: int, resolution: int) -> None:
    Ticket.objects.create(
        conversation=conversation,
        status=Ticket.Status.RESOLVED,
        reason="Wants a person",
        trigger=trigger,
        first_response_seconds=first_response,
        resolution_seconds=resolution,
    )


def csat(conversation: Conversation, score: int) -> None:
    SatisfactionRating.objects.create(conversation=conversation, score=score)


def known_conversations() -> dict[str, Conversation]:
    """Six conversations over three past days, one outside the period; their figures are worked out
    by hand in EXPECTED_CARDS and in the assertions."""
    first, second, third = (period()[0] + timedelta(days=offset) for offset in range(3))
    delivery = ArticleFactory(title="Delivery times", slug="delivery-times")
    returns = ArticleFactory(title="Returns", slug="returns")
    reviewer = make_user("Supervisor", username="supervisor-report", is_staff=True)
    c: dict[str, Conversation] = {}

    # Outside the period (the day before): it has everything, and none of it may count.
    c["outside"] = conversation_on(first - timedelta(days=1), 12, question="Where is my parcel?")
    model_reply(c["outside"], ttft=9000, thumbs=Feedback.Rating.DOWN)
    csat(c["outside"], 3)

    # The first day. c1: answered by the model citing "Delivery times", thumbs-up, CSAT 5: the AI's.
    c["c1"] = conversation_on(first, 10, question="Where is my parcel?")
    model_reply(c["c1"], ttft=100, cites=(delivery,), thumbs=Feedback.Rating.UP)
    csat(c["c1"], 5)
    # c2: the model had nothing (unanswered), thumbs-down, a ticket for the knowledge miss, CSAT 2.
    c["c2"] = conversation_on(first, 14, question="Can I pay by invoice?")
    model_reply(
        c["c2"],
        ttft=300,
        unanswered=True,
        thumbs=Feedback.Rating.DOWN,
        text="I could not find anything about that.",
    )
    ticket(c["c2"], trigger=Ticket.Trigger.KNOWLEDGE_MISS, first_response=90, resolution=600)
    csat(c["c2"], 2)

    # The second day. c3: answered citing "Delivery times", thumbs-up, CSAT 4: the AI's.
    c["c3"] = conversation_on(second, 9, question="How long does delivery take?")
    model_reply(c["c3"], ttft=200, cites=(delivery,), thumbs=Feedback.Rating.UP)
    csat(c["c3"], 4)
    # c4: answered, then the customer asked for a person; CSAT 1.
    c["c4"] = conversation_on(second, 16, question="I want to talk to a person")
    model_reply(c["c4"], ttft=500, text="I can help with that.")
    ticket(c["c4"], trigger=Ticket.Trigger.CUSTOMER_PHRASE, first_response=30, resolution=1200)
    csat(c["c4"], 1)

    # The third day. c5: answered citing both articles, CSAT 5: the AI's. c6: opened, nothing written.
    c["c5"] = conversation_on(third, 11, question="Can I return a parcel that was late?")
    model_reply(c["c5"], ttft=400, cites=(delivery, returns))
    csat(c["c5"], 5)
    c["c6"] = conversation_on(third, 15, question=None)

    # The ratings queued c2 (thumbs-down, CSAT 2: one item) and c4 (CSAT 1); c2's is reviewed.
    assert ReviewItem.objects.filter(conversation__in=[c["c2"], c["c4"], c["outside"]]).count() == 3
    review_services.review_verdict_record(
        item=ReviewItem.objects.get(conversation=c["c2"]),
        verdict=ReviewItem.Verdict.WRONG_ANSWER,
        note="Invoices are accepted for business accounts.",
        reviewer=reviewer,
    )
    return c


# The headline cards of the period, as the page writes them.
EXPECTED_CARDS: dict[str, tuple[str, str | re.Pattern[str]]] = {
    "conversations": ("6", "5 with a question"),
    "ai_resolution_rate": ("60.0 %", "answered, no person needed"),  # c1, c3, c5 of 5
    "handoff_rate": ("40.0 %", "2 conversations with a ticket"),  # c2, c4 of 5
    "unanswered_rate": ("20.0 %", "1 conversation"),  # c2 of 5
    "csat_average": ("3.40", "of 5, 5 ratings"),  # (5 + 2 + 4 + 1 + 5) / 5
    "thumbs_up_ratio": ("66.7 %", "2 up, 1 down"),
    # Model replies' times to first token 100 200 300 400 500: nearest rank, p50 the 3rd, p95 the 5th.
    "ttft": ("300 / 500 ms", "model replies"),
    "first_response": ("30 s / 1 min 30 s", "2 tickets"),
    "resolution": ("10 min / 20 min", "2 tickets"),
    "review_queue_open": ("1", "rated badly, not reviewed yet"),  # c4's
}


def table_cells(page: Page, name: str) -> list[list[str]]:
    """The text of each cell of a table's body, row by row."""
    rows = page.locator(f"#table-{name} tbody tr")
    return [[cell.strip() for cell in row.locator("td").all_text_contents()] for row in rows.all()]


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_a_manager_signs_in_and_reads_the_figures_charts_and_csvs_of_the_period(
    browser: Browser, platform: Platform, screenshots: Path
) -> None:
    known_conversations()
    start, end = period()
    days = [(start + timedelta(days=offset)).strftime("%m-%d") for offset in range(3)]
    query = urlencode({"start": start.isoformat(), "end": end.isoformat()})
    make_user("Manager", username="manager-zhou", is_staff=True)

    page = signed_in(browser, platform, "manager-zhou", next_url=f"/reports/?{query}")

    expect(page).to_have_url(f"{platform.url}/reports/?{query}")
    expect(page.locator(".reports-note")).to_contain_text(f"from {start.isoformat()} to {end.isoformat()}")
    expect(page.locator(".reports-note")).to_contain_text("3 days")
    # The headline figures.
    for name, (value, note) in EXPECTED_CARDS.items():
        card = page.locator(f'[data-figure="{name}"]')
        expect(card.locator(".reports-card-value")).to_have_text(value)
        expect(card.locator(".reports-card-note")).to_have_text(note)

    # Conversations per day: a column per day, stacked from what the AI resolved, what was handed
    # off and the rest (c6, opened with nothing written), each part with its title.
    daily = page.locator("#chart-daily svg.chart")
    expect(daily).to_be_visible()
    assert daily.locator("rect title").all_text_contents() == [
        f"{days[0]}: 1 Resolved by the AI",
        f"{days[0]}: 1 Handed off",
        f"{days[1]}: 1 Resolved by the AI",
        f"{days[1]}: 1 Handed off",
        f"{days[2]}: 1 Resolved by the AI",
        f"{days[2]}: 1 Other",
    ]
    assert daily.get_attribute("aria-label") == "Conversations per day: 6 in 3 days"
    # Time to first token: a dot per day for p50 and p95 (days 1, 2 and 3: 100/300, 200/500, 400/400).
    ttft = page.locator("#chart-ttft svg.chart")
    expect(ttft.locator("circle")).to_have_count(6)
    assert ttft.locator("circle title").all_text_contents() == [
        f"{days[0]}: 100 ms p50",
        f"{days[1]}: 200 ms p50",
        f"{days[2]}: 400 ms p50",
        f"{days[0]}: 300 ms p95",
        f"{days[1]}: 500 ms p95",
        f"{days[2]}: 400 ms p95",
    ]
    expect(ttft.locator("polyline")).to_have_count(2)
    # CSAT: a bar per score, 5 first; 3 has none (a bar of no width).
    csat_chart = page.locator("#chart-csat svg.chart")
    assert csat_chart.locator("rect title").all_text_contents() == [
        "5 ★: 2",
        "4 ★: 1",
        "3 ★: 0",
        "2 ★: 1",
        "1 ★: 1",
    ]
    five_stars = csat_chart.locator("rect").first
    assert float(five_stars.get_attribute("width") or 0) > float(
        csat_chart.locator("rect").nth(1).get_attribute("width") or 0
    )
    assert float(csat_chart.locator("rect").nth(2).get_attribute("width") or 1) == 0
    assert page.locator("#chart-handoff_reasons svg.chart rect title").all_text_contents() == [
        "Customer asked for a person: 1 (50 %)",
        "Knowledge base had nothing: 1 (50 %)",
    ]
    assert page.locator("#chart-review_verdicts svg.chart rect title").all_text_contents() == [
        "Not reviewed yet: 1 (50 %)",
        "Wrong answer: 1 (50 %)",
    ]
    # No chart says it has nothing to show.
    expect(page.locator(".chart-empty")).to_have_count(0)

    # The tables.
    assert table_cells(page, "cited_articles") == [
        ["Delivery times", "3", "75.0 %"],
        ["Returns", "1", "25.0 %"],
    ]
    assert table_cells(page, "unanswered_questions") == [["Can I pay by invoice?", "1", "100.0 %", ""]]
    assert table_cells(page, "agent_times") == [
        ["First agent reply", "2", "30 s", "1 min 30 s"],
        ["Resolution", "2", "10 min", "20 min"],
    ]
    assert table_cells(page, "review_verdicts") == [
        ["Not reviewed yet", "1", "50.0 %"],
        ["Wrong answer", "1", "50.0 %"],
    ]

    save_screenshot(page, screenshots, "reports-desktop-en.png")

    # A table's CSV link downloads it, its values raw.
    csv_link = page.locator("#table-csat a.reports-csv")
    expect(csv_link).to_have_attribute("href", f"/reports/export/csat.csv?{query}")
    with page.expect_download() as downloading:
        csv_link.click()
    download = downloading.value
    assert download.suggested_filename == f"csat-{start.isoformat()}-{end.isoformat()}.csv"
    assert csv_rows(Path(download.path()).read_text(encoding="utf-8")) == [
        ["score", "count", "share"],
        ["5", "2", "0.4"],
        ["4", "1", "0.2"],
        ["3", "0", "0.0"],
        ["2", "1", "0.2"],
        ["1", "1", "0.2"],
    ]
    # Another, fetched with the page's session: the daily figures, one row a day.
    daily_href = page.locator("#table-daily a.reports-csv").get_attribute("href")
    response = page.request.get(f"{platform.url}{daily_href}")
    assert response.status == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    header, *rows = csv_rows(response.text())
    assert header[:10] == [
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
    ]
    assert [row[:10] for row in rows] == [
        [start.isoformat(), "2", "2", "1", "1", "1", "1", "1", "2", "3.5"],
        [(start + timedelta(days=1)).isoformat(), "2", "2", "1", "1", "0", "1", "0", "2", "2.5"],
        [end.isoformat(), "2", "1", "1", "0", "0", "0", "0", "1", "5.0"],
    ]
    assert [row[10:] for row in rows] == [["100", "300"], ["200", "500"], ["400", "400"]]
    page.context.close()


def test_an_agent_is_refused_the_reports_and_a_visitor_is_sent_to_the_login(
    browser: Browser, platform: Platform
) -> None:
    make_user("Agent", username="agent-he", is_staff=True)
    start, end = period()
    path = f"/reports/?{urlencode({'start': start.isoformat(), 'end': end.isoformat()})}"

    agent = signed_in(browser, platform, "agent-he")
    expect(agent.locator("#user-tools")).to_contain_text("agent-he")
    response = agent.goto(f"{platform.url}{path}")
    assert response is not None
    assert response.status == 403
    expect(agent.locator("#reports")).to_have_count(0)
    # Its CSVs too.
    assert agent.request.get(f"{platform.url}/reports/export/daily.csv").status == 403
    agent.context.close()

    visitor = browser.new_context(viewport=DESKTOP).new_page()
    visitor.goto(f"{platform.url}{path}")
    expect(visitor.locator("#id_username")).to_be_visible()
    address = urlsplit(visitor.url)
    assert address.path == "/admin/login/"
    assert parse_qs(address.query)["next"] == [path]
    expect(visitor.locator("#reports")).to_have_count(0)
    visitor.context.close()


def test_a_supervisor_records_a_verdict_and_makes_a_draft_article_from_the_correction(
    browser: Browser, platform: Platform, screenshots: Path
) -> None:
    supervisor = make_user(
        "Supervisor", username="supervisor-lin", first_name="Lin", last_name="Wei", is_staff=True
    )
    conversation: Any = ConversationFactory()
    MessageFactory(conversation=conversation, text="How long does delivery to Lyon take?")
    reply = model_reply(conversation, ttft=250, text="Delivery to Lyon takes three months.")
    # A thumbs-down, through the ORM: the signal queues the conversation with this reply.
    Feedback.objects.create(message=reply, rating=Feedback.Rating.DOWN, comment="That is far too long")
    item = ReviewItem.objects.get(conversation=conversation)
    assert (item.message, item.verdict) == (reply, "")

    page = signed_in(browser, platform, "supervisor-lin", next_url="/admin/review/reviewitem/")

    expect(page).to_have_url(at(platform, "/admin/review/reviewitem/"))
    row = page.locator("#result_list tbody tr").filter(has_text="Delivery to Lyon takes three months.")
    expect(row).to_have_count(1)
    expect(row.locator(".field-verdict_column")).to_have_text("Open")
    expect(row.locator(".field-reason")).to_have_text("Thumbs-down")
    row.get_by_role("link", name="Delivery to Lyon takes three months.").click()

    expect(page).to_have_url(at(platform, f"/admin/review/reviewitem/{item.pk}/change/"))
    expect(page.locator(".review-customer-message")).to_contain_text("How long does delivery to Lyon take?")
    expect(page.locator(".review-reply")).to_contain_text("Delivery to Lyon takes three months.")
    expect(page.locator(".field-reply_detail")).to_contain_text("That is far too long")
    page.select_option("#id_verdict", label="Wrong answer")
    page.fill("#id_note", "Lyon is in France: 2 to 4 working days.")
    page.click("input[name=_save]")

    # Back on the queue: the verdict and who gave it.
    expect(page).to_have_url(at(platform, "/admin/review/reviewitem/"))
    expect(page.locator(".messagelist .success")).to_be_visible()
    expect(row.locator(".field-verdict_column")).to_have_text("Wrong answer")
    expect(row.locator(".field-reviewer")).to_have_text("supervisor-lin")
    item.refresh_from_db()
    assert (item.verdict, item.note, item.reviewer) == (
        ReviewItem.Verdict.WRONG_ANSWER,
        "Lyon is in France: 2 to 4 working days.",
        supervisor,
    )

    # From the item: the corrected answer becomes a draft article in one action.
    row.get_by_role("link", name="Delivery to Lyon takes three months.").click()
    form = page.locator("#review-correction-form")
    expect(form.locator("#id_title")).to_have_value("How long does delivery to Lyon take?")
    expect(form.get_by_label("Draft knowledge article")).to_be_checked()
    corrected = "Parcels to Lyon arrive in **2 to 4 working days**."
    form.locator("#id_title").fill("Delivery to Lyon")
    form.locator("#id_answer").fill(corrected)
    form.locator("input[name=_make_draft]").click()

    expect(page).to_have_url(at(platform, f"/admin/review/reviewitem/{item.pk}/change/"))
    expect(page.locator(".messagelist .success")).to_contain_text("Created the draft article")
    article = Article.objects.get(title="Delivery to Lyon")
    assert (article.status, article.body, article.locale, article.updated_by) == (
        Article.Status.DRAFT,
        corrected,
        conversation.locale,
        supervisor,
    )
    item.refresh_from_db()
    assert (item.draft_article, item.corrected_answer, item.conversation_id) == (
        article,
        corrected,
        conversation.pk,
    )
    link = page.locator("a.review-draft-article")
    expect(link).to_have_text("Delivery to Lyon")
    expect(link).to_have_attribute("href", f"/admin/knowledge/article/{article.pk}/change/")
    expect(page.locator(".field-drafts")).to_contain_text("(Draft)")
    # The verdict the supervisor gave stays on the page.
    expect(page.locator("#id_verdict")).to_have_value(ReviewItem.Verdict.WRONG_ANSWER)

    save_screenshot(page, screenshots, "review-item-en.png")

    link.click()
    expect(page).to_have_url(at(platform, f"/admin/knowledge/article/{article.pk}/change/"))
    expect(page.locator("#id_body")).to_have_value(corrected)
    # The draft names the review it came from and links to the conversation.
    expect(page.locator(f'a[href="/admin/review/reviewitem/{item.pk}/change/"]').first).to_be_visible()
    expect(
        page.locator(f'a[href="/admin/conversations/conversation/{conversation.pk}/change/"]').first
    ).to_be_visible()
    page.context.close()
