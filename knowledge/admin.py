from django.contrib import admin
from django.db import models

from knowledge.models import Article, FaqEntry


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ("title", "locale", "is_published", "updated_at")
    # A link typed without a scheme is https (Django 6.0's default, taken now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_filter = ("locale", "is_published")
    search_fields = ("title", "body")


@admin.register(FaqEntry)
class FaqEntryAdmin(admin.ModelAdmin):
    list_display = ("question", "locale", "is_quick_entry", "position", "is_published", "updated_at")
    list_filter = ("locale", "is_quick_entry", "is_published")
    list_editable = ("is_quick_entry", "position", "is_published")
    search_fields = ("question", "answer")
