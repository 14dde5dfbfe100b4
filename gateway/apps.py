from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """The OpenAI-compatible gateway (/v1/): other systems call the assistant or the model with API keys."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "gateway"
    verbose_name = "API gateway"
