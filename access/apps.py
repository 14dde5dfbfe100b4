from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class AccessConfig(AppConfig):
    """Who may reach which part of the platform: IP rules per scope (widget, api, staff, metrics)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "access"
    verbose_name = "Access"

    def ready(self) -> None:
        # Read by every request's middleware: a wrong value must stop start-up, not each request.
        seconds = settings.IP_RULES_CACHE_SECONDS
        if not seconds >= 0:
            raise ImproperlyConfigured(
                "IP_RULES_CACHE_SECONDS must be zero (read the rules on every request) or a positive "
                f"number of seconds, not {seconds!r}."
            )
        from access import signals

        signals.signals_connect()
