from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PlatformConfig(AppConfig):
    name = "cs_platform"
    verbose_name = "Platform"

    def ready(self) -> None:
        # Every `migrate` (and `flush`) ends by giving the role groups exactly cs_platform/roles.py's
        # permissions, for the models installed then: an app added later gets its share on its migrate.
        from cs_platform.roles import roles_sync_after_migrate

        post_migrate.connect(roles_sync_after_migrate, dispatch_uid="cs_platform.roles.sync")
