"""Blocked terms (per language) and the one row of safety settings: replacement sentence, disclaimer."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from safety.terms import term_normalise

# The defaults, also what a blank sentence falls back to: never an empty bubble.
DEFAULT_REPLACEMENTS: dict[str, str] = {
    "en": "Sorry, I can't help with that. Would you like to talk to a person?",
    "zh-Hans": "抱歉，这个问题我无法回答。需要为您转接人工客服吗？",
}
DEFAULT_DISCLAIMERS: dict[str, str] = {
    "en": "AI-generated answer; please check important details.",
    "zh-Hans": "以上回答由 AI 生成，重要信息请核实。",
}


class BlockedTerm(models.Model):
    """A word or phrase the assistant must never say to a customer: a reply with it is stopped."""

    class Locale(models.TextChoices):
        ANY = "any", "Any language"
        EN = "en", "English"
        ZH_HANS = "zh-Hans", "简体中文"

    term = models.CharField(
        max_length=100,
        help_text=(
            "Matched without regard to case or full-width letters. A term in Latin letters matches whole "
            "words only (“ass” does not block “class”); a Chinese term matches anywhere."
        ),
    )
    locale = models.CharField(
        max_length=8,
        choices=Locale.choices,
        default=Locale.ANY,
        help_text="Checked in replies of conversations in this language, or in every language.",
    )
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=300, blank=True, help_text="Why the term is blocked, for colleagues.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["locale", "term"]
        constraints = [
            models.UniqueConstraint(fields=["term", "locale"], name="blocked_term_unique_per_locale")
        ]

    def __str__(self) -> str:
        return self.term

    def clean(self) -> None:
        """Refuse a term that matches nothing, or one already blocked in the same language as written."""
        normal = term_normalise(self.term)
        if not normal:
            raise ValidationError({"term": "The term needs at least one visible character."})
        self.term = self.term.strip()
        same = BlockedTerm.objects.filter(locale=self.locale).exclude(pk=self.pk)
        if any(term_normalise(other) == normal for other in same.values_list("term", flat=True)):
            raise ValidationError({"term": "This term is already blocked in this language."})


class SafetySettings(models.Model):
    """What a blocked reply says instead, and the disclaimer after the model's answers (one row, pk 1)."""

    replacement_en = models.TextField(
        "replacement sentence (English)",
        default=DEFAULT_REPLACEMENTS["en"],
        help_text="What the customer reads instead of a reply that was stopped for a blocked term.",
    )
    replacement_zh_hans = models.TextField(
        "replacement sentence (简体中文)", default=DEFAULT_REPLACEMENTS["zh-Hans"]
    )
    disclaimer_enabled = models.BooleanField(
        "add the disclaimer",
        default=False,
        help_text=(
            "Add the disclaimer, as a paragraph of its own, after every answer the model wrote (not after "
            "FAQ answers, agents' messages or the replacement sentence)."
        ),
    )
    disclaimer_en = models.TextField("disclaimer (English)", blank=True, default=DEFAULT_DISCLAIMERS["en"])
    disclaimer_zh_hans = models.TextField(
        "disclaimer (简体中文)", blank=True, default=DEFAULT_DISCLAIMERS["zh-Hans"]
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "safety settings"
        verbose_name_plural = "safety settings"
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="safety_settings_single_row")]

    def __str__(self) -> str:
        return "Safety settings"

    def save(self, *args: object, **kwargs: object) -> None:
        # One row: whatever admin or code saves is the settings.
        self.pk = 1
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def current(cls) -> SafetySettings:
        """The saved settings, or the defaults (unsaved) when nobody has saved any."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)

    def replacement_for(self, locale: str) -> str:
        """The replacement sentence in `locale` (English for any other), its default when left blank."""
        key = "zh-Hans" if locale == "zh-Hans" else "en"
        sentence = self.replacement_zh_hans if key == "zh-Hans" else self.replacement_en
        return sentence.strip() or DEFAULT_REPLACEMENTS[key]

    def disclaimer_for(self, locale: str) -> str:
        """The disclaimer in `locale` ("" when switched off or left blank for that language)."""
        if not self.disclaimer_enabled:
            return ""
        return (self.disclaimer_zh_hans if locale == "zh-Hans" else self.disclaimer_en).strip()
