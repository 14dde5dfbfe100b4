"""Celery tasks of agents: auto-assignment, off the thread of whoever made it worth running."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from agents import assignment

# A run is at most ASSIGNMENTS_PER_RUN short transactions; these are the backstop.
AUTO_ASSIGN_SOFT_TIME_LIMIT = 60
AUTO_ASSIGN_TIME_LIMIT = 90


@shared_task(
    soft_time_limit=AUTO_ASSIGN_SOFT_TIME_LIMIT,
    time_limit=AUTO_ASSIGN_TIME_LIMIT,
    # The database away for a moment; a bug is not retried.
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def auto_assign() -> int:
    """Give waiting tickets to online, accepting agents under the cap; a second delivery of the same
    run finds them given (each ticket is taken by conditional update) and gives nothing twice."""
    return len(assignment.auto_assign())
