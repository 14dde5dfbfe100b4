"""Celery tasks of agents: auto-assignment, off the thread of whoever made it worth running, and
agent assist's drafts, on the worker's reply runtime beside the replies."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import OperationalError

from agents import assignment, assist
from inference import runtime

logger = logging.getLogger(__name__)

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


# A draft ends by INFERENCE_TOTAL_TIMEOUT itself; these are the backstops, as for replies.
DRAFT_RUNTIME_TIME_LIMIT = float(settings.INFERENCE_TOTAL_TIMEOUT) + 30
DRAFT_SOFT_TIME_LIMIT = int(DRAFT_RUNTIME_TIME_LIMIT + runtime.LOOP_GRACE_SECONDS) + 15


# Not acked late and never retried: a draft is for the agent waiting at the console now, whose socket
# ends it with an error if no worker answers; redone later it would reach nobody.
@shared_task(soft_time_limit=DRAFT_SOFT_TIME_LIMIT, time_limit=DRAFT_SOFT_TIME_LIMIT + 30)
def assist_draft(
    conversation_id: str, draft_id: str, channel_name: str, based_on_message: int | None
) -> None:
    """Draft the agent's next message and stream it to the console socket that asked for it."""
    request = assist.DraftRequest(
        conversation_id=uuid.UUID(conversation_id),
        draft_id=draft_id,
        channel_name=channel_name,
        based_on_message=based_on_message,
    )
    try:
        runtime.run(assist.draft_generate(request=request), timeout=DRAFT_RUNTIME_TIME_LIMIT)
    except (TimeoutError, SoftTimeLimitExceeded):
        logger.error("Draft %s outlived its time limit", draft_id)
