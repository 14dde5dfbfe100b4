"""Text read from images by Tesseract, for models that cannot see them."""

from __future__ import annotations

import logging
from typing import IO, Any

import pytesseract
from django.conf import settings
from PIL import Image

logger = logging.getLogger(__name__)


def image_text(image_file: IO[bytes] | Any) -> str | None:
    """The Chinese and English text Tesseract reads in an image; None when Tesseract is not installed."""
    try:
        with Image.open(image_file) as image:
            text = pytesseract.image_to_string(
                image, lang=settings.OCR_LANGUAGES, timeout=settings.OCR_TIMEOUT_SECONDS
            )
    except pytesseract.TesseractNotFoundError:
        return None
    except (pytesseract.TesseractError, RuntimeError) as error:
        # RuntimeError is pytesseract's timeout; a missing language pack is a TesseractError.
        logger.warning("OCR failed: %s", error)
        return ""
    lines = [line.strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)[: settings.OCR_MAX_CHARS]
