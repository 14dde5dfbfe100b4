"""Celery tasks: keep the daily aggregates of the reports up to date (run by beat)."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from reports import services


@shared_task(
    soft_time_limit=300,
    time_limit=360,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=3,
)
def daily_stats_update() -> int:
    """Recompute the last REPORTS_RECOMPUTE_DAYS finished days; idempotent, so a rerun or an overlap
    only rewrites the same rows. Returns how many days it wrote."""
    return len(services.daily_stats_update_recent())
