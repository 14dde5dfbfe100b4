"""Writes to the review queue: items queued by bad ratings, verdicts, and the drafts made from corrections."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from conversations.errors import ServiceError
from conversations.models import Conversation, Feedback, Message, SatisfactionRating
from knowledge import services as knowledge_services
from knowledge.models import Article, FaqEntry
from review import selectors
from review.models import ReviewItem

__all__ = [
    "CSAT_LOW_SCORES",
    "DRAFT_ARTICLE",
    "DRAFT_FAQ_ENTRY",
    "review_draft_create",
    "review_item_record",
    "review_item_record_for_csat",
    "review_item_record_for_feedback",
    "review_verdict_record",
]

logger = logging.getLogger(__name__)

# The CSAT scores that queue a conversation for review (DESIGN.md, Reports).
CSAT_LOW_SCORES = frozenset({1, 2})

DRAFT_ARTICLE = "article"
DRAFT_FAQ_ENTRY = "faq"


def review_item_record(
    *,
    conversation_id: Any,
    reason: str,
    message_id: int | None,
    at: datetime | None = None,
) -> tuple[ReviewItem, bool]:
    """Queue the conversation for review once; a later bad rating only records itself as the latest.

    Safe when two ratings of one conversation are saved at once. The conversation row is locked first,
    as message_post and the handoff services lock it: without it a CSAT (whose insert holds a key
    share on the conversation) and a thumbs-down (which goes on to lock the conversation for its
    handoff rules) could each wait for the other's half-inserted item, a deadlock. The unique
    conversation column still decides for any writer that did not lock: get_or_create answers the
    loser's IntegrityError (in its own savepoint, so the rating's transaction goes on) with the
    winner's row. The first reason and reply stay; a reply is filled in only when the item had none
    (a CSAT before any assistant reply, then a thumbs-down). Returns the item and whether it is new.
    """
    at = at or timezone.now()
    with transaction.atomic():
        list(Conversation.objects.select_for_update().filter(pk=conversation_id).values_list("pk", flat=True))
        item, created = ReviewItem.objects.get_or_create(
            conversation_id=conversation_id,
            defaults={
                "reason": reason,
                "latest_reason": reason,
                "latest_rated_at": at,
                "message_id": message_id,
                "created_at": at,
            },
        )
        if created:
            return item, True
        # An update of the one row, not a read-modify-write. The latest is the one rated last (the
        # backfill replays ratings in their order with their times, so running it again changes nothing).
        ReviewItem.objects.filter(pk=item.pk, latest_rated_at__lte=at).update(
            latest_reason=reason, latest_rated_at=at
        )
        if message_id is not None:
            ReviewItem.objects.filter(pk=item.pk, message__isnull=True).update(message_id=message_id)
        item.refresh_from_db()
    return item, False


def review_item_record_for_feedback(*, feedback: Feedback, at: datetime | None = None) -> ReviewItem | None:
    """Queue the conversation of a thumbed-down reply, with that reply under review; None for a thumbs-up."""
    if feedback.rating != Feedback.Rating.DOWN:
        return None
    conversation_id = (
        Message.objects.filter(pk=feedback.message_id).values_list("conversation_id", flat=True).first()
    )
    if conversation_id is None:
        return None
    item, _ = review_item_record(
        conversation_id=conversation_id,
        reason=ReviewItem.Reason.THUMBS_DOWN,
        message_id=feedback.message_id,
        at=at,
    )
    return item


def review_item_record_for_csat(
    *, rating: SatisfactionRating, at: datetime | None = None
) -> ReviewItem | None:
    """Queue a conversation rated CSAT 1–2, with its last assistant reply under review; None otherwise."""
    if rating.score not in CSAT_LOW_SCORES:
        return None
    # `at` is given by the backfill: the last reply before the customer rated, not one written since.
    reply = selectors.last_assistant_reply(conversation_id=rating.conversation_id, before=at)
    item, _ = review_item_record(
        conversation_id=rating.conversation_id,
        reason=ReviewItem.Reason.CSAT_LOW,
        message_id=reply.pk if reply is not None else None,
        at=at,
    )
    return item


def review_verdict_record(
    *, item: ReviewItem, verdict: str, note: str, reviewer: AbstractBaseUser | AnonymousUser
) -> ReviewItem:
    """Record a supervisor's verdict and note; whoever saves it last is its reviewer, at that time."""
    if verdict not in ReviewItem.Verdict.values:
        raise ServiceError("invalid_verdict", f"A verdict is one of {', '.join(ReviewItem.Verdict.values)}.")
    item.verdict = verdict
    item.note = note.strip()[:4000]
    item.reviewer = reviewer if getattr(reviewer, "is_authenticated", False) else None  # type: ignore[assignment]
    item.reviewed_at = timezone.now()
    item.save(update_fields=["verdict", "note", "reviewer", "reviewed_at"])
    return item


def _free_slug(*, title: str, item: ReviewItem) -> str:
    """An unused article address from the title; a Chinese title (no ASCII letters) gets one from the item."""
    max_length = Article._meta.get_field("slug").max_length or 120
    base = slugify(title)[: max_length - 24].strip("-") or "review"
    stem = f"{base}-{str(item.conversation_id)[:8]}"
    slug, number = stem, 2
    while Article.objects.filter(slug=slug).exists():
        slug, number = f"{stem}-{number}", number + 1
    return slug


def review_draft_create(
    *,
    item: ReviewItem,
    kind: str,
    title: str,
    answer: str,
    user: knowledge_services.Editor,
) -> Article | FaqEntry:
    """Turn a reviewer's corrected answer into a draft article or unpublished FAQ entry, linked to the item.

    A draft, never published content: the knowledge base's own editors publish it (and only then does
    the index change). One of each kind per item, so that a form sent twice makes no second draft.
    The title (the customer's question) and the language come from the conversation.
    """
    title, answer = title.strip(), answer.strip()
    if not title or not answer:
        raise ServiceError(
            "empty_correction", "A draft needs a title (the question) and the corrected answer."
        )
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().select_related("conversation").get(pk=item.pk)
        locale = item.conversation.locale
        draft: Article | FaqEntry
        if kind == DRAFT_ARTICLE:
            if item.draft_article_id is not None:
                raise ServiceError(
                    "already_drafted", "This review already has a draft article: edit that one."
                )
            draft = knowledge_services.article_save(
                article=Article(
                    slug=_free_slug(title=title, item=item),
                    title=title,
                    body=answer,
                    locale=locale,
                    status=Article.Status.DRAFT,
                ),
                user=user,
            )
            item.draft_article = draft
            update_fields = ["draft_article", "corrected_answer"]
        elif kind == DRAFT_FAQ_ENTRY:
            if item.draft_faq_entry_id is not None:
                raise ServiceError(
                    "already_drafted", "This review already has a draft FAQ entry: edit that one."
                )
            # FaqEntry has no draft status: unpublished is its draft (retrieval reads published entries only).
            draft = knowledge_services.faq_entry_save(
                entry=FaqEntry(
                    question=title, answer=answer, locale=locale, is_published=False, is_quick_entry=False
                ),
                user=user,
            )
            item.draft_faq_entry = draft
            update_fields = ["draft_faq_entry", "corrected_answer"]
        else:
            raise ServiceError("invalid_draft_kind", "A draft is a knowledge article or an FAQ entry.")
        item.corrected_answer = answer
        item.save(update_fields=update_fields)
    logger.info("Review %s: drafted %s %s", item.pk, kind, draft.pk)
    return draft
