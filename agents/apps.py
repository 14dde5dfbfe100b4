from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """People who answer customers: handoff rules, business hours, the agent console, canned replies."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "agents"

    def ready(self) -> None:
        # Conversations consults the rules without importing agents (dependencies point towards it).
        import agents.tasks  # noqa: F401  (conversations queues auto-assignment by the task's name)
        from agents import rules

        rules.register()
