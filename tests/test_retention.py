"""Data lifecycle: the retention purge, files removed with their rows, a customer's export and erasure."""

from __future__ import annotations

import io
import json
import logging
import threading
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import current_app
from django.conf import settings as django_settings
from django.contrib.admin.models import DELETION, LogEntry
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from conversations import retention, services
from conversations.models import Attachment, Conversation, Feedback, Message, SatisfactionRating, Ticket
from conversations.tasks import conversations_purge_expired
from reports.models import DailyStat
from review.models import ReviewItem
from tests import factories
from tests.factories import attachment_for, make_user

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

CHANGELIST = "/admin/conversations/conversation/"


@pytest.fixture(autouse=True)
def _no_ocr_and_fast_passwords(settings: Any) -> None:
    """Vision models read images themselves: no OCR thread races the deletes; cheap password hashes."""
    settings.INFERENCE_VISION = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # force_login's request has no address: django-axes would record "unknown" in an inet column
    # (PostgreSQL refuses it). Sign-in lock-out is tests/test_staff_lockout.py's subject, not this file's.
    settings.AXES_ENABLED = False


def media_file(name: str | None) -> Path:
    assert name, "the attachment has no file name"
    return Path(django_settings.MEDIA_ROOT) / name


def files_of(attachment: Attachment) -> list[Path]:
    return [media_file(attachment.image.name), media_file(attachment.thumbnail.name)]


def inactive_since(conversation: Conversation, *, days: int) -> Conversation:
    """Make `conversation`'s last activity `days` ago (created then, and its last message then)."""
    at = timezone.now() - timedelta(days=days)
    Conversation.objects.filter(pk=conversation.pk).update(created_at=at, last_message_at=at)
    conversation.refresh_from_db()
    return conversation


def rich_conversation(*, days: int, colour: tuple[int, int, int] = (200, 30, 30)) -> Conversation:
    """A conversation with a message carrying an image, a rated reply, a CSAT, a resolved ticket and a
    review item, last active `days` ago."""
    conversation: Any = ConversationFactory(
        customer_ip="203.0.113.7", metadata={"customer_id": "C-4711"}, verified_customer_id="C-4711"
    )
    attachment = attachment_for(conversation, colour=colour)
    customer = MessageFactory(conversation=conversation, text="My parcel, see the photo.")
    Attachment.objects.filter(pk=attachment.pk).update(message=customer)
    reply = MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, text="It is on its way.")
    services.feedback_record(conversation=conversation, message_id=reply.pk, rating=Feedback.Rating.DOWN)
    SatisfactionRating.objects.create(conversation=conversation, score=2, comment="Slow")
    Ticket.objects.create(conversation=conversation, status=Ticket.Status.RESOLVED, reason="customer_request")
    return inactive_since(conversation, days=days)


def rows_of(conversation: Conversation) -> dict[str, int]:
    return {
        "conversations": Conversation.objects.filter(pk=conversation.pk).count(),
        "messages": Message.objects.filter(conversation_id=conversation.pk).count(),
        "attachments": Attachment.objects.filter(conversation_id=conversation.pk).count(),
        "feedback": Feedback.objects.filter(message__conversation_id=conversation.pk).count(),
        "csat": SatisfactionRating.objects.filter(conversation_id=conversation.pk).count(),
        "tickets": Ticket.objects.filter(conversation_id=conversation.pk).count(),
        "review": ReviewItem.objects.filter(conversation_id=conversation.pk).count(),
    }


NONE_LEFT = {
    "conversations": 0,
    "messages": 0,
    "attachments": 0,
    "feedback": 0,
    "csat": 0,
    "tickets": 0,
    "review": 0,
}


# --- the purge: real commits, so that the files go as they do in production --------------------------


@pytest.mark.django_db(transaction=True)
def test_the_purge_removes_old_conversations_with_every_row_and_file_and_keeps_recent_ones(
    settings: Any,
) -> None:
    settings.DATA_RETENTION_DAYS = 30
    old = rich_conversation(days=45)
    recent = rich_conversation(days=5, colour=(30, 200, 30))
    old_files = files_of(old.attachments.get())
    recent_files = files_of(recent.attachments.get())
    DailyStat.objects.create(
        day=(timezone.now() - timedelta(days=45)).date(),
        conversations=1,
        unanswered=1,
        unanswered_questions={"my card": [1, "My card 4111 1111 1111 1111"]},
        time_zone="UTC",
        computed_at=timezone.now(),
    )
    kept_questions = {"where is it": [1, "Where is it?"]}
    DailyStat.objects.create(
        day=(timezone.now() - timedelta(days=5)).date(),
        unanswered_questions=kept_questions,
        time_zone="UTC",
        computed_at=timezone.now(),
    )
    assert all(path.exists() for path in old_files + recent_files)
    assert rows_of(old)["review"] == 1  # the thumbs-down queued it

    result = retention.conversations_purge()

    assert (result.conversations, result.files) == (1, 2)
    assert rows_of(old) == NONE_LEFT
    assert not any(path.exists() for path in old_files)
    assert rows_of(recent)["conversations"] == 1
    assert rows_of(recent)["attachments"] == 1
    assert all(path.exists() for path in recent_files)
    # The reports' daily counts stay: they are what the reports read once the conversations are gone;
    # the customers' words in them go with the retention.
    old_day, recent_day = DailyStat.objects.order_by("day")
    assert (old_day.conversations, old_day.unanswered, old_day.unanswered_questions) == (1, 1, {})
    assert recent_day.unanswered_questions == kept_questions


@pytest.mark.django_db(transaction=True)
def test_last_activity_decides_not_the_start_and_a_waiting_ticket_keeps_its_conversation(
    settings: Any,
) -> None:
    settings.DATA_RETENTION_DAYS = 30
    started_long_ago: Any = ConversationFactory()
    Conversation.objects.filter(pk=started_long_ago.pk).update(
        created_at=timezone.now() - timedelta(days=90), last_message_at=timezone.now() - timedelta(days=2)
    )
    never_written: Any = inactive_since(ConversationFactory(), days=40)
    Conversation.objects.filter(pk=never_written.pk).update(last_message_at=None)
    waiting = inactive_since(ConversationFactory(), days=60)
    Ticket.objects.create(conversation=waiting, status=Ticket.Status.OPEN)

    assert retention.conversations_purge().conversations == 1

    assert set(Conversation.objects.values_list("pk", flat=True)) == {started_long_ago.pk, waiting.pk}


@pytest.mark.django_db(transaction=True)
def test_retention_zero_keeps_everything_and_a_rerun_finds_nothing_more(settings: Any) -> None:
    settings.DATA_RETENTION_DAYS = 0
    old = rich_conversation(days=4000)

    assert conversations_purge_expired.apply().get() == 0
    assert rows_of(old)["conversations"] == 1
    assert all(path.exists() for path in files_of(old.attachments.get()))

    settings.DATA_RETENTION_DAYS = 30
    assert conversations_purge_expired.apply().get() == 1
    assert conversations_purge_expired.apply().get() == 0


@pytest.mark.django_db(transaction=True)
def test_the_purge_goes_batch_by_batch(settings: Any) -> None:
    settings.DATA_RETENTION_DAYS = 30
    for _ in range(5):
        inactive_since(ConversationFactory(), days=31)

    assert retention.conversations_purge(batch_size=2).conversations == 5
    assert not Conversation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_file_another_attachment_still_uses_is_kept(settings: Any) -> None:
    """Uploads are content-addressed: the same image in a recent conversation keeps its one file."""
    settings.DATA_RETENTION_DAYS = 30
    old = rich_conversation(days=45)
    recent: Any = ConversationFactory()
    shared = attachment_for(recent)  # the same pixels: the same stored file

    assert shared.image.name == old.attachments.get().image.name
    assert retention.conversations_purge().files == 0
    assert all(path.exists() for path in files_of(shared))


@pytest.mark.django_db(transaction=True)
def test_two_purges_at_once_take_different_rows(settings: Any) -> None:
    """A conversation another purge (here: another transaction) holds is skipped, not waited for."""
    if connection.vendor != "postgresql":
        pytest.skip("SKIP LOCKED needs PostgreSQL")
    settings.DATA_RETENTION_DAYS = 30
    held = inactive_since(ConversationFactory(), days=31)
    inactive_since(ConversationFactory(), days=31)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                Conversation.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(timeout=30)
    try:
        first = retention.conversations_purge()
    finally:
        release.set()
        holder.join()

    assert first.conversations == 1
    assert list(Conversation.objects.values_list("pk", flat=True)) == [held.pk]
    assert retention.conversations_purge().conversations == 1


def test_beat_runs_the_purge() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["purge-expired-conversations"]
    assert entry["task"] in current_app.tasks


def test_a_retention_inside_the_reports_recompute_window_is_refused(settings: Any) -> None:
    settings.REPORTS_RECOMPUTE_DAYS = 7
    settings.DATA_RETENTION_DAYS = 5
    with pytest.raises(ValueError, match="at least 9 days"):
        retention.retention_days()


# --- the command ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_command_dry_run_counts_and_deletes_nothing_then_the_real_run_deletes() -> None:
    old = rich_conversation(days=100)
    rich_conversation(days=10, colour=(30, 30, 200))
    old_files = files_of(old.attachments.get())

    out = io.StringIO()
    call_command("purge_conversations", "--older-than-days", "60", "--dry-run", stdout=out)
    assert "Would remove 1 conversation(s) and 2 file(s)" in out.getvalue()
    assert Conversation.objects.count() == 2
    assert all(path.exists() for path in old_files)

    out = io.StringIO()
    call_command("purge_conversations", "--older-than-days", "60", stdout=out)
    assert "Removed 1 conversation(s) and 2 file(s)" in out.getvalue()
    assert Conversation.objects.count() == 1
    assert not any(path.exists() for path in old_files)


@pytest.mark.django_db
def test_the_command_refuses_a_retention_the_reports_would_rewrite(settings: Any) -> None:
    settings.REPORTS_RECOMPUTE_DAYS = 7
    inactive_since(ConversationFactory(), days=5)
    with pytest.raises(CommandError, match="at least 9 days"):
        call_command("purge_conversations", "--older-than-days", "3", stdout=io.StringIO())
    assert Conversation.objects.count() == 1


@pytest.mark.django_db
def test_the_command_with_retention_off_says_so(settings: Any) -> None:
    settings.DATA_RETENTION_DAYS = 0
    ConversationFactory()
    out = io.StringIO()
    call_command("purge_conversations", stdout=out)
    assert "Retention is off" in out.getvalue()
    assert Conversation.objects.count() == 1


# --- files go with their rows, whichever way they are deleted ------------------------------------------


@pytest.mark.django_db
def test_a_rolled_back_delete_keeps_its_files(django_capture_on_commit_callbacks: Callable[..., Any]) -> None:
    conversation: Any = ConversationFactory()
    conversation_id = conversation.pk
    paths = files_of(attachment_for(conversation))

    def delete_then_fail() -> None:
        with transaction.atomic():
            conversation.delete()
            raise RuntimeError("changed my mind")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        delete_then_fail()

    assert callbacks == []
    assert Attachment.objects.filter(conversation_id=conversation_id).count() == 1
    assert all(path.exists() for path in paths)


@pytest.mark.django_db
def test_deleting_an_attachment_or_its_message_removes_the_files(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    conversation: Any = ConversationFactory()
    alone = attachment_for(conversation)
    sent = attachment_for(conversation, colour=(10, 10, 250))
    message = MessageFactory(conversation=conversation)
    Attachment.objects.filter(pk=sent.pk).update(message=message)

    with django_capture_on_commit_callbacks(execute=True):
        alone.delete()
    assert not any(path.exists() for path in files_of(alone))

    with django_capture_on_commit_callbacks(execute=True):
        message.delete()
    assert not Attachment.objects.filter(pk=sent.pk).exists()
    assert not any(path.exists() for path in files_of(sent))


@pytest.mark.django_db
def test_deleting_a_conversation_in_admin_removes_its_files(
    admin_client: Client, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    conversation: Any = ConversationFactory()
    paths = files_of(attachment_for(conversation))

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            CHANGELIST,
            {"action": "delete_selected", "_selected_action": [str(conversation.pk)], "post": "yes"},
        )

    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not any(path.exists() for path in paths)


# --- a customer's data on request ----------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_find_a_customers_conversations_by_ip_or_metadata_id(admin_client: Client) -> None:
    theirs: Any = ConversationFactory(customer_ip="198.51.100.23", metadata={"customer_id": "C-4711"})
    ConversationFactory(customer_ip="192.0.2.1", metadata={"customer_id": "C-9000"})

    for term in ("198.51.100.23", "C-4711"):
        page = admin_client.get(CHANGELIST, {"q": term}).content.decode()
        assert str(theirs.pk)[:8] in page
        assert "1 result" in page


@pytest.mark.django_db
def test_the_export_is_a_zip_of_the_conversations_json_and_their_images(admin_client: Client) -> None:
    conversation = rich_conversation(days=1)
    MessageFactory(conversation=conversation, role=Message.Role.AGENT, text="Staff only", internal=True)
    attachment = conversation.attachments.get()

    response = admin_client.post(
        CHANGELIST, {"action": "export_customer_data", "_selected_action": [str(conversation.pk)]}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "attachment;" in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert set(archive.namelist()) == {"conversations.json", f"images/{attachment.pk}.jpg"}
    assert archive.read(f"images/{attachment.pk}.jpg") == media_file(attachment.image.name).read_bytes()
    document = json.loads(archive.read("conversations.json"))
    [exported] = document["conversations"]
    assert exported["id"] == str(conversation.pk)
    assert exported["metadata"] == {"customer_id": "C-4711"}
    assert exported["verified_customer_id"] == "C-4711"
    assert exported["customer_ip"] == "203.0.113.7"
    assert [message["text"] for message in exported["messages"]] == [
        "My parcel, see the photo.",
        "It is on its way.",
    ]
    assert exported["messages"][0]["attachments"] == [f"images/{attachment.pk}.jpg"]
    assert exported["messages"][1]["rating"]["rating"] == Feedback.Rating.DOWN
    assert exported["satisfaction"]["score"] == 2
    assert [ticket["status"] for ticket in exported["tickets"]] == [Ticket.Status.RESOLVED]


@pytest.mark.django_db
def test_erasing_asks_first_then_deletes_rows_and_files_and_records_who_without_content(
    admin_client: Client,
    django_capture_on_commit_callbacks: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    conversation = rich_conversation(days=1)
    other = rich_conversation(days=1, colour=(90, 90, 90))
    paths = files_of(conversation.attachments.get())
    selected = {"action": "erase_customer_data", "_selected_action": [str(conversation.pk)]}

    confirmation = admin_client.post(CHANGELIST, selected)

    assert confirmation.status_code == 200
    page = confirmation.content.decode()
    assert "Erase the customer&#x27;s data?" in page
    assert str(conversation.pk)[:8] in page
    assert 'name="post" value="yes"' in page
    assert rows_of(conversation)["conversations"] == 1  # nothing deleted before the confirmation

    with (
        caplog.at_level(logging.INFO, logger="conversations.retention"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        done = admin_client.post(CHANGELIST, {**selected, "post": "yes"})

    assert done.status_code == 302
    assert "and 2 image file(s)." in admin_client.get(done["Location"]).content.decode()
    assert rows_of(conversation) == NONE_LEFT
    assert not any(path.exists() for path in paths)
    assert rows_of(other)["conversations"] == 1
    entry = LogEntry.objects.get(object_id=str(conversation.pk))
    assert entry.action_flag == DELETION
    assert entry.user.is_superuser
    logged = caplog.text
    assert str(conversation.pk) in logged
    for personal in ("203.0.113.7", "C-4711", "My parcel", "Slow"):
        assert personal not in logged
        assert personal not in entry.object_repr + entry.change_message


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["Agent", "Supervisor", "Manager"])
def test_no_staff_role_may_export_or_erase(client: Client, role: str) -> None:
    conversation: Any = ConversationFactory()
    user = make_user(role, is_staff=True)
    # An agent sees only the conversations whose ticket they hold: give them this one.
    Ticket.objects.create(conversation=conversation, assignee=user)
    client.force_login(user)

    listing = client.get(CHANGELIST)
    page = listing.content.decode()
    assert listing.status_code == 200
    assert str(conversation.pk)[:8] in page  # they see the conversation, not the two actions
    assert "export_customer_data" not in page
    assert "erase_customer_data" not in page

    for action in ("export_customer_data", "erase_customer_data"):
        response = client.post(
            CHANGELIST, {"action": action, "_selected_action": [str(conversation.pk)], "post": "yes"}
        )
        assert response.get("Content-Type") != "application/zip"
        assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert not LogEntry.objects.exists()
