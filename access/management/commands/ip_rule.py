"""`manage.py ip_rule add|list|remove|enable|disable`: the IP rules, scriptable (DESIGN.md, Access).

A change reaches every running server within IP_RULES_CACHE_SECONDS (they read the rules again that
often); nothing needs restarting.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from access import services
from access.models import IpRule


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


class Command(BaseCommand):
    help = (
        "Manage the IP rules of the scopes widget, api, staff and metrics. A matching deny rule refuses; "
        "a scope with any allow rule admits only matching addresses; with no rules the widget and the "
        "api are open, and staff admits loopback and private addresses only (metrics: METRICS_ALLOWED_IPS "
        "or METRICS_TOKEN)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="{add,list,remove,enable,disable}"
        )

        add: ArgumentParser = actions.add_parser("add", help="Add an enabled rule.")
        add.add_argument("--scope", required=True, help=f"One of {', '.join(IpRule.Scope.values)}.")
        add.add_argument(
            "--cidr",
            required=True,
            help="An address (a /32 or /128) or a network: 10.0.0.0/8, 2001:db8::/32.",
        )
        kind = add.add_mutually_exclusive_group()
        kind.add_argument("--deny", action="store_true", help="Refuse the addresses (default: allow them).")
        kind.add_argument("--allow", action="store_true", help="Admit the addresses (the default).")
        add.add_argument("--note", default="", help="Why the rule exists.")

        listing = actions.add_parser("list", help="Print the rules as a table.")
        listing.add_argument("--scope", help="Only this scope's rules.")

        for name, text in (
            ("remove", "Remove a rule."),
            ("enable", "Switch a rule on."),
            ("disable", "Switch a rule off (it is kept)."),
        ):
            sub = actions.add_parser(name, help=text)
            sub.add_argument("id", type=int, help="The rule's id, as `ip_rule list` shows it.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except services.IpRuleError as error:
            raise CommandError(str(error)) from None

    def _propagation(self) -> str:
        return f"Running servers apply it within {settings.IP_RULES_CACHE_SECONDS:g} seconds."

    def _add(self, options: dict[str, Any]) -> None:
        rule = services.ip_rule_create(
            scope=options["scope"],
            cidr=options["cidr"],
            action=IpRule.Action.DENY if options["deny"] else IpRule.Action.ALLOW,
            note=options["note"],
        )
        self.stdout.write(
            f"Added IP rule {rule.pk}: {rule.action} {rule.cidr} on {rule.scope}. {self._propagation()}"
        )

    def _list(self, options: dict[str, Any]) -> None:
        rules = IpRule.objects.order_by("scope", "id")
        if options["scope"]:
            scope = options["scope"].strip().lower()
            if scope not in IpRule.Scope.values:
                raise CommandError(
                    f"Unknown scope {options['scope']!r}: choose one of {', '.join(IpRule.Scope.values)}."
                )
            rules = rules.filter(scope=scope)
        rows = [["ID", "SCOPE", "ACTION", "CIDR", "ENABLED", "NOTE"]]
        rows += [
            [str(rule.pk), rule.scope, rule.action, rule.cidr, "yes" if rule.enabled else "no", rule.note]
            for rule in rules
        ]
        if len(rows) == 1:
            self.stdout.write(
                "No IP rules: the widget and the api are open, staff admits loopback and private addresses, "
                "metrics METRICS_ALLOWED_IPS or METRICS_TOKEN."
            )
            return
        self.stdout.write(_table(rows))

    def _remove(self, options: dict[str, Any]) -> None:
        rule = services.ip_rule_delete(rule_id=options["id"])
        self.stdout.write(f"Removed IP rule {options['id']}: {rule}. {self._propagation()}")

    def _enable(self, options: dict[str, Any]) -> None:
        rule = services.ip_rule_set_enabled(rule_id=options["id"], enabled=True)
        self.stdout.write(f"Enabled IP rule {rule.pk}: {rule}. {self._propagation()}")

    def _disable(self, options: dict[str, Any]) -> None:
        rule = services.ip_rule_set_enabled(rule_id=options["id"], enabled=False)
        self.stdout.write(f"Disabled IP rule {rule.pk}: {rule}. {self._propagation()}")
