"""Fill the review queue from the ratings already saved (before the queue existed, or loaded raw)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from conversations.models import Feedback, SatisfactionRating
from review import services
from review.models import ReviewItem


class Command(BaseCommand):
    help = (
        "Queue for review every conversation with a thumbs-down or a CSAT of 1 or 2 that is not queued yet. "
        "Safe to run again: a conversation is queued once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # Replayed in the order the customers rated (a rating changed later counts from its change), with
        # their times: the first reason, the reply under review and the queue's order are what they
        # would have been had the queue existed then.
        ratings: list[tuple[Any, int, Feedback | SatisfactionRating]] = [
            (feedback.updated_at, 0, feedback)
            for feedback in Feedback.objects.filter(rating=Feedback.Rating.DOWN).only(
                "id", "message_id", "rating", "updated_at"
            )
        ]
        ratings += [
            (rating.updated_at, 1, rating)
            for rating in SatisfactionRating.objects.filter(score__in=services.CSAT_LOW_SCORES).only(
                "id", "conversation_id", "score", "updated_at"
            )
        ]
        ratings.sort(key=lambda row: (row[0], row[1], row[2].pk))
        before = ReviewItem.objects.count()
        with transaction.atomic():
            for at, _, rating in ratings:
                if isinstance(rating, Feedback):
                    services.review_item_record_for_feedback(feedback=rating, at=at)
                else:
                    services.review_item_record_for_csat(rating=rating, at=at)
        created = ReviewItem.objects.count() - before
        self.stdout.write(
            f"{len(ratings)} bad rating(s) read; {created} conversation(s) queued for review, "
            f"{len(ratings) - created} rating(s) of conversations already queued."
        )
