"""Reads of the knowledge base."""

from __future__ import annotations

from knowledge.models import FaqEntry


def quick_entry_list(*, locale: str) -> list[FaqEntry]:
    """Published FAQ entries marked as quick entries, in the customer's language, in order."""
    return list(
        FaqEntry.objects.filter(is_published=True, is_quick_entry=True, locale=locale).order_by(
            "position", "id"
        )
    )
