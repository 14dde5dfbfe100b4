"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_platform.settings")
# Django must be set up before the consumers (and so the models) are imported.
django_asgi_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from conversations.routing import websocket_urlpatterns  # noqa: E402
from cs_platform.reason_phrases import add_missing_reason_phrases  # noqa: E402
from cs_platform.sweeper import StalledReplySweepMiddleware  # noqa: E402
from cs_platform.upload_limit import UploadSizeLimitMiddleware  # noqa: E402

add_missing_reason_phrases()

application = StalledReplySweepMiddleware(
    ProtocolTypeRouter(
        {
            "http": UploadSizeLimitMiddleware(django_asgi_application),
            "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
        }
    )
)
