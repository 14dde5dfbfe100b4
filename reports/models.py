"""Daily aggregates of the report figures, so that a year's summary reads 365 rows, not every message."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class DailyStat(models.Model):
    """The additive report figures of the conversations created on one day (in `time_zone`).

    Every field can be summed over days: the summary over a period is the sum of its days, the CSAT
    average is `csat_sum / csat_count`, and the time-to-first-token percentiles come from the summed
    `ttft_histogram`. Written only by `reports.services.daily_stats_compute`; a row computed in another
    time zone than today's TIME_ZONE is ignored by the summary (those days are computed live).
    """

    # What a row holds changes as the reports grow; a row of an older version is not read (its day is
    # counted live) until it is computed again.
    # 3: an unanswered reply keeps a conversation from counting as resolved by the AI; 4: unanswered
    # questions are stored with their personal data masked.
    VERSION = 4

    day = models.DateField(_("day"), unique=True)
    version = models.PositiveSmallIntegerField(_("version"), default=0)
    time_zone = models.CharField(_("time zone"), max_length=64)
    conversations = models.PositiveIntegerField(default=0)
    with_customer_message = models.PositiveIntegerField(default=0)
    csat_1 = models.PositiveIntegerField(default=0)
    csat_2 = models.PositiveIntegerField(default=0)
    csat_3 = models.PositiveIntegerField(default=0)
    csat_4 = models.PositiveIntegerField(default=0)
    csat_5 = models.PositiveIntegerField(default=0)
    thumbs_up = models.PositiveIntegerField(default=0)
    thumbs_down = models.PositiveIntegerField(default=0)
    handoffs = models.PositiveIntegerField(default=0)
    ai_resolved = models.PositiveIntegerField(default=0)
    unanswered = models.PositiveIntegerField(default=0)
    # {"<milliseconds>": count} of the model replies' times to first token: exact values, so that the
    # percentiles of any period of days are exact (one key per distinct millisecond value).
    ttft_histogram = models.JSONField(default=dict, blank=True)
    # {"<ticket trigger>": count} of the tickets of the day's conversations (why they were handed off).
    handoff_triggers = models.JSONField(default=dict, blank=True)
    # {"<seconds>": count} of those tickets' times to the first agent reply and to resolution.
    first_response_histogram = models.JSONField(default=dict, blank=True)
    resolution_histogram = models.JSONField(default=dict, blank=True)
    # {"<article id>": count} of the replies that cited each knowledge article.
    cited_articles = models.JSONField(default=dict, blank=True)
    # {"<normalised question>": [count, "the question as first asked"]} of the unanswered replies.
    unanswered_questions = models.JSONField(default=dict, blank=True)
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        ordering = ["-day"]
        verbose_name = _("daily statistic")
        verbose_name_plural = _("daily statistics")

    def __str__(self) -> str:
        return f"{self.day}: {self.conversations} conversations"
