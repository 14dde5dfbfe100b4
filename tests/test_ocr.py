"""OCR for text-only models: read when an image is uploaded (a task), never while a reply waits, and a
failure is never stored as "no text"."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytesseract
import pytest
from asgiref.sync import async_to_sync
from celery import current_app
from PIL import Image, ImageDraw, ImageFont

from conversations import ocr, services, tasks
from conversations.models import Attachment, Conversation, Message
from inference.generation import reply_generate
from tests import factories
from tests.factories import attachment_for
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

ConversationFactory: Any = factories.ConversationFactory

CJK_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"


def invoice_png() -> io.BytesIO:
    """Printed text, black on white: "INVOICE 4821" above "电子发票" (Chinese for electronic invoice)."""
    font = ImageFont.truetype(CJK_FONT, 48)
    image = Image.new("RGB", (1000, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.text((40, 40), "INVOICE 4821", fill="black", font=font)
    draw.text((40, 132), "电子发票", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    buffer.seek(0)
    return buffer


def upload_invoice(conversation: Conversation) -> Attachment:
    return services.attachment_create(
        conversation=conversation, source=invoice_png(), original_name="invoice.png"
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ocr_state(attachment: Attachment) -> tuple[str, str | None]:
    attachment.refresh_from_db()
    return attachment.ocr_status, attachment.ocr_text


@pytest.fixture
def text_only(settings: Any) -> None:
    """A text-only model, with tasks run as the embedded default runs them (OCR on its own threads)."""
    settings.INFERENCE_VISION = False
    settings.CELERY_TASK_ALWAYS_EAGER = True


def test_it_reads_the_text_of_an_image_when_it_is_uploaded(text_only: None) -> None:
    attachment = upload_invoice(ConversationFactory())

    wait_until(lambda: ocr_state(attachment)[0] != Attachment.OcrStatus.NOT_READ)

    status, text = ocr_state(attachment)
    assert status == Attachment.OcrStatus.READ
    assert text is not None
    assert "INVOICE 4821" in text
    assert "发票" in text


def test_it_answers_the_upload_before_ocr_has_finished(text_only: None) -> None:
    release = threading.Event()

    def slow_ocr(image_file: Any) -> str:
        assert release.wait(30)
        return "SLOW TEXT"

    with mock.patch.object(ocr, "image_text", side_effect=slow_ocr):
        attachment = attachment_for(ConversationFactory())
        # The upload is answered while OCR is still reading.
        assert ocr_state(attachment) == (Attachment.OcrStatus.NOT_READ, None)
        release.set()
        wait_until(lambda: ocr_state(attachment)[0] != Attachment.OcrStatus.NOT_READ)

    assert ocr_state(attachment) == (Attachment.OcrStatus.READ, "SLOW TEXT")


def test_it_marks_an_ocr_timeout_as_failed_and_not_as_an_image_without_text(text_only: None) -> None:
    # pytesseract's timeout is a RuntimeError; earlier it was stored as "" (no text) for good.
    with mock.patch.object(
        pytesseract, "image_to_string", side_effect=RuntimeError("Tesseract process timeout")
    ):
        attachment = attachment_for(ConversationFactory())
        wait_until(lambda: ocr_state(attachment)[0] != Attachment.OcrStatus.NOT_READ)

    assert ocr_state(attachment) == (Attachment.OcrStatus.FAILED, None)


def test_it_marks_a_missing_tesseract_as_failed(text_only: None) -> None:
    with mock.patch.object(pytesseract, "image_to_string", side_effect=pytesseract.TesseractNotFoundError()):
        attachment = attachment_for(ConversationFactory())
        wait_until(lambda: ocr_state(attachment)[0] != Attachment.OcrStatus.NOT_READ)

    assert ocr_state(attachment) == (Attachment.OcrStatus.FAILED, None)


def test_it_stores_no_text_read_from_a_plain_picture_as_read(text_only: None) -> None:
    attachment = attachment_for(ConversationFactory(), width=64, height=48)

    wait_until(lambda: ocr_state(attachment)[0] != Attachment.OcrStatus.NOT_READ)

    assert ocr_state(attachment) == (Attachment.OcrStatus.READ, "")


def test_it_reads_an_image_once(text_only: None) -> None:
    with mock.patch.object(ocr, "image_text", return_value="ONCE") as image_text:
        attachment = attachment_for(ConversationFactory())
        wait_until(lambda: ocr_state(attachment)[0] != Attachment.OcrStatus.NOT_READ)
        # A second delivery of the task finds it read.
        services.attachment_ocr_read(attachment_id=attachment.pk)

    assert image_text.call_count == 1
    assert ocr_state(attachment) == (Attachment.OcrStatus.READ, "ONCE")


def test_it_does_not_read_images_for_a_vision_model(settings: Any) -> None:
    settings.INFERENCE_VISION = True
    settings.CELERY_TASK_ALWAYS_EAGER = True

    with mock.patch.object(ocr, "image_text") as image_text:
        attachment = attachment_for(ConversationFactory())

    assert image_text.call_count == 0
    assert ocr_state(attachment) == (Attachment.OcrStatus.NOT_READ, None)


def test_it_queues_the_ocr_task_by_name_on_a_celery_worker(settings: Any) -> None:
    settings.INFERENCE_VISION = False
    settings.CELERY_TASK_ALWAYS_EAGER = False

    with mock.patch.object(current_app, "send_task") as send_task:
        attachment = attachment_for(ConversationFactory())

    send_task.assert_called_once_with("conversations.tasks.attachment_ocr_read", args=[str(attachment.pk)])
    # The name a worker knows the task by.
    assert tasks.attachment_ocr_read.name == "conversations.tasks.attachment_ocr_read"


# --- what the reply's prompt gets ----------------------------------------------------------------


def test_it_sends_the_ocr_text_to_a_text_only_inference_server(
    text_only: None, scripted_inference: ScriptedInferenceServer
) -> None:
    conversation = ConversationFactory()
    attachment = upload_invoice(conversation)
    posted = services.message_post(
        conversation=conversation, text="Is this paid?", attachment_ids=[attachment.pk]
    )
    assert posted.reply is not None

    # The reply waits (OCR_WAIT_SECONDS at most) for OCR that is still reading the upload.
    async_to_sync(reply_generate)(reply_id=posted.reply.pk)

    [request] = scripted_inference.chat_requests
    user = request.json["messages"][-1]
    assert isinstance(user["content"], str)
    assert user["content"].startswith("[The customer attached an image (1000×300) that you cannot see. ")
    assert "INVOICE 4821" in user["content"]
    assert "发票" in user["content"]
    assert user["content"].endswith("]\nIs this paid?")


def test_it_does_not_hold_a_reply_long_for_ocr_that_has_not_finished(
    text_only: None, settings: Any, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.OCR_WAIT_SECONDS = 0.3
    release = threading.Event()
    scripted_inference.enqueue(Script(tokens=["Let me look."]))
    conversation = ConversationFactory()
    with mock.patch.object(ocr, "image_text", side_effect=lambda image_file: release.wait(30) and "LATE"):
        attachment = attachment_for(conversation, width=64, height=48)
        posted = services.message_post(conversation=conversation, text="Here", attachment_ids=[attachment.pk])
        assert posted.reply is not None

        async_to_sync(reply_generate)(reply_id=posted.reply.pk)
        release.set()
        wait_until(lambda: ocr_state(attachment)[0] != Attachment.OcrStatus.NOT_READ)

    [request] = scripted_inference.chat_requests
    assert request.json["messages"][-1]["content"] == (
        "[The customer attached an image (64×48) that you cannot see. Its text has not been read yet.]\nHere"
    )
    reply = Message.objects.get(pk=posted.reply.pk)
    assert (reply.status, reply.text) == ("complete", "Let me look.")


def test_it_keeps_the_upload_when_the_ocr_task_cannot_be_queued(settings: Any) -> None:
    settings.INFERENCE_VISION = False
    settings.CELERY_TASK_ALWAYS_EAGER = False

    with mock.patch.object(current_app, "send_task", side_effect=ConnectionRefusedError(111, "refused")):
        attachment = attachment_for(ConversationFactory())

    assert ocr_state(attachment) == (Attachment.OcrStatus.NOT_READ, None)
