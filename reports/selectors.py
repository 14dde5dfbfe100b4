"""Reads for the reports: the summary of a period, from daily aggregates and live counts.

A period is a range of days in TIME_ZONE, inclusive. Every figure counts the conversations *created*
in the period (their ratings, tickets and replies, whenever those came). Past days are read from
`DailyStat` rows; today, and any past day without a row (or with a row computed in another time
zone), is counted live from the conversations themselves. Both paths build the same `Totals` with the
same queries (`totals_live_get` is what `reports.services.daily_stats_compute` stores), so the two agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
from reports.models import DailyStat

__all__ = [
    "CSAT_SCORES",
    "RATE_DECIMALS",
    "SUMMARY_KEYS",
    "Summary",
    "Totals",
    "day_bounds",
    "percentile_nearest_rank",
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
            ttft=Counter({int(ms): int(count) for ms, count in row.ttft_histogram.items()}),
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
            "ttft_histogram": {str(ms): count for ms, count in sorted(self.ttft.items())},
        }


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
            "pk", filter=Q(has_customer_message=True, has_complete_reply=True, has_ticket=False)
        ),
        unanswered=Count("pk", filter=Q(has_unanswered_reply=True)),
    )
    in_period = {"conversation__created_at__gte": start, "conversation__created_at__lt": end}
    csat = dict.fromkeys(CSAT_SCORES, 0)
    for row in (
        SatisfactionRating.objects.filter(**in_period).order_by().values("score").annotate(count=Count("pk"))
    ):
        csat[row["score"]] = row["count"]
    thumbs = {
        row["rating"]: row["count"]
        for row in Feedback.objects.filter(
            message__conversation__created_at__gte=start, message__conversation__created_at__lt=end
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
    )


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


def summary_get(*, start: date, end: date) -> Summary:
    """The summary of the conversations created from `start` to `end` (inclusive days in TIME_ZONE).

    Past days come from their `DailyStat` rows; today (and any day after it), and a past day with no row
    computed in today's TIME_ZONE, are counted live, in one pass per run of consecutive such days.
    `review_queue_open` is always live: a verdict closes an item without touching its day's row.
    """
    today = today_get()
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    totals = Totals()
    rows = DailyStat.objects.filter(
        day__gte=start, day__lte=min(end, today - timedelta(days=1)), time_zone=settings.TIME_ZONE
    )
    aggregated: set[date] = set()
    for row in rows:
        totals.add(Totals.from_row(row))
        aggregated.add(row.day)
    live_days = [day for day in days if day not in aggregated]
    for first, last in _runs(live_days):
        run_start, run_end = day_bounds(start=first, end=last)
        totals.add(totals_live_get(start=run_start, end=run_end))

    period_start, period_end = day_bounds(start=start, end=end)
    csat_count = sum(totals.csat.values())
    csat_sum = sum(score * count for score, count in totals.csat.items())
    return Summary(
        start=start,
        end=end,
        conversations=totals.conversations,
        with_customer_message=totals.with_customer_message,
        csat_count=csat_count,
        csat_average=round(csat_sum / csat_count, RATE_DECIMALS) if csat_count else None,
        csat_distribution={str(score): totals.csat[score] for score in CSAT_SCORES},
        thumbs_up=totals.thumbs_up,
        thumbs_down=totals.thumbs_down,
        handoffs=totals.handoffs,
        handoff_rate=_rate(totals.handoffs, totals.with_customer_message),
        ai_resolution_rate=_rate(totals.ai_resolved, totals.with_customer_message),
        unanswered=totals.unanswered,
        ttft_p50_ms=percentile_nearest_rank(totals.ttft, 50),
        ttft_p95_ms=percentile_nearest_rank(totals.ttft, 95),
        review_queue_open=_review_queue_open(created_from=period_start, created_to=period_end),
        days_from_aggregates=len(aggregated),
        days_live=len(live_days),
    )
