from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        # conversations queues replies without importing inference (which builds on it): it is told here
        # how a queued reply gets generated.
        from conversations.replies import reply_generator_register
        from inference.tasks import reply_generation_start

        reply_generator_register(reply_generation_start)
