from django.apps import AppConfig


class ReportsConfig(AppConfig):
    """Managers see how satisfied customers are: daily aggregates, the summary, the reports page."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "reports"
