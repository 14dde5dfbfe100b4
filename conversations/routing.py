from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from conversations.consumers import ConversationConsumer

# Close code for a websocket path that names no conversation (HTTP's 404, in the 4000s range that
# applications may use).
UNKNOWN_PATH_CLOSE_CODE = 4404


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Accept a websocket on a path with no route and close it at once with 4404."""

    # Without this catch-all, URLRouter raises "No route found for path" and daphne logs a traceback
    # and answers 500 for every scanner's or mistyped URL.
    async def connect(self) -> None:
        await self.accept()
        await self.close(code=UNKNOWN_PATH_CLOSE_CODE)


websocket_urlpatterns = [
    path("ws/conversations/<uuid:conversation_id>/", ConversationConsumer.as_asgi()),
    re_path(r"", UnknownPathConsumer.as_asgi()),
]
