"""The assistant's profile: who it is and how it answers."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from conversations.models import Conversation


def every_locale() -> list[str]:
    """Every conversation language: by default the model writes the answer in all of them."""
    return [locale.value for locale in Conversation.Locale]


def locales_validate(value: object) -> None:
    """A list of conversation languages, each known (zh-Hans, en)."""
    known = set(every_locale())
    if not isinstance(value, list) or not all(
        isinstance(locale, str) and locale in known for locale in value
    ):
        raise ValidationError(
            f"Give a list of conversation languages, each one of {', '.join(sorted(known))}."
        )


class AssistantProfile(models.Model):
    class LanguagePolicy(models.TextChoices):
        MATCH_CUSTOMER = "match_customer", "Answer in the customer's language"
        CONVERSATION_LOCALE = "conversation_locale", "Answer in the conversation's widget language"
        ALWAYS_ZH_HANS = "always_zh_hans", "Always answer in Simplified Chinese"
        ALWAYS_EN = "always_en", "Always answer in English"

    name = models.CharField(max_length=100, default="Support assistant")
    system_instructions = models.TextField(
        help_text="What the assistant is told before every conversation: its role, tone and limits."
    )
    language_policy = models.CharField(
        max_length=32, choices=LanguagePolicy.choices, default=LanguagePolicy.MATCH_CUSTOMER
    )
    temperature = models.FloatField(default=0.3, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    max_tokens = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(16), MaxValueValidator(8192)]
    )
    # Quote mode for the other languages: a model too small to write a language well (the embedded
    # SmolLM2-135M and Chinese) shows the best knowledge-base passage as the answer, with its citation.
    model_answer_locales = models.JSONField(
        default=every_locale,
        blank=True,
        validators=[locales_validate],
        help_text=(
            "Conversation languages in which the model writes the answer from the knowledge base. In the "
            "others the best matching passage is the answer, quoted with its citation, and no model is "
            "called."
        ),
    )
    is_active = models.BooleanField(default=False, help_text="The one profile the assistant uses now.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_active", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="one_active_profile"
            ),
            models.CheckConstraint(
                condition=Q(temperature__gte=0, temperature__lte=2), name="profile_temperature_0_to_2"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}{' (active)' if self.is_active else ''}"

    def model_answers(self, locale: str) -> bool:
        """Whether the model writes the answer in a conversation in `locale` (else quote mode)."""
        return locale in self.model_answer_locales
