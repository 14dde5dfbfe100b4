"""Which scope a path belongs to, the rules in force (cached per process), and the verdict for an address.

Semantics (DESIGN.md, Access), for one scope:

1. an enabled deny rule that matches the address refuses it, whatever else is written;
2. if the scope has any enabled allow rule, only the addresses those match are admitted (an address
   that cannot be known, None from cs_platform/client_ip.py, is then refused);
3. with no allow rule, the scope's default: the widget and the gateway (api) are open; staff admits
   loopback and the private ranges only (access/networks.py says why link-local is not among them);
   metrics is left to /metrics' own check, METRICS_ALLOWED_IPS or METRICS_TOKEN (cs_platform/metrics.py),
   which is narrower than the private ranges by default (loopback only) and lets a scraper with the
   token in from elsewhere. With metrics allow rules, they replace METRICS_ALLOWED_IPS and the token
   admits no other address; a metrics deny rule refuses even with the token.

Caching. Every process keeps the enabled rules in memory and reads them again at most once every
IP_RULES_CACHE_SECONDS (default 5): a rule added, changed or removed anywhere (admin, `manage.py
ip_rule`, another server) takes effect on every process within that many seconds, and a save or
delete in a process takes effect in that process at once (access/signals.py). There is no Redis in
this: the rules are in the database, so a Redis outage changes nothing.

A failed read (the database unreachable) keeps the rules last read, with a warning in the log, and is
tried again after the same interval. A process that never read them applies the no-rule defaults: the
staff pages and /metrics stay closed to all but loopback and private addresses (/metrics to its
settings), and the widget and the gateway stay open. Refusing every customer because the rules could
not be read would turn a database hiccup at start-up into an outage of the widget, and every widget
and gateway request needs the database anyway (conversations, API keys), so a rule it could not read
protects nothing there that the outage itself does not; the staff side is never opened wider than
its default.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from access.models import IpRule
from access.networks import Address, Network, address_is_private, address_parse, network_parse

logger = logging.getLogger(__name__)

Scope = IpRule.Scope

# Path prefixes of each scope, matched on the decoded path (request.path_info, the websocket scope's
# "path"). A prefix ending in "/" also matches the path without it (/admin, /v1), whose redirect or 404
# then tells nothing. Anything else is in no scope and open: "/" (a redirect to /chat/), /favicon.ico,
# /healthz and /readyz (container health checks), and /static/ (WhiteNoise: the widget's embed script
# and the pages' CSS and JavaScript; public files that hold no data, and refusing them would only
# break the embedding pages of addresses the widget's API refuses anyway).
SCOPE_PREFIXES: tuple[tuple[str, Scope], ...] = (
    ("/chat/", Scope.WIDGET),
    ("/api/widget/", Scope.WIDGET),
    ("/ws/conversations/", Scope.WIDGET),
    # The public knowledge pages: the widget's answers link to them as citations, so whoever may use
    # the widget must be able to open them, and a widget restricted to the company's network keeps
    # its knowledge base there too.
    ("/kb/", Scope.WIDGET),
    ("/v1/", Scope.API),
    ("/admin/", Scope.STAFF),
    ("/agent/", Scope.STAFF),
    ("/api/agent/", Scope.STAFF),
    ("/reports/", Scope.STAFF),
    ("/api/reports/", Scope.STAFF),
    ("/ws/agent/", Scope.STAFF),
    ("/metrics/", Scope.METRICS),
)


def scope_for_path(path: str) -> Scope | None:
    """The scope whose rules apply to `path`, or None for a path that is open to everyone."""
    for prefix, scope in SCOPE_PREFIXES:
        if path.startswith(prefix) or path == prefix[:-1]:
            return scope
    return None


@dataclass(frozen=True)
class CompiledRule:
    id: int
    network: Network


@dataclass(frozen=True)
class RuleSet:
    """The enabled rules, by scope and action, their networks parsed once."""

    allow: dict[str, tuple[CompiledRule, ...]] = field(default_factory=dict)
    deny: dict[str, tuple[CompiledRule, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, rows: Iterable[tuple[int, str, str, str]]) -> RuleSet:
        """From (id, scope, action, cidr) rows; a row whose network cannot be read is skipped, loudly."""
        allow: dict[str, list[CompiledRule]] = {}
        deny: dict[str, list[CompiledRule]] = {}
        for rule_id, scope, action, cidr in rows:
            try:
                network = network_parse(cidr)
            except ValueError:
                # Only a row written around the model's validation (raw SQL, a bulk update) gets here.
                logger.warning("IP rule %s has an unreadable network %r and is not applied.", rule_id, cidr)
                continue
            target = deny if action == IpRule.Action.DENY else allow
            target.setdefault(scope, []).append(CompiledRule(id=rule_id, network=network))
        return cls(
            allow={scope: tuple(rules) for scope, rules in allow.items()},
            deny={scope: tuple(rules) for scope, rules in deny.items()},
        )


EMPTY_RULES = RuleSet()


def rules_read() -> RuleSet:
    """The enabled rules, from the database."""
    return RuleSet.build(
        IpRule.objects.filter(enabled=True).order_by("id").values_list("id", "scope", "action", "cidr")
    )


class RuleCache:
    """The rules this process applies: read at most once every IP_RULES_CACHE_SECONDS.

    Thread-safe: one thread reads the database while others wait for it only if there are no rules
    yet, and otherwise go on with the previous ones. `current_if_fresh` never touches the database or
    a lock, so that the websocket middleware may call it on the event loop and go to a thread only when
    a read is due.
    """

    def __init__(
        self, *, reader: Callable[[], RuleSet] = rules_read, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._reader = reader
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: RuleSet | None = None
        self._read_at: float | None = None  # the last attempt, whether it succeeded or not
        self._invalidated = False

    def _due(self) -> bool:
        if self._invalidated or self._read_at is None:
            return True
        return self._clock() - self._read_at >= settings.IP_RULES_CACHE_SECONDS

    def current_if_fresh(self) -> RuleSet | None:
        """The rules, or None when they are due to be read again (then call `current` in a thread)."""
        rules = self._rules
        if self._due():
            return None
        return rules if rules is not None else EMPTY_RULES

    def current(self) -> RuleSet:
        """The rules, read again from the database when IP_RULES_CACHE_SECONDS have passed."""
        if not self._due():
            return self._rules if self._rules is not None else EMPTY_RULES
        # Another thread is reading: use what there is rather than queue behind it.
        blocking = self._rules is None
        if not self._lock.acquire(blocking=blocking):
            return self._rules if self._rules is not None else EMPTY_RULES
        try:
            if self._due():
                # Cleared before the read: an invalidation during it asks for another read.
                self._invalidated = False
                try:
                    self._rules = self._reader()
                except Exception as error:
                    # Any failure (DatabaseError, a pool timeout, a closed connection): requests go on.
                    logger.warning(
                        "IP rules could not be read (%s: %s); %s.",
                        type(error).__name__,
                        error,
                        "keeping the rules read before"
                        if self._rules is not None
                        else "applying the defaults (widget and api open, staff private addresses only)",
                    )
                self._read_at = self._clock()
            return self._rules if self._rules is not None else EMPTY_RULES
        finally:
            self._lock.release()

    async def current_async(self) -> RuleSet:
        """`current` for async code: on the event loop when fresh, in a database thread when due."""
        rules = self.current_if_fresh()
        if rules is not None:
            return rules
        return await sync_to_async(self._current_closing, thread_sensitive=True)()

    def _current_closing(self) -> RuleSet:
        """`current`, handing back the database connection it used (to the pool, or closing it) in the
        context that opened it: Django's connections are context-local, and channels'
        database_sync_to_async closes them outside the caller's context, so a refused socket, which makes
        no further database call, could leave its connection open (channels.testing's fresh context
        does: the test database could not be dropped).
        """
        close_old_connections()
        try:
            return self.current()
        finally:
            close_old_connections()

    def invalidate(self) -> None:
        """Read the rules again on next use (a rule was saved or deleted in this process)."""
        self._invalidated = True


rule_cache = RuleCache()


class Reason(StrEnum):
    DENY_RULE = "deny_rule"
    ALLOW_RULE = "allow_rule"
    NOT_IN_ALLOW_RULES = "not_in_allow_rules"
    UNKNOWN_ADDRESS = "unknown_address"
    DEFAULT_OPEN = "default_open"
    DEFAULT_PRIVATE = "default_private"
    DEFAULT_NOT_PRIVATE = "default_not_private"
    # Metrics with no allow rule: METRICS_ALLOWED_IPS or METRICS_TOKEN, checked by the view.
    METRICS_SETTINGS = "metrics_settings"


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    reason: Reason
    rule_id: int | None = None


def _matching(rules: tuple[CompiledRule, ...], address: Address) -> CompiledRule | None:
    return next((rule for rule in rules if address in rule.network), None)


def ip_verdict(*, scope: Scope | str, address: str | None, rules: RuleSet) -> Verdict:
    """Whether `address` (as cs_platform/client_ip.py resolved it; None if unknown) may reach `scope`."""
    ip = address_parse(address)
    if ip is not None:
        denied = _matching(rules.deny.get(scope, ()), ip)
        if denied is not None:
            return Verdict(admitted=False, reason=Reason.DENY_RULE, rule_id=denied.id)
    allow = rules.allow.get(scope, ())
    if allow:
        if ip is None:
            return Verdict(admitted=False, reason=Reason.UNKNOWN_ADDRESS)
        allowed = _matching(allow, ip)
        if allowed is None:
            return Verdict(admitted=False, reason=Reason.NOT_IN_ALLOW_RULES)
        return Verdict(admitted=True, reason=Reason.ALLOW_RULE, rule_id=allowed.id)
    if scope in (Scope.WIDGET, Scope.API):
        return Verdict(admitted=True, reason=Reason.DEFAULT_OPEN)
    if scope == Scope.METRICS:
        return Verdict(admitted=True, reason=Reason.METRICS_SETTINGS)
    if ip is None:
        return Verdict(admitted=False, reason=Reason.UNKNOWN_ADDRESS)
    if address_is_private(ip):
        return Verdict(admitted=True, reason=Reason.DEFAULT_PRIVATE)
    return Verdict(admitted=False, reason=Reason.DEFAULT_NOT_PRIVATE)


_SCOPE_WORDS = {
    Scope.WIDGET: "the chat widget",
    Scope.API: "the API gateway",
    Scope.STAFF: "the staff pages (admin, agent console and reports)",
    Scope.METRICS: "the metrics",
}


def refusal_detail(*, scope: Scope | str, address: str | None) -> str:
    """The sentence a refused client reads (a staff member on an HTML page too)."""
    what = _SCOPE_WORDS.get(Scope(scope), "this page")
    if address is None:
        return (
            f"Access to {what} is not allowed: your address could not be determined, and only known "
            "addresses are admitted here. Ask the platform's administrator."
        )
    return (
        f"Access to {what} is not allowed from your address ({address}) by this platform's IP rules. "
        "Ask the platform's administrator if you need it."
    )
