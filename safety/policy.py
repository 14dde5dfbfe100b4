"""The blocked terms and safety settings a reply is generated under, cached per process.

A reply needs them before its first delta, and must not pay a query for them per reply, let alone per
delta: each process keeps what it read for SAFETY_CACHE_SECONDS (10 s by default). An edit saved in
admin applies at once in the process that saved it (the model's save and delete signals forget the
cache there) and within SAFETY_CACHE_SECONDS on every other process (web, Celery workers), which
read the database again when their copy is that old. The stream itself only reads a matcher built
once per read (`TermMatcher`), shared by every reply until the next read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save

from safety.terms import BlockedTermFilter, TermMatcher

__all__ = ["SafetyPolicy", "connect_signals", "policy_cached", "policy_forget", "policy_get"]

LOCALES = ("en", "zh-Hans")


@dataclass(frozen=True)
class SafetyPolicy:
    """What the safety settings say, read once: per language, the terms, the sentence, the disclaimer."""

    matchers: dict[str, TermMatcher] = field(default_factory=dict)
    replacements: dict[str, str] = field(default_factory=dict)
    disclaimers: dict[str, str] = field(default_factory=dict)

    def term_filter(self, locale: str) -> BlockedTermFilter | None:
        """A filter for one reply in `locale`; None when no term is blocked in that language."""
        matcher = self.matchers.get(_locale(locale))
        return BlockedTermFilter(matcher) if matcher else None

    def replacement_for(self, locale: str) -> str:
        from safety.models import DEFAULT_REPLACEMENTS

        key = _locale(locale)
        return self.replacements.get(key) or DEFAULT_REPLACEMENTS[key]

    def disclaimer_for(self, locale: str) -> str:
        """The disclaimer after a model's answer in `locale`; "" when there is none."""
        return self.disclaimers.get(_locale(locale), "")


def _locale(locale: str) -> str:
    return "zh-Hans" if locale == "zh-Hans" else "en"


_lock = threading.Lock()
# (when it was read, time.monotonic(); the policy), or None until the first read or after a forget.
_cached: tuple[float, SafetyPolicy] | None = None
# Bumped by every forget: a read that started before an edit does not put its stale result back.
_generation = 0


def policy_load() -> SafetyPolicy:
    """Read the enabled terms and the settings from the database (two queries)."""
    from safety.models import BlockedTerm, SafetySettings

    terms: dict[str, list[str]] = {locale: [] for locale in LOCALES}
    for term, locale in BlockedTerm.objects.filter(enabled=True).values_list("term", "locale"):
        for target in LOCALES if locale == BlockedTerm.Locale.ANY else (locale,):
            if target in terms:
                terms[target].append(term)
    row = SafetySettings.current()
    return SafetyPolicy(
        matchers={locale: TermMatcher(terms[locale]) for locale in LOCALES},
        replacements={locale: row.replacement_for(locale) for locale in LOCALES},
        disclaimers={locale: row.disclaimer_for(locale) for locale in LOCALES},
    )


def policy_cached() -> SafetyPolicy | None:
    """The policy read less than SAFETY_CACHE_SECONDS ago, or None: safe on the event loop (no I/O)."""
    cached = _cached
    if cached is None or time.monotonic() - cached[0] >= settings.SAFETY_CACHE_SECONDS:
        return None
    return cached[1]


def policy_get() -> SafetyPolicy:
    """The policy, from the cache or read again when it is too old (needs the database)."""
    global _cached
    cached = policy_cached()
    if cached is not None:
        return cached
    with _lock:
        generation = _generation
    policy = policy_load()
    with _lock:
        if generation == _generation:
            _cached = (time.monotonic(), policy)
    return policy


def policy_forget(**_: Any) -> None:
    """Forget the cached policy: the next reply reads it again (a signal receiver, too)."""
    global _cached, _generation
    with _lock:
        _cached = None
        _generation += 1


def connect_signals() -> None:
    """Forget the cache whenever a term or the settings are saved or deleted in this process."""
    from safety.models import BlockedTerm, SafetySettings

    for model in (BlockedTerm, SafetySettings):
        post_save.connect(policy_forget, sender=model, dispatch_uid=f"safety-forget-save-{model.__name__}")
        post_delete.connect(
            policy_forget, sender=model, dispatch_uid=f"safety-forget-delete-{model.__name__}"
        )
