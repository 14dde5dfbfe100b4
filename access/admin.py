"""IP rules in admin, for superusers only.

cs_platform/roles.py grants no group any permission on IpRule, and this admin also answers no to every
non-superuser, so that a permission given to one person by hand does not open it either: whoever may
edit the rules may lock everyone else out of admin, or open it to the internet.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from access.models import IpRule


def _superuser(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_superuser)


@admin.register(IpRule)
class IpRuleAdmin(admin.ModelAdmin):
    list_display = ("cidr", "scope", "action", "enabled", "note", "updated_at", "created_by")
    list_display_links = ("cidr",)
    # The on/off switch, right in the list: a rule is switched off and on again more often than edited.
    list_editable = ("enabled",)
    list_filter = ("scope", "action", "enabled")
    search_fields = ("cidr", "note")
    readonly_fields = ("created_at", "updated_at", "created_by")
    fields = ("scope", "action", "cidr", "note", "enabled", "created_at", "updated_at", "created_by")

    def get_queryset(self, request: HttpRequest) -> QuerySet[IpRule]:
        return super().get_queryset(request).select_related("created_by")

    def save_model(self, request: HttpRequest, obj: IpRule, form: ModelForm[IpRule], change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _superuser(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _superuser(request)
