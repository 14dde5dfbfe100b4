"""Admin for handoff settings (one row), opening hours, holidays, canned replies and agents' presence."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from agents.models import AgentPresence, CannedReply, HandoffSettings, Holiday, WeeklyHours
from conversations import handoff_rules


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
        ("Auto-assignment", {"fields": ("auto_assign_enabled", "max_conversations_per_agent")}),
    )
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not HandoffSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Refused before the redirect, as Django's own changelist would be.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if HandoffSettings.objects.filter(pk=1).exists():
            return HttpResponseRedirect(reverse("admin:agents_handoffsettings_change", args=[1]))
        return HttpResponseRedirect(reverse("admin:agents_handoffsettings_add"))

    def save_model(self, request: HttpRequest, obj: HandoffSettings, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # Switched on, or the cap raised: conversations already waiting are given out now, not when
        # the next one arrives or an agent next comes online.
        if obj.auto_assign_enabled and (
            not change or {"auto_assign_enabled", "max_conversations_per_agent"} & set(form.changed_data)
        ):
            handoff_rules.auto_assign_request_on_commit()

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


@admin.register(CannedReply)
class CannedReplyAdmin(admin.ModelAdmin):
    """Replies agents insert with /shortcode; a blank language fits every conversation."""

    list_display = ("shortcode", "locale", "title", "is_active", "updated_at")
    list_filter = ("locale", "is_active")
    search_fields = ("shortcode", "title", "text")
    ordering = ("shortcode", "locale")
    fields = ("shortcode", "locale", "title", "text", "is_active")


@admin.register(AgentPresence)
class AgentPresenceAdmin(admin.ModelAdmin):
    """Who has the console open and takes auto-assigned conversations: written by the socket only."""

    list_display = ("user", "accepting", "online_until", "updated_at")
    list_filter = ("accepting",)
    search_fields = ("user__username", "user__first_name", "user__last_name")
    list_select_related = ("user",)
    readonly_fields = ("user", "accepting", "online_until", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
