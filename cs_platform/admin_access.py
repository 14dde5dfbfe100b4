"""Admin pages only superusers open: IP rules, API keys and their records, business tools.

cs_platform/roles.py grants no group any permission on these models, and these admins also answer no
to every non-superuser, so that a permission given to one person by hand does not open them either:
whoever may edit them may lock everyone out, open the platform to the internet, or reach the
company's internal systems.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest


def is_superuser(request: HttpRequest) -> bool:
    """Whether the request's user is an active superuser."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_superuser)


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """A model admin that superusers alone may see and use."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_superuser(request)


class SuperuserReadOnlyAdmin(SuperuserOnlyAdmin):
    """Records superusers may read and nobody may add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
