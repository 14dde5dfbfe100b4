"""Uploaded images are normalised with the configured limits, a bounded number at a time per process.

Decoding a picture briefly needs up to a few hundred MB (a 4096x4096 PNG about 130 MB), and every
upload runs in a thread of its own: without a bound, a burst of uploads decodes them all at once
and exhausts the web server's memory. A request that finds every slot taken waits a little, then
is refused with `busy` (HTTP 503 and Retry-After); nothing of it is kept, so the client sends it again.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import BinaryIO

from django.conf import settings

from conversations.images import NormalisedImage, normalise_image

__all__ = ["RETRY_AFTER_SECONDS", "UploadsBusy", "image_normalise"]

# A slot frees within about a second (a 12 MP photo takes well under one to normalise).
RETRY_AFTER_SECONDS = 2


class UploadsBusy(Exception):
    """Every normalisation slot stayed taken for the whole wait; the client may retry later."""

    code = "busy"
    http_status = 503

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        self.detail = f"Too many pictures are being processed right now; send it again in {retry_after} s."
        super().__init__(f"{self.code}: {self.detail}")


@cache
def _slots(concurrency: int) -> threading.BoundedSemaphore:
    """The process's semaphore for a given concurrency (one per value, so a changed setting takes effect)."""
    return threading.BoundedSemaphore(concurrency)


def image_normalise(source: BinaryIO | bytes) -> NormalisedImage:
    """Normalise an upload with the ATTACHMENT_* limits, ATTACHMENT_NORMALISE_CONCURRENCY at a time."""
    slots = _slots(settings.ATTACHMENT_NORMALISE_CONCURRENCY)
    if not slots.acquire(timeout=settings.ATTACHMENT_NORMALISE_WAIT_SECONDS):
        raise UploadsBusy(retry_after=RETRY_AFTER_SECONDS)
    try:
        return normalise_image(
            source,
            max_bytes=settings.ATTACHMENT_MAX_BYTES,
            max_side=settings.ATTACHMENT_MAX_SIDE,
            max_output_pixels=settings.ATTACHMENT_MAX_PIXELS,
            max_input_pixels=settings.ATTACHMENT_MAX_DECODED_PIXELS,
            max_jpeg_pixels=settings.ATTACHMENT_MAX_JPEG_PIXELS,
        )
    finally:
        slots.release()
