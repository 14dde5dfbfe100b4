from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """People who answer customers: handoff rules, business hours, the agent console, canned replies."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "agents"
