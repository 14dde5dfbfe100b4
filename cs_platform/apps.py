from django.apps import AppConfig


class PlatformConfig(AppConfig):
    name = "cs_platform"
    verbose_name = "Platform"
