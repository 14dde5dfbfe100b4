"""The public knowledge base: /kb/ lists the published articles, /kb/<slug>/ shows one, for citations."""

from django.urls import path

from knowledge import views

app_name = "knowledge"

urlpatterns = [
    path("", views.article_list_page, name="article_list"),
    path("<slug:slug>/", views.article_page, name="article"),
]
