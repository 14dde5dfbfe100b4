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
