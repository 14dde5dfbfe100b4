"""The company's knowledge: articles and frequently asked questions."""

from __future__ import annotations

from django.db import models


class Locale(models.TextChoices):
    ZH_HANS = "zh-Hans", "简体中文"
    EN = "en", "English"


class Article(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(help_text="Markdown.")
    locale = models.CharField(max_length=8, choices=Locale.choices, default=Locale.EN)
    url = models.URLField(blank=True, help_text="Where customers can read it, if published.")
    is_published = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class FaqEntry(models.Model):
    question = models.CharField(max_length=200)
    answer = models.TextField(help_text="Markdown.")
    locale = models.CharField(max_length=8, choices=Locale.choices, default=Locale.EN)
    is_quick_entry = models.BooleanField(
        default=False, help_text="Shown beside the chat as a question the customer can ask in one click."
    )
    position = models.PositiveSmallIntegerField(default=0)
    is_published = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "question"]
        verbose_name = "FAQ entry"
        verbose_name_plural = "FAQ entries"

    def __str__(self) -> str:
        return self.question
