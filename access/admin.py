"""IP rules and API keys in admin, for superusers only.

cs_platform/roles.py grants no group any permission on IpRule or ApiKey, and this admin also answers no
to every non-superuser, so that a permission given to one person by hand does not open it either:
whoever may edit the rules may lock everyone else out of admin, or open it to the internet, and whoever
may issue keys opens the assistant to another system.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet, Sum
from django.forms import ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from access import keys
from access.models import ApiKey, IpRule
from cs_platform.admin_access import SuperuserOnlyAdmin

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts, _FieldsetSpec


@admin.register(IpRule)
class IpRuleAdmin(SuperuserOnlyAdmin):
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


def _model_choices(current: list[str]) -> list[tuple[str, str]]:
    """The models a key may be allowed: the assistant, the inference server's model when it is named, and
    whatever the key holds already (a name configured once), so that saving the form keeps it."""
    assistant = settings.GATEWAY_ASSISTANT_MODEL
    choices = {
        assistant: f"{assistant}: the grounded assistant (the widget's profile, knowledge base, citations, "
        "blocked terms and disclaimer)"
    }
    if settings.INFERENCE_MODEL:
        choices.setdefault(
            settings.INFERENCE_MODEL,
            f"{settings.INFERENCE_MODEL}: the inference server's model, a plain proxy to it",
        )
    for name in current:
        choices.setdefault(name, f"{name} (allowed on this key before; not configured now)")
    return list(choices.items())


class ApiKeyForm(forms.ModelForm):
    allowed_models = forms.MultipleChoiceField(
        label="Allowed models",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The model names the key may ask for in /v1/.",
    )
    # Only when INFERENCE_MODEL is empty: the server's model then has a name only the server knows.
    other_model = forms.CharField(
        label="The inference server's model",
        required=False,
        max_length=200,
        help_text="INFERENCE_MODEL is not set: to let the key call the model directly (a plain proxy), write "
        "the name the inference server reports in its /v1/models. Empty: none.",
    )

    class Meta:
        model = ApiKey
        fields = (
            "name",
            "owner",
            "note",
            "allowed_models",
            "keeps_conversations",
            "fetches_image_urls",
            "requests_per_minute",
            "tokens_per_minute",
            "monthly_tokens",
            "expires_at",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "allowed_models" in self.fields:
            current = list(self.instance.allowed_models or [])
            self.fields["allowed_models"].choices = _model_choices(current)  # type: ignore[attr-defined]
            # A new instance gives the form no initial data: the model's default (the assistant) is here.
            self.fields["allowed_models"].initial = current
        if settings.INFERENCE_MODEL:
            self.fields.pop("other_model", None)

    def _limit(self, field: str) -> int | None:
        value: int | None = self.cleaned_data.get(field)
        if value == 0:
            raise ValidationError("0 would refuse every request: leave it empty for no limit.", code="zero")
        return value

    def clean_requests_per_minute(self) -> int | None:
        return self._limit("requests_per_minute")

    def clean_tokens_per_minute(self) -> int | None:
        return self._limit("tokens_per_minute")

    def clean_monthly_tokens(self) -> int | None:
        return self._limit("monthly_tokens")

    def clean_expires_at(self) -> datetime | None:
        expires_at: datetime | None = self.cleaned_data.get("expires_at")
        changed = self.instance.pk is None or "expires_at" in self.changed_data
        if expires_at is not None and changed and expires_at <= timezone.now():
            raise ValidationError("That moment has passed: the key would never work.", code="past")
        return expires_at

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or self.cleaned_data
        if "allowed_models" in self.fields:
            names = [*cleaned.get("allowed_models", []), cleaned.get("other_model", "").strip()]
            cleaned["allowed_models"] = [name for name in dict.fromkeys(names) if name]
            if not cleaned["allowed_models"] and "allowed_models" not in self.errors:
                self.add_error(
                    "allowed_models", "Allow at least one model: a key that may call none opens nothing."
                )
        return cleaned


_KEY_RECORD_FIELDS = (
    "key_display",
    "state",
    "usage_this_month",
    "last_used_at",
    "revoked_at",
    "created_at",
    "created_by",
)


class ApiKeyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True
            )
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(SuperuserOnlyAdmin):
    """Superusers only, like the IP rules: a key opens the assistant, and maybe the model, to another system.

    The key is shown once, in a message after the add form, and never again: only a hash of its secret
    is kept. A revoked key is read-only (it cannot be brought back; issue a new one).
    """

    form = ApiKeyForm
    list_display = (
        "name",
        "owner",
        "key_display",
        "models_display",
        "requests_per_minute",
        "tokens_per_minute",
        "monthly_tokens",
        "expires_at",
        "last_used_at",
        "state",
    )
    list_display_links = ("name",)
    list_filter = (ApiKeyStateFilter, "keeps_conversations", "fetches_image_urls")
    search_fields = ("name", "owner", "prefix", "note")
    actions = ("revoke_selected",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).select_related("created_by")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> _FieldsetSpec:
        models: tuple[str, ...] = ("allowed_models",)
        if not settings.INFERENCE_MODEL and (obj is None or obj.revoked_at is None):
            models += ("other_model",)
        # The key's record exists once it is issued: on the add form there is none to show.
        record: tuple[tuple[str | None, _FieldOpts], ...] = (
            () if obj is None else (("Key", {"fields": _KEY_RECORD_FIELDS}),)
        )
        return (
            (None, {"fields": ("name", "owner", "note")}),
            ("What it may do", {"fields": (*models, "keeps_conversations", "fetches_image_urls")}),
            (
                "Limits",
                {"fields": ("requests_per_minute", "tokens_per_minute", "monthly_tokens", "expires_at")},
            ),
            *record,
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else _KEY_RECORD_FIELDS

    @admin.display(description="key")
    def key_display(self, obj: ApiKey) -> str:
        return f"{keys.KEY_START}{obj.prefix}_…"

    @admin.display(description="usage this month")
    def usage_this_month(self, obj: ApiKey) -> str:
        # What gateway.limits.month_tokens_used counts against the quota (its sync twin), and the rows.
        month_start = timezone.localtime().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        totals = obj.requests.filter(created_at__gte=month_start).aggregate(
            requests=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
        )
        used = int(totals["prompt"] or 0) + int(totals["completion"] or 0)
        quota = "" if obj.monthly_tokens is None else f" of its monthly quota of {obj.monthly_tokens:,}"
        url = reverse("admin:gateway_apirequest_changelist")
        return format_html(
            '{} tokens{} in {} request(s) since {} · <a href="{}?api_key__id__exact={}">all its requests</a>',
            f"{used:,}",
            quota,
            totals["requests"],
            f"{month_start:%Y-%m-%d}",
            url,
            obj.pk,
        )

    @admin.display(description="allowed models")
    def models_display(self, obj: ApiKey) -> str:
        return ", ".join(obj.allowed_models or [])

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        if obj.expires_at is not None and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ApiKey], search_term: str
    ) -> tuple[QuerySet[ApiKey], bool]:
        # A key pasted whole, or as list and logs show it (csk_<prefix>_…), is found by its prefix.
        if search_term.strip().startswith(keys.KEY_START):
            search_term = search_term.strip().removeprefix(keys.KEY_START).split("_", 1)[0]
        return super().get_search_results(request, queryset, search_term)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm[ApiKey], change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        obj.created_by = request.user  # type: ignore[assignment]
        issued = keys.secret_assign(obj)
        # Shown this once: the message is the only place the whole key ever is.
        messages.warning(
            request,
            format_html(
                "Copy the new key now: it is not shown again (only a hash of it is kept). "
                '<code style="user-select: all; white-space: nowrap">{}</code>',
                issued.key,
            ),
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        key_ids = list(queryset.values_list("pk", flat=True))
        revoked = keys.api_keys_revoke(key_ids=key_ids)
        text = f"Revoked {revoked} API key{'' if revoked == 1 else 's'}: requests with them are refused now."
        if len(key_ids) > revoked:
            text += f" {len(key_ids) - revoked} of those selected had been revoked already."
        self.message_user(request, text, messages.SUCCESS)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A revoked key is kept as it was: what it was allowed is part of the record.
        return super().has_change_permission(request, obj) and (obj is None or obj.revoked_at is None)
