"""The review queue: one item per conversation a customer rated badly, and the supervisor's verdict on it."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ReviewItem(models.Model):
    """A conversation rated CSAT 1–2 or given a thumbs-down, queued once for a supervisor to review.

    Open while the verdict is blank. The queue fills by itself (review/signals.py); a later good rating
    never removes an item: the bad one happened, and someone should look at it.
    """

    class Reason(models.TextChoices):
        CSAT_LOW = "csat_low", _("Low CSAT (1–2)")
        THUMBS_DOWN = "thumbs_down", _("Thumbs-down")

    class Verdict(models.TextChoices):
        CORRECT = "correct", _("Correct")
        WRONG_ANSWER = "wrong_answer", _("Wrong answer")
        MISSING_KNOWLEDGE = "missing_knowledge", _("Missing knowledge")
        SHOULD_HAVE_HANDED_OFF = "should_have_handed_off", _("Should have handed off")
        TONE = "tone", _("Tone")
        OTHER = "other", _("Other")

    # One item per conversation, whatever and however often the customer rated: the constraint is what
    # makes two ratings saved at once still one item (review/services.py).
    conversation = models.OneToOneField(
        "conversations.Conversation", on_delete=models.CASCADE, related_name="review_item"
    )
    # What put the conversation in the queue first, and what the customer did most recently.
    reason = models.CharField(_("reason"), max_length=16, choices=Reason.choices)
    latest_reason = models.CharField(_("latest reason"), max_length=16, choices=Reason.choices)
    latest_rated_at = models.DateTimeField(_("latest bad rating"), default=timezone.now)
    # The reply under review: the thumbed-down one, or for a CSAT the conversation's last assistant reply
    # (None when the conversation had none).
    message = models.ForeignKey(
        "conversations.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("reply under review"),
    )
    # The time of the rating that queued it (not auto_now_add: the backfill keeps the ratings' times).
    created_at = models.DateTimeField(_("queued at"), default=timezone.now, db_index=True)
    verdict = models.CharField(_("verdict"), max_length=32, choices=Verdict.choices, blank=True)
    note = models.TextField(_("note"), blank=True, max_length=4000)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_items",
        verbose_name=_("reviewer"),
    )
    reviewed_at = models.DateTimeField(_("reviewed at"), null=True, blank=True)
    # The reviewer's corrected answer, kept with the drafts made from it.
    corrected_answer = models.TextField(_("corrected answer"), blank=True)
    draft_article = models.ForeignKey(
        "knowledge.Article",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_items",
        verbose_name=_("draft article"),
    )
    draft_faq_entry = models.ForeignKey(
        "knowledge.FaqEntry",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_items",
        verbose_name=_("draft FAQ entry"),
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("review item")
        verbose_name_plural = _("review queue")
        indexes = [models.Index(fields=["verdict", "-created_at"], name="review_item_open_queue")]
        constraints = [
            models.CheckConstraint(
                condition=Q(verdict="") | Q(reviewed_at__isnull=False),
                name="review_item_verdict_has_review_time",
            )
        ]

    def __str__(self) -> str:
        return f"Review of conversation {str(self.conversation_id)[:8]}"

    @property
    def is_open(self) -> bool:
        return not self.verdict
