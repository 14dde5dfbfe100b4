"""IP rules: which client addresses may reach each part of the platform (DESIGN.md, Access)."""

from __future__ import annotations

from collections.abc import Collection

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from access.networks import network_parse


def cidr_validate(value: str) -> None:
    """Model field validator: `value` must name an IP address or network."""
    try:
        network_parse(value)
    except ValueError as error:
        raise ValidationError(str(error), code="invalid_cidr") from None


class IpRule(models.Model):
    """One address or network allowed into, or denied from, one scope.

    How rules combine (access/rules.py): an enabled deny rule that matches refuses; a scope with any
    enabled allow rule admits only the addresses those match; a scope with none keeps its default.
    Managed by superusers only (admin and `manage.py ip_rule`); no staff role holds a permission on it.
    """

    class Scope(models.TextChoices):
        WIDGET = "widget", "Widget (chat page, widget API and socket, knowledge pages)"
        API = "api", "API gateway (/v1/)"
        STAFF = "staff", "Staff (admin, agent console, reports)"
        METRICS = "metrics", "Metrics (/metrics)"

    class Action(models.TextChoices):
        ALLOW = "allow", "Allow"
        DENY = "deny", "Deny"

    scope = models.CharField(max_length=16, choices=Scope.choices)
    cidr = models.CharField(
        "address or network",
        max_length=64,
        validators=[cidr_validate],
        help_text="An address (203.0.113.7, 2001:db8::7) or a network in CIDR form (10.0.0.0/8, "
        "2001:db8::/32). Saved normalised: a bare address as /32 or /128.",
    )
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.ALLOW)
    note = models.CharField(
        max_length=200, blank=True, help_text="Why the rule exists, for whoever reads it next."
    )
    enabled = models.BooleanField(default=True, help_text="Switched off, the rule is kept but not applied.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "IP rule"
        ordering = ("scope", "action", "cidr")
        constraints = [
            # The same rule twice says nothing more and makes removing it a puzzle.
            models.UniqueConstraint(fields=("scope", "cidr", "action"), name="access_iprule_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.cidr} ({self.scope})"

    def clean_fields(self, exclude: Collection[str] | None = None) -> None:
        """Validate, then store the network in its one normal form, so that equal rules compare equal."""
        super().clean_fields(exclude=exclude)
        if not exclude or "cidr" not in exclude:
            self.cidr = str(network_parse(self.cidr))


def assistant_model_only() -> list[str]:
    """A new key's allowed models: the assistant (GATEWAY_ASSISTANT_MODEL), not the raw model."""
    return [settings.GATEWAY_ASSISTANT_MODEL]


class ApiKey(models.Model):
    """A key another system calls the OpenAI-compatible gateway (/v1/) with.

    The key is `csk_<prefix>_<secret>`: the prefix is public and finds the row, and only a SHA-256 of
    the secret is kept, compared in constant time. The secret is random (240 bits), so a fast hash is
    as safe as a slow one and costs nothing per request. It is shown once, when the key is issued.
    Managed by superusers only, like the IP rules: a key opens the assistant to another system.
    """

    name = models.CharField(max_length=100, help_text="What calls with it, e.g. “CRM ticket sidebar”.")
    owner = models.CharField(
        max_length=200, blank=True, help_text="Who answers for it: a team, a person, an e-mail address."
    )
    note = models.TextField(blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_sha256 = models.CharField(max_length=64, editable=False)
    allowed_models = models.JSONField(
        default=assistant_model_only,
        blank=True,
        help_text="The model names the key may ask for: the assistant (grounded like the widget) and, "
        "for a plain proxy to the model, the inference server's model.",
    )
    keeps_conversations = models.BooleanField(
        default=False,
        help_text="Keep each request and its answer as a conversation (channel API), visible in admin.",
    )
    fetches_image_urls = models.BooleanField(
        default=False,
        help_text="Let requests name images by http(s) URL, fetched by the platform (size, type and time "
        "limits; never internal addresses). Without it only data: URLs are taken.",
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, default=60, help_text="Empty: no limit."
    )
    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Prompt and completion tokens together. Empty: no limit."
    )
    monthly_tokens = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Tokens per calendar month (TIME_ZONE) before requests are refused. Empty: no quota.",
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "API key"
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name} (csk_{self.prefix}_…)"
