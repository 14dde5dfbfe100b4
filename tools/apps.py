from django.apps import AppConfig


class ToolsConfig(AppConfig):
    """Business tools: HTTP calls to the company's own systems that the assistant may make (DESIGN.md)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "tools"
    verbose_name = "Business tools"

    def ready(self) -> None:
        from inference.tooling import business_tools_register
        from tools.provider import ToolsProvider

        business_tools_register(ToolsProvider())
