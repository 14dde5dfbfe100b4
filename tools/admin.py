"""Business tools in admin, for superusers only; the record of their calls, read-only.

A tool's headers hold the secrets of the company's API: whoever may edit a tool may send them, and
the customers' data the API returns, anywhere the URL points, so this admin answers no to every
non-superuser, like the IP rules and API keys (access/admin.py), and cs_platform/roles.py grants no
group a permission on tools. A saved header value is never sent to the browser again: its input is
empty, "•••• (saved)" beside it, and left empty it keeps the saved value, as a password field would.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from conversations.models import Conversation
from cs_platform.admin_access import SuperuserOnlyAdmin, SuperuserReadOnlyAdmin
from tools.models import Tool, ToolCall, headers_validate

SAVED_MARK = "•••• (saved)"
# Empty rows under the saved headers, for new ones (save and edit again for more).
EXTRA_HEADER_ROWS = 3
MAX_HEADER_ROWS = 50

HeaderRow = tuple[str, str, str]  # (the saved name the row was rendered for, the name, the value typed)


class HeadersWidget(forms.Widget):
    """One row per header, a name input and a password input; a saved value is never rendered."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> list[HeaderRow]:
        rows = []
        for index in range(MAX_HEADER_ROWS):
            name_key = f"{name}_name_{index}"
            if name_key not in data:
                break
            rows.append(
                (
                    data.get(f"{name}_saved_{index}", ""),
                    data.get(name_key, "").strip(),
                    data.get(f"{name}_value_{index}", ""),
                )
            )
        return rows

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return f"{name}_name_0" not in data

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        # The initial value is the saved mapping; a bound form's is the rows sent. Only names are used.
        if isinstance(value, dict):
            # Sorted: PostgreSQL's jsonb keeps the keys in an order of its own.
            rows = [(header, header) for header in sorted(value)]
        elif isinstance(value, list):
            rows = [(saved, header) for saved, header, _typed in value if saved or header]
        else:
            rows = []
        rows += [("", "")] * EXTRA_HEADER_ROWS
        lines = format_html_join(
            "",
            '<div class="tool-header-row" style="margin-bottom: 4px">'
            '<input type="hidden" name="{0}_saved_{1}" value="{2}">'
            '<input type="text" name="{0}_name_{1}" value="{3}" placeholder="Header name" '
            'aria-label="Header name" style="width: 14em"> '
            '<input type="password" name="{0}_value_{1}" value="" autocomplete="new-password" '
            'placeholder="{4}" aria-label="Header value" style="width: 24em"> {5}</div>',
            (
                (name, index, saved, header, SAVED_MARK if saved else "Value", SAVED_MARK if saved else "")
                for index, (saved, header) in enumerate(rows)
            ),
        )
        return format_html('<div id="id_{}">{}</div>', name, lines)


class HeadersField(forms.Field):
    """The headers as rows: a saved header's empty value keeps it; a cleared name removes the header."""

    widget = HeadersWidget

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved: dict[str, str] = {}

    def prepare_value(self, value: Any) -> Any:
        return value

    def to_python(self, value: Any) -> dict[str, str]:
        if isinstance(value, dict):
            return value
        headers: dict[str, str] = {}
        for saved_name, header, typed in value or []:
            if not header:
                if typed:
                    raise ValidationError("A header value without a name: name it, or clear the value.")
                continue  # a cleared name removes the header; a blank row says nothing
            if header.lower() in {existing.lower() for existing in headers}:
                raise ValidationError(f"The header {header} is there twice.")
            if typed:
                headers[header] = typed
            elif saved_name in self.saved:
                headers[header] = self.saved[saved_name]
            else:
                raise ValidationError(f"The header {header} has no value.")
        return headers

    def validate(self, value: Any) -> None:
        super().validate(value)
        headers_validate(value)

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(data) != (initial or {})
        except ValidationError:
            return True


class ToolForm(forms.ModelForm):
    headers = HeadersField(
        required=False,
        help_text="Sent with every call, e.g. Authorization. A saved value is not shown again "
        f"({SAVED_MARK}): leave its input empty to keep it, type a new one to replace it, clear the name "
        "to remove it.",
    )
    parameters = forms.JSONField(
        widget=forms.Textarea(attrs={"rows": 16, "cols": 80, "style": "font-family: monospace"}),
        help_text='A JSON Schema (Draft 2020-12), e.g. {"type": "object", "properties": {"order_id": '
        '{"type": "string", "description": "The order number"}}, "required": ["order_id"]}.',
    )
    channels = forms.MultipleChoiceField(
        choices=Conversation.Channel.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Where the assistant is offered the tool.",
    )

    class Meta:
        model = Tool
        fields = (
            "name",
            "enabled",
            "description_en",
            "description_zh_hans",
            "parameters",
            "method",
            "url",
            "headers",
            "changes_data",
            "needs_verified_customer",
            "timeout_seconds",
            "max_response_bytes",
            "channels",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        headers_field = self.fields["headers"]
        assert isinstance(headers_field, HeadersField)
        headers_field.saved = dict(self.instance.headers or {})


@admin.register(Tool)
class ToolAdmin(SuperuserOnlyAdmin):
    form = ToolForm
    list_display = (
        "name",
        "method",
        "url",
        "changes_data",
        "needs_verified_customer",
        "channels_display",
        "enabled",
        "updated_at",
    )
    list_display_links = ("name",)
    list_filter = ("enabled", "changes_data", "needs_verified_customer", "method")
    search_fields = ("name", "description_en", "description_zh_hans", "url")
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "channels")}),
        ("For the model", {"fields": ("description_en", "description_zh_hans", "parameters")}),
        ("The call", {"fields": ("method", "url", "headers", "timeout_seconds", "max_response_bytes")}),
        ("Safety", {"fields": ("changes_data", "needs_verified_customer")}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="channels")
    def channels_display(self, obj: Tool) -> str:
        return ", ".join(obj.channels or [])


@admin.register(ToolCall)
class ToolCallAdmin(SuperuserReadOnlyAdmin):
    """Every call the assistant made (or proposed): evidence, so nobody adds, edits or deletes one."""

    list_display = (
        "created_at",
        "tool_name",
        "outcome",
        "status_code",
        "duration_ms",
        "conversation_link",
        "call_id",
    )
    list_display_links = ("created_at",)
    list_filter = ("outcome", "tool_name")
    search_fields = ("tool_name", "call_id", "=conversation__id")
    date_hierarchy = "created_at"
    list_select_related = ("conversation",)
    fields = (
        "created_at",
        "conversation_link",
        "reply",
        "tool",
        "tool_name",
        "call_id",
        "arguments_display",
        "outcome",
        "status_code",
        "duration_ms",
        "result",
        "confirmed_by",
        "confirmed_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ToolCall]:
        return super().get_queryset(request).select_related("tool", "reply", "confirmed_by")

    @admin.display(description="conversation")
    def conversation_link(self, obj: ToolCall) -> str:
        url = reverse("admin:conversations_conversation_change", args=[obj.conversation_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.conversation_id)[:8])

    @admin.display(description="arguments (personal data masked)")
    def arguments_display(self, obj: ToolCall) -> str:
        return format_html(
            '<pre style="white-space: pre-wrap">{}</pre>',
            json.dumps(obj.arguments, ensure_ascii=False, indent=2),
        )
