"""Reads of the knowledge base."""

from __future__ import annotations

from knowledge.models import Article, FaqEntry


def quick_entry_list(*, locale: str) -> list[FaqEntry]:
    """Published FAQ entries marked as quick entries, in the customer's language, in order."""
    return list(
        FaqEntry.objects.filter(is_published=True, is_quick_entry=True, locale=locale).order_by(
            "position", "id"
        )
    )


def article_published_get(*, slug: str) -> Article | None:
    """The published article at /kb/<slug>/, or None (a draft is never shown)."""
    return Article.objects.filter(slug=slug, status=Article.Status.PUBLISHED).first()


def articles_published_by_locale() -> dict[str, list[Article]]:
    """Published articles grouped by language (Chinese first, then English), each group by title."""
    grouped: dict[str, list[Article]] = {}
    for article in Article.objects.filter(status=Article.Status.PUBLISHED).order_by("locale", "title"):
        grouped.setdefault(article.locale, []).append(article)
    order = {"zh-Hans": 0, "en": 1}
    return dict(sorted(grouped.items(), key=lambda item: order.get(item[0], len(order))))
