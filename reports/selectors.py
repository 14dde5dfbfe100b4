"""Reads for the reports: the summary of a period, from daily aggregates and live counts.

A period is a range of days in TIME_ZONE, inclusive. Every figure counts the conversations *created*
in the period (their ratings, tickets and replies, whenever those came). Past days are read from
`DailyStat` rows; today, and any past day without a row (or with a row computed in another time
zone), is counted live from the conversations themselves. Both paths build the same `Totals` with the
same queries (`totals_live_get` is what `reports.services.daily_stats_compute` stores), so the two agree.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from cs_platform.pii import pii_mask
from reports.models import DailyStat

__all__ = [
    "CSAT_SCORES",
    "RATE_DECIMALS",
    "SUMMARY_KEYS",
    "Report",
    "Summary",
    "Totals",
    "day_bounds",
    "percentile_nearest_rank",
    "question_key",
    "report_get",
    "report_time_zone",
    "summary_get",
    "today_get",
    "totals_live_get",
]

CSAT_SCORES = (1, 2, 3, 4, 5)
# Rates and the CSAT average are rounded to this many decimals (half to even, Python's round()).
RATE_DECIMALS = 4

# The contract's keys, in its order (GET /api/reports/summary).
SUMMARY_KEYS = (
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
)


def report_time_zone() -> ZoneInfo:
    """TIME_ZONE, not the request's active zone: a day means the same day to every reader."""
    return ZoneInfo(settings.TIME_ZONE)


def today_get() -> date:
    """Today in TIME_ZONE: the day that is always counted live."""
    return timezone.localtime(timezone.now(), report_time_zone()).date()


def day_bounds(*, start: date, end: date) -> tuple[datetime, datetime]:
    """The instants [start's midnight, the midnight after end) in TIME_ZONE, as aware datetimes."""
    zone = report_time_zone()
    return (
        datetime.combine(start, time.min, tzinfo=zone),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone),
    )


@dataclass
class Totals:
    """The additive figures of some set of days: what a `DailyStat` row stores, and what adds up."""

    conversations: int = 0
    with_customer_message: int = 0
    csat: dict[int, int] = field(default_factory=lambda: dict.fromkeys(CSAT_SCORES, 0))
    thumbs_up: int = 0
    thumbs_down: int = 0
    handoffs: int = 0
    ai_resolved: int = 0
    unanswered: int = 0
    # Milliseconds to first token -> how many model replies took exactly that long.
    ttft: Counter[int] = field(default_factory=Counter)
    # Ticket trigger -> how many of the conversations' tickets it opened.
    handoff_triggers: Counter[str] = field(default_factory=Counter)
    # Seconds -> how many tickets took that long to their first agent reply / to resolution.
    first_response: Counter[int] = field(default_factory=Counter)
    resolution: Counter[int] = field(default_factory=Counter)
    # Knowledge article id -> how many replies cited it.
    cited_articles: Counter[int] = field(default_factory=Counter)
    # question_key(text) -> [how many unanswered replies it got, the text as first asked].
    unanswered_questions: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, other: Totals) -> None:
        self.conversations += other.conversations
        self.with_customer_message += other.with_customer_message
        for score in CSAT_SCORES:
            self.csat[score] += other.csat[score]
        self.thumbs_up += other.thumbs_up
        self.thumbs_down += other.thumbs_down
        self.handoffs += other.handoffs
        self.ai_resolved += other.ai_resolved
        self.unanswered += other.unanswered
        self.ttft.update(other.ttft)
        self.handoff_triggers.update(other.handoff_triggers)
        self.first_response.update(other.first_response)
        self.resolution.update(other.resolution)
        self.cited_articles.update(other.cited_articles)
        for key, (count, text) in other.unanswered_questions.items():
            if key in self.unanswered_questions:
                self.unanswered_questions[key][0] += count
            else:
                self.unanswered_questions[key] = [count, text]

    @classmethod
    def from_row(cls, row: DailyStat) -> Totals:
        return cls(
            conversations=row.conversations,
            with_customer_message=row.with_customer_message,
            csat={score: getattr(row, f"csat_{score}") for score in CSAT_SCORES},
            thumbs_up=row.thumbs_up,
            thumbs_down=row.thumbs_down,
            handoffs=row.handoffs,
            ai_resolved=row.ai_resolved,
            unanswered=row.unanswered,
            ttft=_int_counter(row.ttft_histogram),
            handoff_triggers=Counter({str(k): int(v) for k, v in row.handoff_triggers.items()}),
            first_response=_int_counter(row.first_response_histogram),
            resolution=_int_counter(row.resolution_histogram),
            cited_articles=_int_counter(row.cited_articles),
            unanswered_questions={
                str(key): [int(value[0]), str(value[1])] for key, value in row.unanswered_questions.items()
            },
        )

    def row_fields(self) -> dict[str, Any]:
        """The `DailyStat` fields holding these totals (the histogram's keys as strings, as JSON has them)."""
        return {
            "conversations": self.conversations,
            "with_customer_message": self.with_customer_message,
            **{f"csat_{score}": self.csat[score] for score in CSAT_SCORES},
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "handoffs": self.handoffs,
            "ai_resolved": self.ai_resolved,
            "unanswered": self.unanswered,
            "ttft_histogram": _str_keys(self.ttft),
            "handoff_triggers": dict(sorted(self.handoff_triggers.items())),
            "first_response_histogram": _str_keys(self.first_response),
            "resolution_histogram": _str_keys(self.resolution),
            "cited_articles": _str_keys(self.cited_articles),
            "unanswered_questions": dict(sorted(self.unanswered_questions.items())),
        }


def _int_counter(stored: dict[str, Any]) -> Counter[int]:
    return Counter({int(key): int(count) for key, count in stored.items()})


def _str_keys(counter: Counter[int]) -> dict[str, int]:
    """A Counter as JSON stores it: keys as strings, in numeric order, no zero counts."""
    return {str(key): count for key, count in sorted(counter.items()) if count}


# Letters and digits of any script; everything else (punctuation, spaces, emoji) is dropped from a key.
_NOT_WORD = re.compile(r"[\W_]+")
QUESTION_TEXT_CHARS = 200


def question_key(text: str) -> str:
    """A question as the reports group it exactly: NFKC, case-folded, only its letters and digits.

    "Where is my parcel?" and "where is my  parcel" share a key; 我的包裹在哪里？ and 我的包裹在哪里 too.
    Questions that are only alike (a word more or less) are grouped later, by `_group_questions`.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NOT_WORD.sub(" ", folded).strip()[:QUESTION_TEXT_CHARS]


@dataclass(frozen=True)
class Summary:
    """The summary of a period, as the contract names its figures."""

    start: date
    end: date
    conversations: int
    with_customer_message: int
    csat_count: int
    csat_average: float | None
    csat_distribution: dict[str, int]
    thumbs_up: int
    thumbs_down: int
    handoffs: int
    handoff_rate: float
    ai_resolution_rate: float
    unanswered: int
    ttft_p50_ms: int | None
    ttft_p95_ms: int | None
    review_queue_open: int
    # How the days were read: from aggregates, and live (for the page and for tests; not in the API).
    days_from_aggregates: int = 0
    days_live: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The contract's JSON object, its keys in the contract's order."""
        return {key: getattr(self, key) for key in SUMMARY_KEYS}


def percentile_nearest_rank(histogram: Counter[int], percent: int) -> int | None:
    """The nearest-rank percentile: the smallest value with at least `percent`% of the values at or
    below it (the value at rank ceil(percent/100 × N) of the sorted values). None when there are none.

    Nearest-rank always answers with a value that was measured (no interpolation), and over counts of
    exact values it is exact: the same answer from a day's histograms summed as from the raw rows.
    """
    total = sum(histogram.values())
    if total <= 0:
        return None
    # ceil(percent × N / 100) in integers: a float's 0.95 × 100 may come out just above 95.
    rank = max(1, -(-percent * total // 100))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)  # pragma: no cover - rank <= total always stops the loop


def _rate(part: int, whole: int) -> float:
    """A share of `whole`, rounded; 0.0 when there is nothing to share (no conversation to rate)."""
    return round(part / whole, RATE_DECIMALS) if whole else 0.0


def totals_live_get(*, start: datetime, end: datetime) -> Totals:
    """The totals of the conversations created in [start, end), counted from the conversations.

    Five queries whatever the period: one over the conversations (with EXISTS for their customer
    messages, complete replies, unanswered replies and tickets), and one each for CSAT, thumbs and
    times to first token.
    """
    conversations = Conversation.objects.filter(created_at__gte=start, created_at__lt=end)
    messages = Message.objects.filter(conversation=OuterRef("pk"))
    counts = conversations.annotate(
        has_customer_message=Exists(messages.filter(role=Message.Role.CUSTOMER)),
        has_complete_reply=Exists(
            messages.filter(role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE)
        ),
        has_unanswered_reply=Exists(messages.filter(role=Message.Role.ASSISTANT, is_unanswered=True)),
        has_ticket=Exists(Ticket.objects.filter(conversation=OuterRef("pk"))),
    ).aggregate(
        conversations=Count("pk"),
        with_customer_message=Count("pk", filter=Q(has_customer_message=True)),
        handoffs=Count("pk", filter=Q(has_ticket=True)),
        ai_resolved=Count(
            "pk",
            filter=Q(
                has_customer_message=True,
                has_complete_reply=True,
                has_ticket=False,
                has_unanswered_reply=False,
            ),
        ),
        unanswered=Count("pk", filter=Q(has_unanswered_reply=True)),
    )
    # Each row's own created_at bounds it too: a message, ticket or rating is never older than its
    # conversation, so this changes no count, and it lets PostgreSQL read only the recent rows by their
    # index rather than scan every conversation of the year to join on (docs/benchmarks.md, Reports).
    in_period = {
        "conversation__created_at__gte": start,
        "conversation__created_at__lt": end,
        "created_at__gte": start,
    }
    csat = dict.fromkeys(CSAT_SCORES, 0)
    for row in (
        SatisfactionRating.objects.filter(**in_period).order_by().values("score").annotate(count=Count("pk"))
    ):
        csat[row["score"]] = row["count"]
    thumbs = {
        row["rating"]: row["count"]
        for row in Feedback.objects.filter(
            message__conversation__created_at__gte=start,
            message__conversation__created_at__lt=end,
            message__created_at__gte=start,
        )
        .order_by()
        .values("rating")
        .annotate(count=Count("pk"))
    }
    ttft: Counter[int] = Counter()
    for latency_row in (
        Message.objects.filter(
            **in_period,
            role=Message.Role.ASSISTANT,
            source=Message.Source.MODEL,
            first_token_latency_ms__isnull=False,
        )
        .order_by()
        .values("first_token_latency_ms")
        .annotate(count=Count("pk"))
    ):
        latency = latency_row["first_token_latency_ms"]
        if latency is not None:  # excluded by the filter; the check is for the type
            ttft[latency] = latency_row["count"]
    tickets = Ticket.objects.filter(**in_period).order_by()
    handoff_triggers: Counter[str] = Counter(
        {row["trigger"]: row["count"] for row in tickets.values("trigger").annotate(count=Count("pk"))}
    )
    first_response = _seconds_histogram(tickets, "first_response_seconds")
    resolution = _seconds_histogram(tickets, "resolution_seconds")
    cited_articles: Counter[int] = Counter()
    for citations in (
        Message.objects.filter(**in_period, role=Message.Role.ASSISTANT)
        .exclude(citations=[])
        .values_list("citations", flat=True)
    ):
        cited_articles.update(_cited_article_ids(citations))
    return Totals(
        conversations=counts["conversations"],
        with_customer_message=counts["with_customer_message"],
        csat=csat,
        thumbs_up=thumbs.get(Feedback.Rating.UP, 0),
        thumbs_down=thumbs.get(Feedback.Rating.DOWN, 0),
        handoffs=counts["handoffs"],
        ai_resolved=counts["ai_resolved"],
        unanswered=counts["unanswered"],
        ttft=ttft,
        handoff_triggers=handoff_triggers,
        first_response=first_response,
        resolution=resolution,
        cited_articles=cited_articles,
        unanswered_questions=_unanswered_questions(in_period),
    )


def _seconds_histogram(tickets: Any, field_name: str) -> Counter[int]:
    histogram: Counter[int] = Counter()
    for row in (
        tickets.filter(**{f"{field_name}__isnull": False}).values(field_name).annotate(count=Count("pk"))
    ):
        histogram[int(row[field_name])] = row["count"]
    return histogram


def _cited_article_ids(citations: Any) -> set[int]:
    """The knowledge articles one reply cites (each once, however often it cites it)."""
    ids: set[int] = set()
    if not isinstance(citations, list):
        return ids
    for citation in citations:
        article = citation.get("article") if isinstance(citation, dict) else None
        if isinstance(article, int) and not isinstance(article, bool):
            ids.add(article)
        elif isinstance(article, str) and article.isdigit():
            ids.add(int(article))
    return ids


def _unanswered_questions(in_period: dict[str, datetime]) -> dict[str, list[Any]]:
    """The questions behind the period's unanswered replies: the message each replies to, else the
    customer's last message before it, grouped by `question_key`."""
    question_before = (
        Message.objects.filter(
            conversation=OuterRef("conversation"),
            role=Message.Role.CUSTOMER,
            created_at__lte=OuterRef("created_at"),
        )
        .order_by("-created_at", "-id")
        .values("text")[:1]
    )
    questions: dict[str, list[Any]] = {}
    rows = (
        Message.objects.filter(**in_period, role=Message.Role.ASSISTANT, is_unanswered=True)
        .annotate(question=Coalesce("reply_to__text", Subquery(question_before)))
        .order_by("created_at", "id")
        .values_list("question", flat=True)
    )
    for text in rows:
        # Masked before it is kept in a day's row: no phone, ID, card or e-mail lives in the aggregates.
        shown = pii_mask(" ".join((text or "").split()))[:QUESTION_TEXT_CHARS]
        key = question_key(shown)
        if not key:
            continue  # an image with no words, or nothing asked: nothing to group or show
        if key in questions:
            questions[key][0] += 1
        else:
            questions[key] = [1, shown]
    return questions


def _runs(days: Iterable[date]) -> Iterator[tuple[date, date]]:
    """Consecutive days grouped into (first, last) runs, so that each run is counted in one go."""
    first: date | None = None
    last: date | None = None
    for day in sorted(days):
        if last is not None and day == last + timedelta(days=1):
            last = day
            continue
        if first is not None and last is not None:
            yield first, last
        first = last = day
    if first is not None and last is not None:
        yield first, last


def _review_queue_open(*, created_from: datetime, created_to: datetime) -> int:
    """The review items without a verdict for the period's conversations (the review app counts them).

    0 only where the review app has no such selector (ImportError); any other failure is a real error.
    """
    try:
        from review.selectors import review_queue_open_count
    except ImportError:
        return 0
    return int(review_queue_open_count(created_from=created_from, created_to=created_to))


def _period_totals(
    *, start: date, end: date, per_day: bool
) -> tuple[Totals, list[tuple[date, Totals, bool]], int, int]:
    """The totals of start..end, and with `per_day` each day's own (day, totals, counted live).

    Past days come from their `DailyStat` rows; today (and any day after it), and a past day with no row
    computed in today's TIME_ZONE by this version of the code, are counted live: one pass per run of
    consecutive such days, or one per day when each day's figures are wanted.
    Returns (totals, days, days from aggregates, days live).
    """
    today = today_get()
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    # (first day, totals, counted live) of each stored day and each live day or run of days.
    parts: list[tuple[date, Totals, bool]] = [
        (row.day, Totals.from_row(row), False)
        for row in DailyStat.objects.filter(
            day__gte=start,
            day__lte=min(end, today - timedelta(days=1)),
            time_zone=settings.TIME_ZONE,
            version=DailyStat.VERSION,
        )
    ]
    aggregated = {day for day, _, _ in parts}
    live_days = [day for day in days if day not in aggregated]
    for first, last in _runs(live_days) if not per_day else ((day, day) for day in live_days):
        run_start, run_end = day_bounds(start=first, end=last)
        parts.append((first, totals_live_get(start=run_start, end=run_end), True))
    # Added in the days' order, so that what keeps the first of something (a question's wording) keeps
    # the earliest, however the days were read.
    parts.sort(key=lambda part: part[0])
    totals = Totals()
    for _, part_totals, _ in parts:
        totals.add(part_totals)
    daily = parts if per_day else []
    return totals, daily, len(aggregated), len(live_days)


def _csat_average(csat: dict[int, int]) -> float | None:
    count = sum(csat.values())
    return round(sum(score * n for score, n in csat.items()) / count, RATE_DECIMALS) if count else None


def _summary(
    totals: Totals,
    *,
    start: date,
    end: date,
    days_from_aggregates: int,
    days_live: int,
    review_queue_open: int | None = None,
) -> Summary:
    period_start, period_end = day_bounds(start=start, end=end)
    return Summary(
        start=start,
        end=end,
        conversations=totals.conversations,
        with_customer_message=totals.with_customer_message,
        csat_count=sum(totals.csat.values()),
        csat_average=_csat_average(totals.csat),
        csat_distribution={str(score): totals.csat[score] for score in CSAT_SCORES},
        thumbs_up=totals.thumbs_up,
        thumbs_down=totals.thumbs_down,
        handoffs=totals.handoffs,
        handoff_rate=_rate(totals.handoffs, totals.with_customer_message),
        ai_resolution_rate=_rate(totals.ai_resolved, totals.with_customer_message),
        unanswered=totals.unanswered,
        ttft_p50_ms=percentile_nearest_rank(totals.ttft, 50),
        ttft_p95_ms=percentile_nearest_rank(totals.ttft, 95),
        review_queue_open=(
            _review_queue_open(created_from=period_start, created_to=period_end)
            if review_queue_open is None
            else review_queue_open
        ),
        days_from_aggregates=days_from_aggregates,
        days_live=days_live,
    )


def summary_get(*, start: date, end: date) -> Summary:
    """The summary of the conversations created from `start` to `end` (inclusive days in TIME_ZONE).

    Past days come from their `DailyStat` rows; today (and any day after it), and a past day with no row
    computed in today's TIME_ZONE, are counted live, in one pass per run of consecutive such days.
    `review_queue_open` is always live: a verdict closes an item without touching its day's row.
    """
    totals, _, aggregated, live = _period_totals(start=start, end=end, per_day=False)
    return _summary(totals, start=start, end=end, days_from_aggregates=aggregated, days_live=live)


# The report page's tables: how many rows the ranked ones show, and how alike two questions must be
# (Jaccard similarity of their character pairs) to be counted as one.
TOP_ROWS = 20
QUESTION_CANDIDATES = 300
QUESTION_SIMILARITY = 0.6


@dataclass(frozen=True)
class DayFigures:
    """One day's row of the "conversations per day" chart and table."""

    day: date
    conversations: int
    with_customer_message: int
    ai_resolved: int
    handoffs: int
    unanswered: int
    thumbs_up: int
    thumbs_down: int
    csat_count: int
    csat_average: float | None
    ttft_p50_ms: int | None
    ttft_p95_ms: int | None
    live: bool


@dataclass(frozen=True)
class Timing:
    """Times of a set of tickets, in seconds: how many were measured, the median and the 95th percentile."""

    count: int
    p50_seconds: int | None
    p95_seconds: int | None


@dataclass(frozen=True)
class Ranked:
    """A row of a ranked table: what (`key`, its `label`), how many, and its share of the table's total."""

    key: str
    label: str
    count: int
    share: float
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    """Everything the reports page shows for a period; `summary` is the contract's JSON."""

    summary: Summary
    days: list[DayFigures]
    thumbs_up_ratio: float | None
    unanswered_rate: float
    handoff_reasons: list[Ranked]
    first_response: Timing
    resolution: Timing
    cited_articles: list[Ranked]
    unanswered_questions: list[Ranked]
    review_verdicts: list[Ranked]


def _timing(histogram: Counter[int]) -> Timing:
    return Timing(
        count=sum(histogram.values()),
        p50_seconds=percentile_nearest_rank(histogram, 50),
        p95_seconds=percentile_nearest_rank(histogram, 95),
    )


def _ranked(counts: Iterable[tuple[str, str, int]], *, limit: int | None = None) -> list[Ranked]:
    """(key, label, count) rows, largest first (then by label), with their shares of the whole table."""
    rows = [row for row in counts if row[2] > 0]
    total = sum(count for _, _, count in rows)
    rows.sort(key=lambda row: (-row[2], row[1], row[0]))
    if limit is not None:
        rows = rows[:limit]
    return [
        Ranked(key=key, label=label, count=count, share=_rate(count, total)) for key, label, count in rows
    ]


def _pairs(key: str) -> set[str]:
    """A question key's character pairs: how alike two questions are, in any script."""
    return {key[index : index + 2] for index in range(max(1, len(key) - 1))}


def _group_questions(questions: dict[str, list[Any]], *, limit: int) -> list[Ranked]:
    """The most asked unanswered questions, alike ones counted together.

    The QUESTION_CANDIDATES most asked exact keys are grouped greedily, most asked first: a question
    joins the first group whose first (most asked) question shares at least QUESTION_SIMILARITY of
    their character pairs (Jaccard), else it starts a group. A group is shown as its most asked wording.
    """
    candidates = sorted(questions.items(), key=lambda item: (-item[1][0], item[0]))[:QUESTION_CANDIDATES]
    total = sum(count for count, _ in questions.values())
    groups: list[tuple[set[str], str, list[Any]]] = []  # (pairs of the first, its key, [count, texts])
    for key, (count, text) in candidates:
        pairs = _pairs(key)
        for first_pairs, _, group in groups:
            if len(pairs & first_pairs) / len(pairs | first_pairs) >= QUESTION_SIMILARITY:
                group[0] += count
                group[1].append(text)
                break
        else:
            groups.append((pairs, key, [count, [text]]))
    groups.sort(key=lambda group: (-group[2][0], group[1]))
    return [
        Ranked(key=key, label=texts[0], count=count, share=_rate(count, total), variants=tuple(texts[1:]))
        for _, key, (count, texts) in groups[:limit]
    ]


def _article_titles(ids: Iterable[int]) -> dict[int, str]:
    from knowledge.models import Article

    return dict(Article.objects.filter(pk__in=list(ids)).values_list("pk", "title"))


def _verdict_counts(*, created_from: datetime, created_to: datetime) -> list[Ranked]:
    """The review verdicts of the period's conversations, "Not reviewed yet" for the open items."""
    try:
        from review.models import ReviewItem
        from review.selectors import review_verdict_counts
    except ImportError:
        return []
    counts = review_verdict_counts(created_from=created_from, created_to=created_to)
    labels = {"": "Not reviewed yet", **{value: str(label) for value, label in ReviewItem.Verdict.choices}}
    return _ranked(
        (verdict or "open", labels.get(verdict, verdict), count) for verdict, count in counts.items()
    )


def report_get(*, start: date, end: date) -> Report:
    """The reports page's figures for start..end: the summary, each day's figures and the ranked tables.

    Read like the summary (aggregates for past days, today live), with every day's own totals kept.
    """
    totals, days, aggregated, live = _period_totals(start=start, end=end, per_day=True)
    period_start, period_end = day_bounds(start=start, end=end)
    verdicts = _verdict_counts(created_from=period_start, created_to=period_end)
    # The open items are the verdicts' "open" row: one count of the review queue, not two.
    summary = _summary(
        totals,
        start=start,
        end=end,
        days_from_aggregates=aggregated,
        days_live=live,
        review_queue_open=sum(row.count for row in verdicts if row.key == "open"),
    )
    thumbs = totals.thumbs_up + totals.thumbs_down
    titles = _article_titles(totals.cited_articles)
    triggers = dict(Ticket.Trigger.choices)
    return Report(
        summary=summary,
        days=[
            DayFigures(
                day=day,
                conversations=day_totals.conversations,
                with_customer_message=day_totals.with_customer_message,
                ai_resolved=day_totals.ai_resolved,
                handoffs=day_totals.handoffs,
                unanswered=day_totals.unanswered,
                thumbs_up=day_totals.thumbs_up,
                thumbs_down=day_totals.thumbs_down,
                csat_count=sum(day_totals.csat.values()),
                csat_average=_csat_average(day_totals.csat),
                ttft_p50_ms=percentile_nearest_rank(day_totals.ttft, 50),
                ttft_p95_ms=percentile_nearest_rank(day_totals.ttft, 95),
                live=is_live,
            )
            for day, day_totals, is_live in days
        ],
        thumbs_up_ratio=_rate(totals.thumbs_up, thumbs) if thumbs else None,
        unanswered_rate=_rate(totals.unanswered, totals.with_customer_message),
        handoff_reasons=_ranked(
            (trigger, str(triggers.get(trigger, trigger)), count)
            for trigger, count in totals.handoff_triggers.items()
        ),
        first_response=_timing(totals.first_response),
        resolution=_timing(totals.resolution),
        cited_articles=_ranked(
            (str(article), titles.get(article, f"Article {article} (deleted)"), count)
            for article, count in totals.cited_articles.items()
        )[:TOP_ROWS],
        unanswered_questions=_group_questions(totals.unanswered_questions, limit=TOP_ROWS),
        review_verdicts=verdicts,
    )
