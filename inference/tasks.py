"""Celery tasks: generate replies, and fail the ones whose worker died."""

from __future__ import annotations

import asyncio
import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import OperationalError

from conversations.services import replies_fail_stalled, reply_fail
from inference.generation import reply_generate

logger = logging.getLogger(__name__)

# The generation enforces INFERENCE_TOTAL_TIMEOUT itself; Celery's limits are the backstop.
REPLY_SOFT_TIME_LIMIT = int(settings.INFERENCE_TOTAL_TIMEOUT) + 30
REPLY_TIME_LIMIT = REPLY_SOFT_TIME_LIMIT + 30


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=REPLY_SOFT_TIME_LIMIT,
    time_limit=REPLY_TIME_LIMIT,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=3,
)
def generate_reply(reply_id: int) -> None:
    """Generate one assistant reply on its own event loop; a redelivered job finds it claimed and stops."""
    try:
        asyncio.run(reply_generate(reply_id=reply_id))
    except SoftTimeLimitExceeded:
        logger.error("Reply %s hit the task's soft time limit", reply_id)
        reply_fail(reply_id=reply_id, code="inference_timeout")


@shared_task(soft_time_limit=60, time_limit=90)
def fail_stalled_replies() -> int:
    """Fail replies whose worker stopped its heartbeat, or that no worker took, and tell the customers."""
    return len(replies_fail_stalled())
