from django.contrib import admin

from knowledge.models import Article, FaqEntry


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ("title", "slug", "locale", "status", "updated_at")
    list_filter = ("locale", "status")
    search_fields = ("title", "body")


@admin.register(FaqEntry)
class FaqEntryAdmin(admin.ModelAdmin):
    list_display = ("question", "locale", "is_quick_entry", "position", "is_published", "updated_at")
    list_filter = ("locale", "is_quick_entry", "is_published")
    list_editable = ("is_quick_entry", "position", "is_published")
    search_fields = ("question", "answer")
