from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe
from django.views.generic import RedirectView

from agents.views import console_page
from conversations.views import chat_page
from cs_platform import health, metrics, staff_login
from gateway.errors import GatewayError

admin.site.site_header = "Customer service platform"
admin.site.site_title = "Customer service"
admin.site.index_title = "Conversations, knowledge and the assistant"
# The navigation sidebar repeats the home page and takes 300 px that list pages need at 1280 px.
admin.site.enable_nav_sidebar = False

# Browsers ask for /favicon.ico on every page that names no icon (admin, JSON, errors); 5 KB, read once.
_FAVICON = (settings.BASE_DIR / "static" / "favicon.ico").read_bytes()


@require_safe
@cache_control(public=True, max_age=86400)
def favicon(request: HttpRequest) -> HttpResponse:
    """The platform's icon (the widget's, at 16, 32 and 48 px)."""
    return HttpResponse(_FAVICON, content_type="image/vnd.microsoft.icon")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _is_gateway(request: HttpRequest) -> bool:
    return request.path.startswith("/v1/")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The API's 404 as {"code", "detail"} (a bad UUID in its path too), the gateway's in OpenAI's shape;
    Django's page elsewhere."""
    if _is_gateway(request):
        return GatewayError(404, f"Unknown path {request.path}.", code="not_found").response()
    if _is_api(request):
        return JsonResponse({"code": "not_found", "detail": "There is nothing at this address."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """The API's 500 as {"code", "detail"}, without the error's text (the gateway's in OpenAI's shape);
    Django's page elsewhere."""
    if _is_gateway(request):
        sentence = "Something went wrong on our side; please try again."
        return GatewayError(500, sentence, code="server_error", error_type="server_error").response()
    if _is_api(request):
        return JsonResponse(
            {"code": "server_error", "detail": "Something went wrong on our side; please try again."},
            status=500,
        )
    return defaults.server_error(request)


handler404 = not_found
handler500 = server_error

urlpatterns = [
    path("", RedirectView.as_view(url="/chat/", permanent=False)),
    path("chat/", chat_page, name="chat"),
    path("favicon.ico", favicon, name="favicon"),
    path("api/widget/", include("conversations.urls")),
    path("agent/", console_page, name="agent-console"),
    path("api/agent/", include("agents.urls")),
    path("api/reports/", include("reports.urls")),
    path("reports/", include("reports.page_urls")),
    path("kb/", include("knowledge.urls")),
    path("v1/", include("gateway.urls")),
    # Before admin's own URLs: its sign-in page, rate-limited with the console's (cs_platform/staff_login.py).
    path("admin/login/", staff_login.admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]
if settings.DEMO_SHOP_ENABLED:
    # The demo's "company system", which the demo business tools call (cs_platform/demo_shop.py).
    urlpatterns.append(path("demo/shop/api/", include("cs_platform.demo_shop")))
