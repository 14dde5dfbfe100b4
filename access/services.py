"""Writing IP rules: the one place the command (and any other code) adds, switches and removes them.

Admin saves through its model form, which runs the same validation (IpRule.clean_fields); both end in
a save or delete that clears this process's rule cache (access/signals.py).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from access.models import IpRule
from access.networks import CIDR_HELP


class IpRuleError(Exception):
    """A rule that cannot be written, with a sentence for the operator."""


def _scope_read(scope: str) -> str:
    value = scope.strip().lower()
    if value not in IpRule.Scope.values:
        raise IpRuleError(f"Unknown scope {scope!r}: choose one of {', '.join(IpRule.Scope.values)}.")
    return value


def ip_rule_create(
    *, scope: str, cidr: str, action: str = IpRule.Action.ALLOW, note: str = "", created_by: Any = None
) -> IpRule:
    """Add an enabled rule; the network is validated and stored normalised (a bare address as /32, /128)."""
    if not cidr.strip():
        raise IpRuleError(f"Write {CIDR_HELP}.")
    rule = IpRule(
        scope=_scope_read(scope), cidr=cidr, action=action, note=note.strip(), created_by=created_by
    )
    try:
        rule.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        raise IpRuleError(" ".join(_messages(error))) from None
    existing = IpRule.objects.filter(scope=rule.scope, cidr=rule.cidr, action=rule.action).first()
    if existing is not None:
        hint = "" if existing.enabled else f" (disabled: `manage.py ip_rule enable {existing.pk}`)"
        raise IpRuleError(f"Rule {existing.pk} already says this: {existing}{hint}.")
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        # The same rule added at the same moment elsewhere (the unique constraint).
        raise IpRuleError(f"That rule was just added elsewhere: {rule}.") from None
    return rule


def _messages(error: ValidationError) -> list[str]:
    if hasattr(error, "error_dict"):
        # The network's message names what was typed; any other field's is prefixed with its name.
        return [
            message if name == "cidr" else f"{name}: {message}"
            for name, errors in error.message_dict.items()
            for message in errors
        ]
    return list(error.messages)


def ip_rule_get(*, rule_id: int) -> IpRule:
    try:
        return IpRule.objects.get(pk=rule_id)
    except IpRule.DoesNotExist:
        raise IpRuleError(f"There is no IP rule {rule_id} (`manage.py ip_rule list` shows them).") from None


def ip_rule_set_enabled(*, rule_id: int, enabled: bool) -> IpRule:
    """Switch a rule on or off; it is kept either way."""
    rule = ip_rule_get(rule_id=rule_id)
    if rule.enabled != enabled:
        rule.enabled = enabled
        rule.save(update_fields=["enabled", "updated_at"])
    return rule


def ip_rule_delete(*, rule_id: int) -> IpRule:
    """Remove a rule; returns it (its pk cleared by the delete) so that the caller can say which."""
    rule = ip_rule_get(rule_id=rule_id)
    rule.delete()
    return rule
