"""Agents' records: handoff settings, hours, holidays, presence, canned replies (tickets: conversations)."""

from __future__ import annotations

import re
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

DEFAULT_TIME_ZONE = "Asia/Shanghai"


def time_zone_validate(value: str) -> None:
    """Refuse a time zone name zoneinfo does not know (a typo would shift every opening hour)."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValidationError(
            f"{value!r} is not a time zone name such as Asia/Shanghai or Europe/Berlin."
        ) from error


class HandoffSettings(models.Model):
    """When a conversation goes to a person by itself, and the team's time zone (one row, pk 1)."""

    phrase_trigger_enabled = models.BooleanField(
        default=True,
        help_text="A customer who writes that they want a person (转人工, “human”…) is handed off.",
    )
    model_tool_trigger_enabled = models.BooleanField(
        default=True, help_text="The model may hand off by calling its handoff_to_human tool."
    )
    knowledge_miss_trigger_enabled = models.BooleanField(
        default=True, help_text="Hand off when the knowledge base had nothing for several replies in a row."
    )
    knowledge_miss_turns = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    thumbs_down_trigger_enabled = models.BooleanField(
        default=True, help_text="Hand off after several thumbs-down in a row."
    )
    thumbs_down_in_a_row = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    time_zone = models.CharField(max_length=64, default=DEFAULT_TIME_ZONE, validators=[time_zone_validate])
    expected_handle_minutes = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Minutes per waiting customer until enough first responses are recorded to measure it.",
    )
    auto_assign_enabled = models.BooleanField(
        default=False,
        help_text=(
            "Give each waiting conversation to the online agent with the fewest open ones, "
            "instead of waiting for someone to claim it."
        ),
    )
    max_conversations_per_agent = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Auto-assignment gives an agent no more open conversations than this.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "handoff settings"
        verbose_name_plural = "handoff settings"
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="handoff_settings_single_row")]

    def __str__(self) -> str:
        return "Handoff settings"

    def save(self, *args: object, **kwargs: object) -> None:
        # One row: whatever admin or code saves is the settings.
        self.pk = 1
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def current(cls) -> HandoffSettings:
        """The saved settings, or the defaults (unsaved) when nobody has saved any."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)


class WeeklyHours(models.Model):
    """One opening range on one weekday; several per day allowed; no rows at all means always open.

    A range that closes at or before it opens runs past midnight (22:00–02:00 is open until 02:00 the
    next day); opening and closing at 00:00 is the whole day.
    """

    class Weekday(models.IntegerChoices):
        MONDAY = 0, "Monday"
        TUESDAY = 1, "Tuesday"
        WEDNESDAY = 2, "Wednesday"
        THURSDAY = 3, "Thursday"
        FRIDAY = 4, "Friday"
        SATURDAY = 5, "Saturday"
        SUNDAY = 6, "Sunday"

    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    opens = models.TimeField()
    closes = models.TimeField(help_text="At or before the opening time: the range runs past midnight.")

    class Meta:
        verbose_name = "weekly opening hours"
        verbose_name_plural = "weekly opening hours"
        ordering = ["weekday", "opens"]
        constraints = [
            models.CheckConstraint(
                condition=Q(weekday__gte=0, weekday__lte=6), name="weekly_hours_weekday_0_to_6"
            ),
            models.UniqueConstraint(fields=["weekday", "opens", "closes"], name="weekly_hours_unique_range"),
        ]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.opens:%H:%M}–{self.closes:%H:%M}"


class Holiday(models.Model):
    """A date the team is closed all day (in the settings' time zone), whatever the weekly hours say."""

    date = models.DateField(unique=True)
    name = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["date"]

    def __str__(self) -> str:
        return f"{self.date:%Y-%m-%d} {self.name}".strip()


class AgentPresence(models.Model):
    """Whether an agent is at the console and taking conversations (one row per agent).

    `online_until` is pushed forward by the console's socket while it is open, so an agent whose
    browser died stops being offered conversations within a minute without anyone logging them out.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_presence"
    )
    accepting = models.BooleanField(default=True, help_text="The agent takes auto-assigned conversations.")
    online_until = models.DateTimeField(null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "agent presence"
        verbose_name_plural = "agent presence"

    def __str__(self) -> str:
        return f"{self.user} ({'accepting' if self.accepting else 'away'})"


def shortcode_validate(value: str) -> None:
    """A shortcode is what the agent types after '/': letters, digits, '-' and '_', no spaces."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", value):
        raise ValidationError("A shortcode is 1 to 40 letters, digits, '-' or '_' (typed after '/').")


class CannedReply(models.Model):
    """A reply agents insert by typing /shortcode in the console, edited before it is sent."""

    class Locale(models.TextChoices):
        ANY = "", "Any language"
        EN = "en", "English"
        ZH_HANS = "zh-Hans", "简体中文"

    shortcode = models.CharField(max_length=40, validators=[shortcode_validate])
    locale = models.CharField(max_length=8, choices=Locale.choices, blank=True, default=Locale.ANY)
    title = models.CharField(max_length=200)
    text = models.TextField(max_length=4000)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "canned replies"
        ordering = ["shortcode", "locale"]
        constraints = [
            models.UniqueConstraint(
                fields=["shortcode", "locale"], name="canned_reply_unique_shortcode_locale"
            ),
        ]

    def __str__(self) -> str:
        return f"/{self.shortcode} {self.title}"


__all__ = [
    "DEFAULT_TIME_ZONE",
    "AgentPresence",
    "CannedReply",
    "HandoffSettings",
    "Holiday",
    "WeeklyHours",
    "shortcode_validate",
    "time_zone_validate",
]
