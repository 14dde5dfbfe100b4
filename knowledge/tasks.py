"""Celery tasks of the knowledge base: rebuild the search index after content changed."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.db import OperationalError

from knowledge import indexing

logger = logging.getLogger(__name__)

__all__ = ["index_rebuild_enqueue", "knowledge_index_rebuild"]

# Embedding 10,000 chunks on the CPU takes minutes; an endpoint may be slower. Past this, the build
# fails (its IndexBuild marked failed) and the previous ready build stays in service.
REBUILD_SOFT_TIME_LIMIT = indexing.BUILD_TIME_LIMIT_SECONDS
REBUILD_TIME_LIMIT = REBUILD_SOFT_TIME_LIMIT + 60
# Another worker building: try again this much later (the content it read may predate this request).
BUSY_RETRY_SECONDS = 15


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=REBUILD_SOFT_TIME_LIMIT,
    time_limit=REBUILD_TIME_LIMIT,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def knowledge_index_rebuild(self: Task) -> int | None:
    """Build a new index version from the published content; idempotent (unchanged text is not embedded
    again), one build at a time, and one more after it when content changed during a build."""
    build_id = indexing.index_rebuild_run_queued()
    # Run eagerly, a retry would run again at once, for as long as the other build: it is not needed
    # there either, as index_rebuild_enqueue builds on its own thread then.
    if build_id is None and indexing.index_rebuild_is_running() and not self.request.is_eager:
        logger.info("An index build is running on another worker; building again in %s s", BUSY_RETRY_SECONDS)
        raise self.retry(countdown=BUSY_RETRY_SECONDS, max_retries=None)
    return build_id


def index_rebuild_enqueue() -> None:
    """Ask for a new index build after content changed (call it on commit); see knowledge.indexing."""
    indexing.index_rebuild_enqueue()
