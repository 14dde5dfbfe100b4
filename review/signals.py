"""The queue fills by itself: a saved thumbs-down or CSAT 1–2 queues its conversation for review.

Signals, connected in ReviewConfig.ready(), so that conversations (which saves the ratings) never
imports review. The item is written in the rating's own transaction: both are saved, or neither.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save

from conversations.models import Feedback, SatisfactionRating
from review import services


def feedback_saved(sender: type[Feedback], instance: Feedback, raw: bool = False, **kwargs: Any) -> None:
    # A fixture load (raw) may come before the rows it points at: `review_backfill` queues those.
    if raw:
        return
    services.review_item_record_for_feedback(feedback=instance)


def csat_saved(
    sender: type[SatisfactionRating], instance: SatisfactionRating, raw: bool = False, **kwargs: Any
) -> None:
    if raw:
        return
    services.review_item_record_for_csat(rating=instance)


def signals_connect() -> None:
    """Connect the handlers once (dispatch_uid: ready() may run more than once in tests)."""
    post_save.connect(feedback_saved, sender=Feedback, dispatch_uid="review.feedback_saved")
    post_save.connect(csat_saved, sender=SatisfactionRating, dispatch_uid="review.csat_saved")
