"""The gateway's kept requests in admin: read-only, for superusers only.

A request's row is evidence of what a key did (and what it is billed against its monthly quota), so
nobody adds, edits or deletes one here; like the keys themselves (access/admin.py), only superusers see
them, and cs_platform/roles.py grants no group a permission on them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from access import keys
from cs_platform.admin_access import SuperuserReadOnlyAdmin
from gateway.models import ApiRequest


class ErrorCodeFilter(admin.SimpleListFilter):
    """The error codes kept so far, with "none" for the requests that had none (an empty link otherwise)."""

    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        codes = ApiRequest.objects.order_by("error_code").values_list("error_code", flat=True).distinct()
        return [(code or "-", code or "none") for code in codes]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiRequest]) -> QuerySet[ApiRequest]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(error_code="" if value == "-" else value)


@admin.register(ApiRequest)
class ApiRequestAdmin(SuperuserReadOnlyAdmin):
    """Every call of /v1/chat/completions with a valid key: who, which model, how long, how many tokens."""

    list_display = (
        "created_at",
        "key_display",
        "client_ip",
        "model",
        "served_model",
        "mode",
        "stream",
        "status_code",
        "error_code",
        "first_token_ms",
        "duration_ms",
        "prompt_tokens",
        "completion_tokens",
        "client_disconnected",
        "conversation_link",
    )
    list_display_links = ("created_at",)
    list_filter = ("status_code", "mode", "stream", ErrorCodeFilter, "client_disconnected", "api_key")
    # The key's name and prefix too: a prefix is what the logs and `manage.py api_key list` show.
    search_fields = ("request_id", "client_ip", "model", "api_key__prefix", "api_key__name")
    date_hierarchy = "created_at"
    list_select_related = ("api_key", "conversation")
    fields = (
        "created_at",
        "api_key",
        "client_ip",
        "request_id",
        "model",
        "served_model",
        "mode",
        "stream",
        "status_code",
        "error_code",
        "first_token_ms",
        "duration_ms",
        "prompt_tokens",
        "completion_tokens",
        "client_disconnected",
        "conversation",
    )

    @admin.display(description="key", ordering="api_key__name")
    def key_display(self, obj: ApiRequest) -> str:
        if obj.api_key is None:
            # The key was deleted: its requests are kept (SET_NULL) for the totals.
            return "(deleted key)"
        return f"{obj.api_key.name} ({keys.KEY_START}{obj.api_key.prefix}_…)"

    @admin.display(description="conversation")
    def conversation_link(self, obj: ApiRequest) -> str:
        if obj.conversation_id is None:
            return "-"
        url = reverse("admin:conversations_conversation_change", args=[obj.conversation_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.conversation_id)[:8])

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ApiRequest], search_term: str
    ) -> tuple[QuerySet[ApiRequest], bool]:
        # A key pasted whole, or as lists and logs show it (csk_<prefix>_…), is found by its prefix.
        if search_term.strip().startswith(keys.KEY_START):
            search_term = search_term.strip().removeprefix(keys.KEY_START).split("_", 1)[0]
        return super().get_search_results(request, queryset, search_term)
