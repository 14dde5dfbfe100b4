"""The agent console's REST API, under /api/agent/."""

from django.urls import path

from agents import api

urlpatterns = [
    path("session", api.SessionApi.as_view(), name="agent-session"),
    path("canned-replies", api.CannedReplyListApi.as_view(), name="agent-canned-reply-list"),
    path("conversations", api.ConversationListApi.as_view(), name="agent-conversation-list"),
    path(
        "conversations/<uuid:conversation_id>",
        api.ConversationDetailApi.as_view(),
        name="agent-conversation-detail",
    ),
    path(
        "conversations/<uuid:conversation_id>/claim", api.ClaimApi.as_view(), name="agent-conversation-claim"
    ),
    path(
        "conversations/<uuid:conversation_id>/messages",
        api.MessageCreateApi.as_view(),
        name="agent-message-create",
    ),
    path(
        "conversations/<uuid:conversation_id>/resolve",
        api.ResolveApi.as_view(),
        name="agent-conversation-resolve",
    ),
    path(
        "conversations/<uuid:conversation_id>/handback",
        api.HandBackApi.as_view(),
        name="agent-conversation-handback",
    ),
]
