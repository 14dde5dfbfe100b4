from django.contrib import admin

from inference.models import AssistantProfile


@admin.register(AssistantProfile)
class AssistantProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "language_policy", "temperature", "max_tokens", "updated_at")
    list_filter = ("is_active", "language_policy")
    search_fields = ("name", "system_instructions")
