"""Celery tasks of conversations: read the text in uploaded images for text-only models, and purge
conversations past the retention period (run by beat)."""

from __future__ import annotations

import uuid

from celery import shared_task
from django.db import OperationalError

from conversations import retention, services

# Tesseract enforces OCR_TIMEOUT_SECONDS itself; these are the backstop.
OCR_SOFT_TIME_LIMIT = 120
OCR_TIME_LIMIT = 150


@shared_task(acks_late=True, soft_time_limit=OCR_SOFT_TIME_LIMIT, time_limit=OCR_TIME_LIMIT)
def attachment_ocr_read(attachment_id: str) -> str:
    """Read the text in one uploaded image and keep it; a second delivery finds it read and stops."""
    return services.attachment_ocr_read(attachment_id=uuid.UUID(attachment_id))


@shared_task(
    soft_time_limit=900,
    time_limit=960,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=3,
)
def conversations_purge_expired() -> int:
    """Purge the conversations inactive for more than DATA_RETENTION_DAYS (0: nothing), with their files.

    Each batch commits on its own, so a run stopped by its time limit keeps what it purged and the next
    run goes on; two runs at once take different rows. Returns how many conversations it removed.
    """
    return retention.conversations_purge().conversations
