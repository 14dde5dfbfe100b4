from django.apps import AppConfig


class SafetyConfig(AppConfig):
    """Blocked terms and the assistant's disclaimer, kept by supervisors in admin."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "safety"

    def ready(self) -> None:
        # An edit saved in this process applies to its next reply at once (others: within the cache's TTL).
        from safety import policy

        policy.connect_signals()
