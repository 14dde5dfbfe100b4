"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os
import threading

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_platform.settings")
# Django must be set up before the consumers (and so the models) are imported.
django_asgi_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from access.middleware import IpRulesWebsocketMiddleware  # noqa: E402
from agents.routing import websocket_urlpatterns as agent_websocket_urlpatterns  # noqa: E402
from conversations.routing import websocket_urlpatterns  # noqa: E402
from cs_platform.origins import websocket_origin_validated  # noqa: E402
from cs_platform.reason_phrases import add_missing_reason_phrases  # noqa: E402
from cs_platform.sweeper import StalledReplySweepMiddleware  # noqa: E402
from cs_platform.upload_limit import UploadSizeLimitMiddleware  # noqa: E402
from knowledge.retrieval import retrieval_warm_up  # noqa: E402

add_missing_reason_phrases()

if settings.REPLY_GENERATION_IN_PROCESS:
    # This process answers customers itself (the embedded default): load retrieval's dictionary, embedder
    # and index now, beside start-up, rather than during the first customer's reply.
    threading.Thread(target=retrieval_warm_up, name="retrieval-warm-up", daemon=True).start()

application = StalledReplySweepMiddleware(
    ProtocolTypeRouter(
        {
            "http": UploadSizeLimitMiddleware(django_asgi_application),
            # The agent console's route first: the conversations' list ends with a catch-all (4404).
            # IP rules first (access/middleware.py): a refused address is closed with 4403, whatever
            # its Origin says.
            "websocket": IpRulesWebsocketMiddleware(
                # The Origin per route (cs_platform/origins.py): the platform's hosts, and for the
                # customers' sockets also the pages that embed the widget.
                websocket_origin_validated(URLRouter([*agent_websocket_urlpatterns, *websocket_urlpatterns]))
            ),
        }
    )
)
