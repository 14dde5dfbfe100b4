"""Signal receivers of the conversations app, connected in ConversationsConfig.ready().

Deleting an attachment (itself, with its message, or with its conversation: admin, cascade, the
retention purge) removes its image and thumbnail from storage once the delete commits
(conversations/retention.py).
"""

from __future__ import annotations

from django.db.models.signals import post_delete, pre_delete

from conversations.models import Attachment, Message
from conversations.retention import attachment_deleted, message_deleting


def signals_connect() -> None:
    """Connect the receivers once (dispatch_uid: ready() may run more than once in tests)."""
    post_delete.connect(
        attachment_deleted, sender=Attachment, dispatch_uid="conversations.attachment_deleted"
    )
    pre_delete.connect(message_deleting, sender=Message, dispatch_uid="conversations.message_deleting")
