"""Writes for the reports: the daily aggregates the summary reads for past days."""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from reports.models import DailyStat
from reports.selectors import day_bounds, today_get, totals_live_get

__all__ = ["daily_stats_compute", "daily_stats_recompute", "daily_stats_update_recent"]


def daily_stats_compute(*, day: date) -> DailyStat:
    """Count `day`'s conversations (in TIME_ZONE) and write its row, replacing any earlier one.

    Idempotent: it always counts from the conversations, so running it again (a late rating, a ticket
    opened days later, a changed TIME_ZONE) just brings the row up to date. It counts with the same
    selector the summary uses for live days, so a stored day and a live day never disagree.
    """
    start, end = day_bounds(start=day, end=day)
    totals = totals_live_get(start=start, end=end)
    row, _ = DailyStat.objects.update_or_create(
        day=day,
        defaults={
            **totals.row_fields(),
            "time_zone": settings.TIME_ZONE,
            "version": DailyStat.VERSION,
            "computed_at": timezone.now(),
        },
    )
    return row


def daily_stats_recompute(*, start: date, end: date) -> list[DailyStat]:
    """Rewrite the rows of every day from `start` to `end` inclusive (the management command's work).

    Each day is its own transaction, so a long backfill holds no lock for long and what it finished
    stays written if it is stopped.
    """
    if start > end:
        raise ValueError("start must not be after end")
    rows = []
    day = start
    while day <= end:
        with transaction.atomic():
            rows.append(daily_stats_compute(day=day))
        day += timedelta(days=1)
    return rows


def daily_stats_update_recent(*, days: int | None = None) -> list[DailyStat]:
    """Recompute the last `days` finished days (REPORTS_RECOMPUTE_DAYS): yesterday and the days before.

    Not today: today is always counted live. A past day is recomputed for a while because what it
    counts keeps changing after midnight: a CSAT or a thumbs-down given later, a ticket opened later.
    A change older than that window reaches the aggregates only through `manage.py reports_recompute`.
    """
    count = settings.REPORTS_RECOMPUTE_DAYS if days is None else days
    if count < 1:
        return []
    yesterday = today_get() - timedelta(days=1)
    return daily_stats_recompute(start=yesterday - timedelta(days=count - 1), end=yesterday)
