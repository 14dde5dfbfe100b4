"""Text read from images by Tesseract, for models that cannot see them."""

from __future__ import annotations

import logging
from typing import IO, Any

import pytesseract
from django.conf import settings
from PIL import Image

__all__ = ["OcrFailed", "image_text"]

logger = logging.getLogger(__name__)


class OcrFailed(Exception):
    """Tesseract could not read the image: missing, timed out or failed. Not the same as "no text"."""


def image_text(image_file: IO[bytes] | Any) -> str:
    """The Chinese and English text Tesseract reads in an image ("" when it holds none).

    Raises OcrFailed when Tesseract is missing, times out (OCR_TIMEOUT_SECONDS) or fails.
    """
    try:
        with Image.open(image_file) as image:
            text = pytesseract.image_to_string(
                image, lang=settings.OCR_LANGUAGES, timeout=settings.OCR_TIMEOUT_SECONDS
            )
    except pytesseract.TesseractNotFoundError as error:
        raise OcrFailed("Tesseract is not installed.") from error
    except (pytesseract.TesseractError, RuntimeError) as error:
        # RuntimeError is pytesseract's timeout; a missing language pack is a TesseractError.
        raise OcrFailed(str(error)) from error
    lines = [line.strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)[: settings.OCR_MAX_CHARS]
