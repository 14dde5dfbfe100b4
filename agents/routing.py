"""The agent console's websocket route, with the staff session read from the cookie."""

from channels.auth import AuthMiddlewareStack
from django.urls import path

from agents.consumers import AgentConsumer

# Only this route reads the session: the customer's sockets authenticate with their token instead,
# and gain nothing from a cookie (a staff member's open admin tab must not change what a widget sees).
websocket_urlpatterns = [
    path("ws/agent/", AuthMiddlewareStack(AgentConsumer.as_asgi())),
]
