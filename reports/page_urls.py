"""The reports page for staff, under /reports/."""

from django.urls import path

from reports import views

urlpatterns = [
    path("", views.reports_page, name="reports-page"),
    path("export/<slug:table>.csv", views.reports_export, name="reports-export"),
]
