from django.urls import path

from conversations import api

urlpatterns = [
    path("conversations", api.ConversationCreateApi.as_view(), name="widget-conversation-create"),
    path(
        "conversations/<uuid:conversation_id>/messages",
        api.MessageListApi.as_view(),
        name="widget-message-list",
    ),
    path(
        "conversations/<uuid:conversation_id>/attachments",
        api.AttachmentUploadApi.as_view(),
        name="widget-attachment-upload",
    ),
    path(
        "conversations/<uuid:conversation_id>/csat",
        api.CsatApi.as_view(),
        name="widget-csat",
    ),
    path(
        "attachments/<uuid:attachment_id>/<str:variant>",
        api.attachment_file,
        name="widget-attachment-file",
    ),
    path("faq", api.FaqListApi.as_view(), name="widget-faq"),
]
