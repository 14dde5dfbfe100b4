from django.urls import path

from gateway import views

urlpatterns = [
    path("models", views.models_list, name="gateway-models"),
    path("models/<path:model>", views.model_get, name="gateway-model"),
    path("chat/completions", views.chat_completions, name="gateway-chat-completions"),
]
