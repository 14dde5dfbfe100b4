"""The staff roles: which model permissions the Agent, Supervisor and Manager groups hold.

The groups themselves come from agents/migrations/0003; what each may do in admin is this table,
applied after every `migrate` (a post_migrate receiver, connected in PlatformConfig.ready()). Kept as
code rather than a data migration so that:

- a model added later by another app (review.ReviewItem, reports.DailyStat, ...) gets its permissions
  on the first `migrate` that creates it, with no migration in this app depending on that app;
- the groups hold exactly the table, however they were edited by hand: least privilege is what the
  code says, not what someone once ticked. An operator who wants a wider role makes a group of their
  own (people may be in several groups).

Nothing here names the access-rule or API-key models: no group gets a permission on them, so only
superusers manage them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps as global_apps
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Q

logger = logging.getLogger(__name__)

AGENT = "Agent"
SUPERVISOR = "Supervisor"
MANAGER = "Manager"
ROLE_GROUPS = (AGENT, SUPERVISOR, MANAGER)

Grants = dict[str, tuple[str, ...]]  # "app_label.model" -> actions ("view", "add", "change", "delete")

# Agents work the console (its API checks the group, not these) and read, in admin, the transcripts of
# the conversations whose ticket they hold or held (ConversationAdmin narrows the rows for them).
_AGENT: Grants = {
    "conversations.conversation": ("view",),
    "conversations.message": ("view",),
    "conversations.ticket": ("view",),
}

# Supervisors also read every rating, work the review queue and keep the knowledge base, the canned
# replies, the team's hours and the blocked terms up to date. They delete no article or FAQ entry
# (unpublish instead).
_SUPERVISOR: Grants = {
    **_AGENT,
    "conversations.attachment": ("view",),
    "conversations.feedback": ("view",),
    "conversations.satisfactionrating": ("view",),
    "review.reviewitem": ("view", "change"),
    "knowledge.article": ("view", "add", "change"),
    "knowledge.articleversion": ("view",),
    "knowledge.faqentry": ("view", "add", "change"),
    "knowledge.indexbuild": ("view",),
    "agents.cannedreply": ("view", "add", "change"),
    "agents.handoffsettings": ("view", "change"),
    "agents.weeklyhours": ("view", "add", "change", "delete"),
    "agents.holiday": ("view", "add", "change", "delete"),
    # What the assistant must never say (blocked terms, per language), what it says instead, and its
    # disclaimer (safety/).
    "safety.blockedterm": ("view", "add", "change", "delete"),
    "safety.safetysettings": ("view", "change"),
}

# Managers read transcripts, ratings, the review queue and the reports; they change nothing (unless
# also in the Supervisor group).
_MANAGER: Grants = {
    "conversations.conversation": ("view",),
    "conversations.message": ("view",),
    "conversations.ticket": ("view",),
    "conversations.attachment": ("view",),
    "conversations.feedback": ("view",),
    "conversations.satisfactionrating": ("view",),
    "review.reviewitem": ("view",),
    "reports.dailystat": ("view",),
    "safety.blockedterm": ("view",),
    "safety.safetysettings": ("view",),
}

ROLE_PERMISSIONS: dict[str, Grants] = {AGENT: _AGENT, SUPERVISOR: _SUPERVISOR, MANAGER: _MANAGER}


def role_codenames(*, role: str) -> set[tuple[str, str]]:
    """(app_label, codename) of every permission the table gives `role`, installed or not."""
    pairs: set[tuple[str, str]] = set()
    for model_label, actions in ROLE_PERMISSIONS[role].items():
        app_label, model_name = model_label.split(".")
        pairs.update((app_label, f"{action}_{model_name}") for action in actions)
    return pairs


@dataclass
class RolesSyncReport:
    """What a sync did: permissions each group now holds, and table entries not installed (skipped)."""

    granted: dict[str, set[str]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)


def roles_sync(*, using: str = DEFAULT_DB_ALIAS, apps: Any = global_apps) -> RolesSyncReport:
    """Give each role group exactly the permissions of the table; create a group that is missing.

    Idempotent: run twice, the second run changes nothing. A model not installed (yet) is skipped
    quietly, so that the table may name models other apps add later. `apps` is the migration state
    post_migrate passes (historical models), or the installed apps when called from code.
    """
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    report = RolesSyncReport()
    wanted = {role: role_codenames(role=role) for role in ROLE_GROUPS}
    every = set().union(*wanted.values())
    lookup = Q()
    for app_label, codename in every:
        lookup |= Q(content_type__app_label=app_label, codename=codename)
    found = {
        (app_label, codename): pk
        for pk, app_label, codename in permission_model.objects.using(using)
        .filter(lookup)
        .values_list("pk", "content_type__app_label", "codename")
    }
    report.missing = {f"{app_label}.{codename}" for app_label, codename in every - found.keys()}
    for role in ROLE_GROUPS:
        group, _ = group_model.objects.using(using).get_or_create(name=role)
        permission_ids = {found[pair] for pair in wanted[role] if pair in found}
        current = set(group.permissions.values_list("pk", flat=True))
        if current != permission_ids:
            # set() would compute the same difference again; the ids are known here.
            group.permissions.remove(*(current - permission_ids))
            group.permissions.add(*(permission_ids - current))
        report.granted[role] = {
            f"{app_label}.{codename}"
            for app_label, codename in wanted[role]
            if (app_label, codename) in found
        }
    if report.missing:
        logger.debug("Roles: not installed (skipped): %s", ", ".join(sorted(report.missing)))
    return report


def _last_app_with_models() -> str | None:
    labels = [config.label for config in global_apps.get_app_configs() if config.models_module is not None]
    return labels[-1] if labels else None


def roles_sync_after_migrate(
    sender: Any, *, using: str = DEFAULT_DB_ALIAS, apps: Any = global_apps, **kwargs: Any
) -> None:
    """post_migrate receiver: sync once per `migrate` (or `flush`), after every app's permissions exist.

    post_migrate is sent once per installed app, in INSTALLED_APPS order, and auth creates each app's
    permissions on that app's signal: on the last app's, all of them exist.
    """
    if getattr(sender, "label", None) != _last_app_with_models():
        return
    try:
        apps.get_model("auth", "Group")
        apps.get_model("auth", "Permission")
    except LookupError:
        return  # auth migrated back to zero: no groups to fill
    roles_sync(using=using, apps=apps)


def user_in_role_groups(user: Any, *, groups: tuple[str, ...]) -> bool:
    """Whether `user` is in one of `groups`; the answer is kept on the user for the request."""
    cache: dict[tuple[str, ...], bool] | None = getattr(user, "_cs_role_groups", None)
    if cache is None:
        cache = {}
        user._cs_role_groups = cache  # request.user is a lazy proxy: set it, not __dict__
    if groups not in cache:
        cache[groups] = user.groups.filter(name__in=groups).exists()
    return cache[groups]


def user_sees_only_own_tickets(user: Any) -> bool:
    """An agent and nothing more: admin shows them only conversations whose ticket they hold or held.

    Superusers, supervisors and managers read every conversation; staff outside the role groups read
    what a superuser gave them.
    """
    if not getattr(user, "is_authenticated", False) or user.is_superuser:
        return False
    return user_in_role_groups(user, groups=(AGENT,)) and not user_in_role_groups(
        user, groups=(SUPERVISOR, MANAGER)
    )
