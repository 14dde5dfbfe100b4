from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from conversations.views import chat_page
from cs_platform import health, metrics

admin.site.site_header = "Customer service platform"
admin.site.site_title = "Customer service"
admin.site.index_title = "Conversations, knowledge and the assistant"

urlpatterns = [
    path("", RedirectView.as_view(url="/chat/", permanent=False)),
    path("chat/", chat_page, name="chat"),
    path("api/widget/", include("conversations.urls")),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]
