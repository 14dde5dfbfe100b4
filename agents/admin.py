"""Admin for handoff settings (one row), the weekly opening hours and the holidays."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from agents.models import HandoffSettings, Holiday, WeeklyHours


@admin.register(HandoffSettings)
class HandoffSettingsAdmin(admin.ModelAdmin):
    """One row (pk 1): the list opens its change form, or the add form while there is none."""

    fieldsets = (
        (
            "Triggers",
            {
                "fields": (
                    "phrase_trigger_enabled",
                    "model_tool_trigger_enabled",
                    ("knowledge_miss_trigger_enabled", "knowledge_miss_turns"),
                    ("thumbs_down_trigger_enabled", "thumbs_down_in_a_row"),
                )
            },
        ),
        ("Team", {"fields": ("time_zone", "expected_handle_minutes", "updated_at")}),
    )
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not HandoffSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if HandoffSettings.objects.filter(pk=1).exists():
            return HttpResponseRedirect(reverse("admin:agents_handoffsettings_change", args=[1]))
        return HttpResponseRedirect(reverse("admin:agents_handoffsettings_add"))

    def response_post_save_change(self, request: HttpRequest, obj: HandoffSettings) -> HttpResponseRedirect:
        # The changelist would only come back here: stay on the form, with Django's "changed" message.
        return HttpResponseRedirect(reverse("admin:agents_handoffsettings_change", args=[obj.pk]))

    def response_post_save_add(self, request: HttpRequest, obj: HandoffSettings) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:agents_handoffsettings_change", args=[obj.pk]))


@admin.register(WeeklyHours)
class WeeklyHoursAdmin(admin.ModelAdmin):
    """Opening ranges; none at all means the team is always open."""

    list_display = ("weekday", "opens", "closes")
    list_editable = ("opens", "closes")
    list_filter = ("weekday",)
    ordering = ("weekday", "opens")


@admin.register(Holiday)
class HolidayAdmin(admin.ModelAdmin):
    """Dates the team is closed all day, whatever the weekly hours say."""

    list_display = ("date", "name")
    search_fields = ("name",)
    date_hierarchy = "date"
    ordering = ("-date",)
