"""Celery tasks: generate replies, and fail the ones whose worker died."""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from django.db import OperationalError, close_old_connections

from conversations import replies
from cs_platform.logs import bound_context, request_id_get, request_id_new
from inference import generation, runtime
from knowledge.retrieval import retrieval_warm_up

logger = logging.getLogger(__name__)

# The generation enforces INFERENCE_TOTAL_TIMEOUT itself; the runtime's limit is the backstop (the
# threads pool has no time limits of Celery's), and Celery's are one more under the prefork pool.
REPLY_RUNTIME_TIME_LIMIT = float(settings.INFERENCE_TOTAL_TIMEOUT) + 30
REPLY_SOFT_TIME_LIMIT = int(REPLY_RUNTIME_TIME_LIMIT + runtime.LOOP_GRACE_SECONDS) + 15
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
def reply_generate(reply_id: int, request_id: str | None = None) -> None:
    """Generate one assistant reply on the process's reply runtime, beside the others it streams;
    a redelivered job finds it claimed and stops.

    `request_id` is the id of the message that asked for the reply (a job queued before it was passed
    has none): the task's log lines, the generation's and the inference request carry it.
    """
    with bound_context(request_id=request_id or request_id_new(), reply_id=reply_id):
        try:
            runtime.run(
                generation.reply_generate(reply_id=reply_id, request_id=request_id_get()),
                timeout=REPLY_RUNTIME_TIME_LIMIT,
            )
        except (TimeoutError, SoftTimeLimitExceeded):
            logger.error("Reply %s outlived its time limit; failed", reply_id)
            replies.reply_fail(reply_id=reply_id, code="inference_timeout")


@shared_task(soft_time_limit=60, time_limit=90)
def replies_fail_stalled() -> int:
    """Fail replies whose worker stopped its heartbeat, or that no worker took, and tell the customers."""
    return len(replies.replies_fail_stalled())


def reply_generation_start(reply_id: int) -> None:
    """How a queued reply starts (registered with conversations.replies by this app's config):
    on the server's own event loop in the embedded default, else as a Celery task."""
    # The request id bound where the reply was asked for (the customer's websocket frame, an HTTP
    # request) goes with the job, so that its lines and its inference request carry the same id.
    request_id = request_id_get()
    if settings.REPLY_GENERATION_IN_PROCESS:
        generation.reply_generate_in_process(reply_id=reply_id, request_id=request_id)
    else:
        reply_generate.apply_async(args=(reply_id,), kwargs={"request_id": request_id})


def _retrieval_warm_up() -> None:
    try:
        retrieval_warm_up()
    finally:
        close_old_connections()
    # What start-up made (Django, Celery, jieba's dictionary, some 145,000 objects) lives as long as the
    # process: out of the collector's sight, a full collection no longer stops a reply for ~50–100 ms.
    gc.collect()
    gc.freeze()


@worker_ready.connect
@worker_process_init.connect
def retrieval_warm_up_on_start(**kwargs: Any) -> None:
    """Load jieba, the embedder and the index beside a starting worker (the threads pool's process, or
    each prefork child), so the first customer's reply does not wait seconds for them."""
    threading.Thread(target=_retrieval_warm_up, name="retrieval-warm-up", daemon=True).start()
