"""Celery tasks of conversations: read the text in uploaded images for text-only models."""

from __future__ import annotations

import uuid

from celery import shared_task

from conversations import services

# Tesseract enforces OCR_TIMEOUT_SECONDS itself; these are the backstop.
OCR_SOFT_TIME_LIMIT = 120
OCR_TIME_LIMIT = 150


@shared_task(acks_late=True, soft_time_limit=OCR_SOFT_TIME_LIMIT, time_limit=OCR_TIME_LIMIT)
def attachment_ocr_read(attachment_id: str) -> str:
    """Read the text in one uploaded image and keep it; a second delivery finds it read and stops."""
    return services.attachment_ocr_read(attachment_id=uuid.UUID(attachment_id))
