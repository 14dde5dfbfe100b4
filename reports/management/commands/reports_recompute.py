"""`manage.py reports_recompute --start YYYY-MM-DD --end YYYY-MM-DD`: rewrite the daily aggregates."""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from reports import services


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD).") from error


class Command(BaseCommand):
    help = (
        "Recompute the reports' daily aggregates for the days from --start to --end (inclusive, in "
        "TIME_ZONE): after a backfill or an import, after changing TIME_ZONE, or for a late rating or "
        "ticket older than REPORTS_RECOMPUTE_DAYS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--start", required=True, type=_day, help="First day, YYYY-MM-DD.")
        parser.add_argument("--end", required=True, type=_day, help="Last day, YYYY-MM-DD (inclusive).")

    def handle(self, *args: Any, start: date, end: date, **options: Any) -> None:
        if start > end:
            raise CommandError("--start must not be after --end.")
        rows = services.daily_stats_recompute(start=start, end=end)
        conversations = sum(row.conversations for row in rows)
        self.stdout.write(
            f"Recomputed {len(rows)} day(s) from {start} to {end}: {conversations} conversations."
        )
