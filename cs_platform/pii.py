"""Personal data in text: found and masked before it is logged or exported.

What counts (issue 12): mainland China mobile numbers, 18-digit resident ID numbers whose check digit
is right (GB 11643), bank card numbers that pass the Luhn check, and e-mail addresses. A number that
only looks like one (an order number of 18 digits with a wrong check digit, 16 digits failing Luhn)
is left alone: masking every long number would hide the order numbers supervisors need to read.

Masks keep what people use to tell one from another and nothing that identifies the person:
a mobile keeps its first three and last four digits (138****5678, as Chinese apps show them), an ID
and a card keep their last four (**************123X, **** **** **** 1234 with the card's own
separators), an e-mail keeps its first letter and its domain (a***@example.com).
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = [
    "PiiMaskingFilter",
    "id_number_valid",
    "luhn_valid",
    "mask_mapping",
    "mask_value",
    "pii_mask",
    "record_fields",
]

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECKS = "10X98765432"

# Digits not glued to other digits or letters: "ID110105…" in a longer token is still read.
_ID = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx])(?![0-9A-Za-z])")
# 13 to 19 digits, in groups of 4 (or 6-4-…) separated by single spaces or hyphens, or none.
_CARD = re.compile(r"(?<![\d-])(\d(?:[ -]?\d){12,18})(?![\d-])")
_MOBILE = re.compile(r"(?<![\d+])((?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2})(?![\d])")
_EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9][A-Za-z0-9._%+-]*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


def id_number_valid(number: str) -> bool:
    """Whether an 18-character resident ID number's last character is its check digit (GB 11643)."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECKS[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (every bank card number does)."""
    if not digits.isdigit():
        return False
    total = 0
    for index, character in enumerate(reversed(digits)):
        value = int(character)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _mask_id(match: re.Match[str]) -> str:
    number = match.group(1)
    return "*" * 14 + number[-4:] if id_number_valid(number) else number


def _mask_card(match: re.Match[str]) -> str:
    text = match.group(1)
    digits = re.sub(r"[ -]", "", text)
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return text
    # Keep the separators where they were; every digit but the last four becomes *.
    keep_from = len(digits) - 4
    seen = 0
    masked = []
    for character in text:
        if character.isdigit():
            masked.append(character if seen >= keep_from else "*")
            seen += 1
        else:
            masked.append(character)
    return "".join(masked)


def _mask_mobile(match: re.Match[str]) -> str:
    text = match.group(1)
    digits = re.sub(r"\D", "", text)[-11:]
    return f"{digits[:3]}****{digits[-4:]}"


def _mask_email(match: re.Match[str]) -> str:
    return f"{match.group(1)[0]}***@{match.group(2)}"


def pii_mask(text: str) -> str:
    """`text` with every ID number, bank card number, mobile number and e-mail address masked.

    IDs first (an 18-digit ID may also pass Luhn), then mobiles (+86 and a mobile are 13 digits, which
    may pass Luhn too; a mobile is never found inside a longer run of digits), then cards and e-mails.
    Text with none is returned as it was.
    """
    if not text:
        return text
    masked = _ID.sub(_mask_id, text)
    masked = _MOBILE.sub(_mask_mobile, masked)
    masked = _CARD.sub(_mask_card, masked)
    return _EMAIL.sub(_mask_email, masked)


# A LogRecord's own attributes: every other one is a structured field (`extra=`, the bound context)…
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    # …but for the objects Django's loggers attach (django.request's request, django.server's socket
    # and time), which other handlers (mail_admins) read as objects and no line of ours writes.
    "request",
    "server_time",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's structured fields: what `extra=` and the bound context put on it."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class PiiMaskingFilter(logging.Filter):
    """A logging filter that masks personal data in the message, its arguments, its structured fields
    and its traceback.

    Attached to the handlers (cs_platform/settings.py LOGGING), so every logger's lines pass through
    it, third-party ones included. The message is formatted here once (`getMessage`) and stored
    masked, with no arguments left to format again. The fields (what `extra=` and the bound context,
    cs_platform/logs.py, put on the record) are masked in place, nested ones too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            # A structlog event dict (ProcessorFormatter.wrap_for_formatter): its values are fields.
            record.msg = mask_value(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not lose the line
                message = f"{record.msg!s} {record.args!r}"
            record.msg = pii_mask(message)
            record.args = None
        for key, value in record_fields(record).items():
            setattr(record, key, mask_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = pii_mask(record.exc_text)
        if record.stack_info:
            record.stack_info = pii_mask(record.stack_info)
        return True


def mask_value(value: Any) -> Any:
    """A structured log field with personal data masked: text, and the text in lists and mappings.

    Numbers, booleans and None stay as they are; any other object becomes its masked text, since a
    formatter would write its str() into the line (a model instance's str may be a customer's name).
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return pii_mask(value)
    if isinstance(value, dict):
        return mask_mapping(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(item) for item in value]
    return pii_mask(str(value))


def mask_mapping(values: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of a mapping with its values masked, nested ones too (for structured log fields)."""
    return {key: mask_value(value) for key, value in values.items()}
