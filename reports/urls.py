"""The reports' API, under /api/reports/."""

from django.urls import path

from reports import api

urlpatterns = [
    path("summary", api.SummaryApi.as_view(), name="reports-summary"),
]
