"""Images to the model: image_url parts for vision models, placeholders and OCR text for text-only ones."""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from PIL import Image, ImageDraw, ImageFont

from conversations import ocr, services
from conversations.models import Attachment, Conversation, Message
from conversations.services import PostedMessage
from cs_platform.asgi import application
from inference.generation import reply_generate
from inference.prompts import prompt_build
from tests import factories
from tests.factories import attachment_for
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
ConversationFactory: Any = factories.ConversationFactory

CJK_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
EARLIER_IMAGE = "[An earlier image from the customer, no longer shown.]"


def post(conversation: Conversation, text: str, attachments: list[Attachment] = ()) -> PostedMessage:  # type: ignore[assignment]
    return services.message_post(
        conversation=conversation, text=text, attachment_ids=[attachment.pk for attachment in attachments]
    )


def answer(posted: PostedMessage, text: str) -> None:
    assert posted.reply is not None
    services.reply_finish(reply_id=posted.reply.pk, text=text, status=Message.Status.COMPLETE)


def reply_id(posted: PostedMessage) -> int:
    assert posted.reply is not None
    return posted.reply.pk


def stored_bytes(attachment: Attachment) -> bytes:
    return Path(attachment.image.path).read_bytes()


def image_part(attachment: Attachment) -> dict[str, Any]:
    encoded = base64.b64encode(stored_bytes(attachment)).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{encoded}"}}


def decoded_size(part: dict[str, Any]) -> tuple[int, int]:
    prefix, encoded = part["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert image.format == "JPEG"
        return image.size


def printed_invoice() -> Attachment:
    """Printed text, black on white: "INVOICE 4821" above "电子发票" (Chinese for electronic invoice)."""
    font = ImageFont.truetype(CJK_FONT, 48)
    image = Image.new("RGB", (1000, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.text((40, 40), "INVOICE 4821", fill="black", font=font)
    draw.text((40, 132), "电子发票", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    buffer.seek(0)
    return services.attachment_create(
        conversation=ConversationFactory(), source=buffer, original_name="invoice.png"
    )


# --- vision models: the pictures themselves ---------------------------------------------------------


def test_it_sends_the_images_as_image_url_parts_before_the_text(settings: Any) -> None:
    settings.INFERENCE_VISION = True
    conversation = ConversationFactory()
    wide = attachment_for(conversation, width=64, height=48)
    tall = attachment_for(conversation, width=30, height=90, colour=(20, 200, 20))
    posted = post(conversation, "Which one is damaged?", [wide, tall])

    request = prompt_build(reply_id=reply_id(posted))

    assert [message["role"] for message in request.messages] == ["system", "user"]
    assert request.messages[1]["content"] == [
        image_part(wide),
        image_part(tall),
        {"type": "text", "text": "Which one is damaged?"},
    ]
    sizes = [decoded_size(part) for part in request.messages[1]["content"][:2]]
    assert sizes == [(wide.width, wide.height), (tall.width, tall.height)] == [(64, 48), (30, 90)]


def test_it_sends_the_images_in_the_order_the_customer_sent_them(settings: Any) -> None:
    settings.INFERENCE_VISION = True
    conversation = ConversationFactory()
    uploaded_first = attachment_for(conversation, width=40, height=40)
    uploaded_second = attachment_for(conversation, width=50, height=20)
    posted = post(conversation, "", [uploaded_second, uploaded_first])

    request = prompt_build(reply_id=reply_id(posted))

    assert request.messages[1]["content"] == [image_part(uploaded_second), image_part(uploaded_first)]
    assert [decoded_size(part) for part in request.messages[1]["content"]] == [(50, 20), (40, 40)]


def test_it_sends_a_large_upload_at_its_stored_size(settings: Any) -> None:
    settings.INFERENCE_VISION = True
    conversation = ConversationFactory()
    attachment = attachment_for(conversation, width=4000, height=3000)
    posted = post(conversation, "Photo of the label", [attachment])

    request = prompt_build(reply_id=reply_id(posted))

    image, text = request.messages[1]["content"]
    assert decoded_size(image) == (attachment.width, attachment.height) == (1463, 1097)
    assert text == {"type": "text", "text": "Photo of the label"}


def test_it_replaces_the_oldest_images_beyond_the_limit_with_a_placeholder(settings: Any) -> None:
    settings.INFERENCE_VISION = True
    settings.INFERENCE_MAX_IMAGES_PER_PROMPT = 2
    conversation = ConversationFactory()
    first = attachment_for(conversation, width=20, height=20)
    second = attachment_for(conversation, width=30, height=20)
    third = attachment_for(conversation, width=40, height=20)
    answer(post(conversation, "First picture", [first]), "I see the first.")
    answer(post(conversation, "Second picture", [second]), "I see the second.")
    posted = post(conversation, "Third picture", [third])

    with mock.patch.object(ocr, "image_text") as image_text:
        request = prompt_build(reply_id=reply_id(posted))

    assert request.messages[1:] == [
        {"role": "user", "content": f"{EARLIER_IMAGE}\nFirst picture"},
        {"role": "assistant", "content": "I see the first."},
        {"role": "user", "content": [image_part(second), {"type": "text", "text": "Second picture"}]},
        {"role": "assistant", "content": "I see the second."},
        {"role": "user", "content": [image_part(third), {"type": "text", "text": "Third picture"}]},
    ]
    # A vision model never needs OCR, even for the images it no longer sees.
    assert image_text.call_count == 0
    assert Attachment.objects.get(pk=first.pk).ocr_text is None


def test_it_shows_as_many_images_as_fit_when_one_message_is_over_the_context(settings: Any) -> None:
    settings.INFERENCE_VISION = True
    settings.INFERENCE_CONTEXT_TOKENS = 8192
    settings.INFERENCE_MAX_IMAGES_PER_PROMPT = 4
    conversation = ConversationFactory()
    # Four phone photos, each scaled to 1463x1097: about 2100 visual tokens apiece, 8400 in all.
    photos = [attachment_for(conversation, width=4000, height=3000, colour=(60 * i, 0, 0)) for i in range(4)]
    posted = post(conversation, "Four photos of the damage", photos)

    request = prompt_build(reply_id=reply_id(posted))

    assert request.messages[1] == {
        "role": "user",
        "content": [
            image_part(photos[0]),
            image_part(photos[1]),
            image_part(photos[2]),
            {"type": "text", "text": EARLIER_IMAGE},
            {"type": "text", "text": "Four photos of the damage"},
        ],
    }


def test_it_sends_every_image_up_to_the_limit(settings: Any) -> None:
    settings.INFERENCE_VISION = True
    settings.INFERENCE_MAX_IMAGES_PER_PROMPT = 3
    conversation = ConversationFactory()
    attachments = [attachment_for(conversation, width=20 + index, height=20) for index in range(3)]
    answer(post(conversation, "One", attachments[:1]), "Yes.")
    posted = post(conversation, "Two more", attachments[1:])

    request = prompt_build(reply_id=reply_id(posted))

    image_parts = [
        part
        for message in request.messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]
    assert [decoded_size(part) for part in image_parts] == [(20, 20), (21, 20), (22, 20)]


# --- text-only models: a placeholder, and the text OCR reads --------------------------------------


def test_it_tells_a_text_only_model_about_the_image_with_its_ocr_text(settings: Any) -> None:
    settings.INFERENCE_VISION = False
    attachment = printed_invoice()
    posted = post(attachment.conversation, "What does this say?", [attachment])

    request = prompt_build(reply_id=reply_id(posted))

    attachment.refresh_from_db()
    text = attachment.ocr_text
    assert text is not None
    assert "INVOICE 4821" in text
    assert "发票" in text
    assert request.messages[1] == {
        "role": "user",
        "content": (
            f"[The customer attached an image ({attachment.width}×{attachment.height}) that you cannot see. "
            f"Text read from it by OCR:\n{text}\n]\nWhat does this say?"
        ),
    }
    assert (attachment.width, attachment.height) == (1000, 300)
    assert "image_url" not in str(request.messages)


def test_it_reads_an_image_once_and_keeps_the_text(settings: Any) -> None:
    settings.INFERENCE_VISION = False
    attachment = printed_invoice()
    posted = post(attachment.conversation, "Invoice attached", [attachment])

    with mock.patch.object(ocr, "image_text", wraps=ocr.image_text) as image_text:
        first = prompt_build(reply_id=reply_id(posted))
        second = prompt_build(reply_id=reply_id(posted))

    assert image_text.call_count == 1
    assert first == second
    stored = Attachment.objects.get(pk=attachment.pk).ocr_text
    assert stored is not None
    assert "INVOICE 4821" in stored
    assert stored in first.messages[1]["content"]


def test_it_reads_nothing_from_a_plain_picture_and_does_not_read_it_again(settings: Any) -> None:
    settings.INFERENCE_VISION = False
    conversation = ConversationFactory()
    attachment = attachment_for(conversation, width=64, height=48)
    posted = post(conversation, "A red square", [attachment])

    with mock.patch.object(ocr, "image_text", wraps=ocr.image_text) as image_text:
        first = prompt_build(reply_id=reply_id(posted))
        prompt_build(reply_id=reply_id(posted))

    assert image_text.call_count == 1
    assert Attachment.objects.get(pk=attachment.pk).ocr_text == ""
    assert first.messages[1] == {
        "role": "user",
        "content": "[The customer attached an image (64×48) that you cannot see.]\nA red square",
    }


def test_it_tries_ocr_again_later_when_tesseract_is_missing(settings: Any) -> None:
    settings.INFERENCE_VISION = False
    conversation = ConversationFactory()
    attachment = attachment_for(conversation, width=64, height=48)
    posted = post(conversation, "", [attachment])

    with mock.patch.object(ocr, "image_text", return_value=None) as image_text:
        first = prompt_build(reply_id=reply_id(posted))
        prompt_build(reply_id=reply_id(posted))

    assert image_text.call_count == 2
    assert Attachment.objects.get(pk=attachment.pk).ocr_text is None
    assert first.messages[1] == {
        "role": "user",
        "content": "[The customer attached an image (64×48) that you cannot see.]",
    }


def test_it_sends_no_image_to_a_text_only_model_however_many_there_are(settings: Any) -> None:
    settings.INFERENCE_VISION = False
    settings.INFERENCE_MAX_IMAGES_PER_PROMPT = 4
    conversation = ConversationFactory()
    first = attachment_for(conversation, width=20, height=20)
    second = attachment_for(conversation, width=30, height=20)
    answer(post(conversation, "One", [first]), "Noted.")
    posted = post(conversation, "Two", [second])

    with mock.patch.object(ocr, "image_text", return_value="") as image_text:
        request = prompt_build(reply_id=reply_id(posted))

    assert request.messages[1:] == [
        {"role": "user", "content": "[The customer attached an image (20×20) that you cannot see.]\nOne"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "[The customer attached an image (30×20) that you cannot see.]\nTwo"},
    ]
    assert image_text.call_count == 2


# --- through the inference client, to a scripted server -------------------------------------------


def recorded_image_sizes(content: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [decoded_size(part) for part in content if part["type"] == "image_url"]


@pytest.mark.django_db(transaction=True)
def test_it_sends_the_images_to_the_inference_server(
    scripted_inference: ScriptedInferenceServer, settings: Any
) -> None:
    settings.INFERENCE_VISION = True
    scripted_inference.enqueue(Script(tokens=["The ", "box ", "is ", "dented."]))
    conversation = ConversationFactory()
    label = attachment_for(conversation, width=120, height=80)
    box = attachment_for(conversation, width=4000, height=3000, colour=(90, 60, 30))
    posted = post(conversation, "My parcel arrived like this", [label, box])

    async_to_sync(reply_generate)(reply_id=reply_id(posted))

    [request] = scripted_inference.chat_requests
    assert request.json["stream"] is True
    system, user = request.json["messages"]
    assert system["role"] == "system"
    assert user["role"] == "user"
    assert [part["type"] for part in user["content"]] == ["image_url", "image_url", "text"]
    assert user["content"][2] == {"type": "text", "text": "My parcel arrived like this"}
    assert user["content"][:2] == [image_part(label), image_part(box)]
    assert recorded_image_sizes(user["content"]) == [(120, 80), (1463, 1097)]
    reply = Message.objects.get(pk=reply_id(posted))
    assert (reply.status, reply.text) == (Message.Status.COMPLETE, "The box is dented.")


@pytest.mark.django_db(transaction=True)
def test_it_sends_the_ocr_text_to_a_text_only_inference_server(
    scripted_inference: ScriptedInferenceServer, settings: Any
) -> None:
    settings.INFERENCE_VISION = False
    attachment = printed_invoice()
    posted = post(attachment.conversation, "Is this paid?", [attachment])

    async_to_sync(reply_generate)(reply_id=reply_id(posted))

    [request] = scripted_inference.chat_requests
    user = request.json["messages"][-1]
    assert isinstance(user["content"], str)
    assert user["content"].startswith("[The customer attached an image (1000×300) that you cannot see. ")
    assert "INVOICE 4821" in user["content"]
    assert "发票" in user["content"]
    assert user["content"].endswith("]\nIs this paid?")


@pytest.mark.django_db(transaction=True)
async def test_it_brings_an_image_sent_over_the_websocket_to_the_model(
    live_replies: ScriptedInferenceServer, settings: Any
) -> None:
    settings.INFERENCE_VISION = True
    live_replies.enqueue(Script(tokens=["A ", "cat."]))
    conversation = await database_sync_to_async(ConversationFactory)()
    attachment = await database_sync_to_async(attachment_for)(conversation, width=300, height=200)
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": conversation.token})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"

    await communicator.send_json_to(
        {
            "type": "message",
            "client_id": str(uuid.uuid4()),
            "text": "What is this?",
            "attachments": [str(attachment.pk)],
        }
    )
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in ("reply.done", "reply.error"):
        frames.append(await communicator.receive_json_from(timeout=10))
    await communicator.disconnect()

    assert frames[-1]["type"] == "reply.done"
    assert frames[-1]["message"]["text"] == "A cat."
    [request] = live_replies.chat_requests
    user = request.json["messages"][-1]
    assert user["content"][0] == await database_sync_to_async(image_part)(attachment)
    assert recorded_image_sizes(user["content"]) == [(300, 200)]
    assert user["content"][1] == {"type": "text", "text": "What is this?"}
