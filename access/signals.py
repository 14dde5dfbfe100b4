"""A rule saved or deleted in this process is applied by this process at once.

Other processes read the rules again within IP_RULES_CACHE_SECONDS (access/rules.py); this one need
not wait. The cache is cleared at once and again when the transaction commits: the first for code
that reads the rules in the same transaction (tests, a command that saves then checks), the second so
that a read in another thread between the save and the commit, which still sees the old rows, is not
kept for the whole interval.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from access.models import IpRule
from access.rules import rule_cache


def rule_changed(sender: type[IpRule], instance: IpRule, **kwargs: Any) -> None:
    rule_cache.invalidate()
    transaction.on_commit(rule_cache.invalidate, using=kwargs.get("using"))


def signals_connect() -> None:
    """Connect once (dispatch_uid: ready() may run more than once in tests)."""
    post_save.connect(rule_changed, sender=IpRule, dispatch_uid="access.rule_saved")
    post_delete.connect(rule_changed, sender=IpRule, dispatch_uid="access.rule_deleted")
