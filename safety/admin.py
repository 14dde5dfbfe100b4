"""Admin for blocked terms and the safety settings (one row); supervisors edit both (cs_platform/roles.py)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from safety.models import BlockedTerm, SafetySettings
from safety.policy import policy_forget


@admin.register(BlockedTerm)
class BlockedTermAdmin(admin.ModelAdmin):
    """The terms, per language; switching one off keeps it (and its note) for later."""

    list_display = ("term", "locale", "enabled", "note", "updated_at")
    list_editable = ("enabled",)
    list_filter = ("locale", "enabled")
    search_fields = ("term", "note")
    fields = ("term", "locale", "enabled", "note", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")
    actions = ("enable_terms", "disable_terms")

    @admin.action(description="Switch the selected terms on", permissions=["change"])
    def enable_terms(self, request: HttpRequest, queryset: QuerySet[BlockedTerm]) -> None:
        self._switch(request, queryset, enabled=True)

    @admin.action(description="Switch the selected terms off", permissions=["change"])
    def disable_terms(self, request: HttpRequest, queryset: QuerySet[BlockedTerm]) -> None:
        self._switch(request, queryset, enabled=False)

    def _switch(self, request: HttpRequest, queryset: QuerySet[BlockedTerm], *, enabled: bool) -> None:
        changed = queryset.exclude(enabled=enabled).update(enabled=enabled)
        # update() sends no save signal: forget the cache here as a save would.
        policy_forget()
        self.message_user(
            request, f"{changed} term(s) switched {'on' if enabled else 'off'}.", messages.SUCCESS
        )


@admin.register(SafetySettings)
class SafetySettingsAdmin(admin.ModelAdmin):
    """One row (pk 1): the list opens its change form, or the add form while there is none."""

    fieldsets = (
        ("Blocked reply", {"fields": ("replacement_en", "replacement_zh_hans")}),
        ("Disclaimer", {"fields": ("disclaimer_enabled", "disclaimer_en", "disclaimer_zh_hans")}),
        (None, {"fields": ("updated_at",)}),
    )
    readonly_fields = ("updated_at",)
    # A sentence each: no need for a page-high box.
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 2, "cols": 80})}}

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # One row: there is no other to add.
        context = {**(extra_context or {}), "show_save_and_add_another": False}
        return super().changeform_view(request, object_id, form_url, context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Saving the defaults for the first time is a change of the settings, not a new object.
        allowed = super().has_add_permission(request) or self.has_change_permission(request)
        return allowed and not SafetySettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Refused before the redirect, as Django's own changelist would be.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if SafetySettings.objects.filter(pk=1).exists():
            return HttpResponseRedirect(reverse("admin:safety_safetysettings_change", args=[1]))
        if self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:safety_safetysettings_add"))
        # A reader (a manager) with nothing saved yet sees the defaults on an empty list.
        return super().changelist_view(request, extra_context)

    def response_post_save_change(self, request: HttpRequest, obj: SafetySettings) -> HttpResponseRedirect:
        # The changelist would only come back here: stay on the form, with Django's "changed" message.
        return HttpResponseRedirect(reverse("admin:safety_safetysettings_change", args=[obj.pk]))

    def response_post_save_add(self, request: HttpRequest, obj: SafetySettings) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:safety_safetysettings_change", args=[obj.pk]))
