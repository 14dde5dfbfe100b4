from django.apps import AppConfig


class ReviewConfig(AppConfig):
    """Supervisors review what the AI said: the queue that low ratings fill, verdicts, corrections."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "review"
    verbose_name = "Review"

    def ready(self) -> None:
        from review import signals

        signals.signals_connect()
