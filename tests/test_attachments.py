"""Images end to end over HTTP: uploads refused or normalised, signed links, attachments on messages."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import random
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import ExifTags, Image

from conversations import services, uploads
from conversations.images import NormalisedImage, normalise_image
from conversations.models import Attachment, Conversation, Message
from conversations.serializers import attachment_url, message_data
from cs_platform.asgi import application
from cs_platform.upload_limit import MULTIPART_OVERHEAD_BYTES, UploadSizeLimitMiddleware
from tests import factories
from tests.factories import attachment_for, jpeg_bytes

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
ConversationFactory: Any = factories.ConversationFactory

UNSUPPORTED_FORMAT = {
    "code": "unsupported_format",
    "detail": "The file is not a supported image; send a JPEG, PNG, WebP or GIF picture.",
}
CORRUPT_IMAGE = {
    "code": "corrupt_image",
    "detail": "The image could not be read; the file may be truncated or damaged.",
}
INVALID_SIGNATURE = {"code": "invalid_signature", "detail": "This link is not valid."}
LINK_EXPIRED = {"code": "link_expired", "detail": "This link has expired; reload the conversation."}
INVALID_TOKEN = {"code": "invalid_token", "detail": "This token does not open this conversation."}
SIGNED_LINK = r"\?signature=[A-Za-z0-9_-]+:[A-Za-z0-9_-]+"

RED = (255, 0, 0)
BLUE = (0, 0, 255)

# Every test uploads from its own address: the upload rate limit (60/m per address) lives in real Redis.
_addresses = itertools.count(random.randrange(1, 2**20) * 8)


def unique_address() -> str:
    number = next(_addresses) % 2**24
    return f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}"


def upload_url(conversation: Conversation) -> str:
    return f"/api/widget/conversations/{conversation.pk}/attachments"


def upload(
    conversation: Any,
    data: bytes,
    *,
    name: str = "photo.jpg",
    content_type: str = "image/jpeg",
    token: str | None = None,
) -> Any:
    client = Client(REMOTE_ADDR=unique_address())
    response: Any = client.post(
        upload_url(conversation),
        {"file": SimpleUploadedFile(name, data, content_type)},
        HTTP_AUTHORIZATION=f"Bearer {token or conversation.token}",
    )
    return response


def fetch_response(url: str) -> tuple[Any, bytes]:
    """GET a link the way an <img> tag does, with no headers; the response and its whole body."""
    response: Any = Client().get(url)
    # Reading a streamed body to its end closes the response (the test client's own wrapper does it).
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def fetch(url: str) -> tuple[int, str, bytes]:
    """GET a link the way an <img> tag does: its status, content type and body."""
    response, body = fetch_response(url)
    return response.status_code, response["Content-Type"], body


def stored_files() -> list[str]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def noise_jpeg(width: int, height: int) -> bytes:
    pixels = random.Random(width * height).randbytes(width * height * 3)
    return encode(Image.frombytes("RGB", (width, height), pixels), "JPEG", quality=90)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def one_bit_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of zeros: about 100 KB for 30000x30000, 900 million pixels once decoded."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = bytes(1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    compressed = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", compressed)
        + png_chunk(b"IEND", b"")
    )


def exif_rotated_photo_with_gps() -> bytes:
    """Stored sideways, 400x200 (red left half, blue right half); EXIF says turn it 90° clockwise."""
    stored = Image.new("RGB", (400, 200), BLUE)
    stored.paste(RED, (0, 0, 200, 200))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "ExampleCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (31.0, 14.0, 3.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (121.0, 28.0, 15.0)
    return encode(stored, "JPEG", quality=95, exif=exif)


def assert_near(actual: Any, expected: tuple[int, int, int], tolerance: int = 12) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (actual, expected)


def signature_of(url: str) -> str:
    return url.split("?signature=", 1)[1]


def altered(signature: str) -> str:
    timestamp, digest = signature.split(":")
    return f"{timestamp}:{'B' if digest[0] == 'A' else 'A'}{digest[1:]}"


# --- refusals: each bad file has its own code, and nothing is kept -----------------------------


def assert_nothing_saved() -> None:
    assert Attachment.objects.count() == 0
    assert stored_files() == []


def test_it_refuses_a_png_that_decompresses_to_30000_by_30000_pixels() -> None:
    conversation = ConversationFactory()

    response = upload(conversation, one_bit_png(30000, 30000), name="bomb.png", content_type="image/png")

    assert response.status_code == 400
    assert response.json() == {
        "code": "too_many_pixels",
        # Pillow's own guard (for sizes far above ours) fires while the header is read.
        "detail": "The image has more pixels than the limit of 16,777,216 pixels.",
    }
    assert_nothing_saved()


def test_it_refuses_a_truncated_jpeg() -> None:
    conversation = ConversationFactory()
    data = noise_jpeg(256, 256)

    response = upload(conversation, data[: len(data) // 2])

    assert response.status_code == 400
    assert response.json() == CORRUPT_IMAGE
    assert_nothing_saved()


def test_it_refuses_a_text_file_named_jpg() -> None:
    conversation = ConversationFactory()

    response = upload(conversation, b"Dear support, my order never arrived.\n" * 20, name="order.jpg")

    assert response.status_code == 400
    assert response.json() == UNSUPPORTED_FORMAT
    assert_nothing_saved()


def test_it_refuses_an_svg_with_a_script() -> None:
    conversation = ConversationFactory()
    svg = (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(document.cookie)</script><rect width='10' height='10'/></svg>"
    )

    response = upload(conversation, svg, name="logo.svg", content_type="image/svg+xml")

    assert response.status_code == 400
    assert response.json() == UNSUPPORTED_FORMAT
    assert_nothing_saved()


def test_it_refuses_an_svg_sent_as_a_jpeg() -> None:
    conversation = ConversationFactory()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="4"/></svg>'

    response = upload(conversation, svg, name="photo.jpg", content_type="image/jpeg")

    assert response.status_code == 400
    assert response.json() == UNSUPPORTED_FORMAT
    assert_nothing_saved()


def test_it_refuses_a_pdf() -> None:
    conversation = ConversationFactory()
    pdf = encode(Image.new("RGB", (50, 50), RED), "PDF")
    assert pdf.startswith(b"%PDF-")

    response = upload(conversation, pdf, name="invoice.pdf", content_type="application/pdf")

    assert response.status_code == 400
    assert response.json() == UNSUPPORTED_FORMAT
    assert_nothing_saved()


def test_it_refuses_a_bmp_though_pillow_reads_it() -> None:
    conversation = ConversationFactory()

    response = upload(
        conversation, encode(Image.new("RGB", (20, 20), RED), "BMP"), name="a.bmp", content_type="image/bmp"
    )

    assert response.status_code == 400
    assert response.json() == UNSUPPORTED_FORMAT
    assert_nothing_saved()


def test_it_refuses_a_zero_byte_file() -> None:
    conversation = ConversationFactory()

    response = upload(conversation, b"")

    assert response.status_code == 400
    assert response.json() == {"code": "empty_file", "detail": "The file is empty."}
    assert_nothing_saved()


def test_it_refuses_a_file_over_the_limit_with_413(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = 2048
    conversation = ConversationFactory()
    data = noise_jpeg(64, 64)
    assert len(data) > 2048

    response = upload(conversation, data)

    assert response.status_code == 413
    assert response.json() == {"code": "too_large", "detail": "The file is larger than the 2 KB limit."}
    assert_nothing_saved()


def test_it_accepts_a_file_exactly_at_the_limit(settings: Any) -> None:
    data = noise_jpeg(64, 64)
    settings.ATTACHMENT_MAX_BYTES = len(data)
    conversation = ConversationFactory()

    response = upload(conversation, data)

    assert response.status_code == 201
    assert Attachment.objects.get().original_size == len(data)


def test_it_asks_for_the_file_field_when_it_is_missing() -> None:
    conversation = ConversationFactory()

    response = Client(REMOTE_ADDR=unique_address()).post(
        upload_url(conversation),
        {"picture": SimpleUploadedFile("photo.jpg", jpeg_bytes(), "image/jpeg")},
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": "no_file",
        "detail": "Send the image as multipart form data in the field 'file'.",
    }
    assert_nothing_saved()


def test_it_refuses_an_upload_without_a_token() -> None:
    conversation = ConversationFactory()

    response = Client(REMOTE_ADDR=unique_address()).post(
        upload_url(conversation), {"file": SimpleUploadedFile("photo.jpg", jpeg_bytes(), "image/jpeg")}
    )

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert_nothing_saved()


def test_it_refuses_an_upload_with_another_customers_token() -> None:
    conversation = ConversationFactory()
    someone_else = ConversationFactory()

    response = upload(conversation, jpeg_bytes(), token=someone_else.token)

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert_nothing_saved()


def test_it_refuses_a_61st_upload_in_a_minute_from_one_address(settings: Any) -> None:
    # The address's limit is under test: the conversation's own (20/m by default) is out of the way.
    settings.RATE_LIMIT_UPLOADS_PER_CONVERSATION = "1000/m"
    conversation = ConversationFactory()
    client = Client(REMOTE_ADDR=unique_address())
    data = jpeg_bytes(8, 8)

    def post() -> Any:
        response: Any = client.post(
            upload_url(conversation),
            {"file": SimpleUploadedFile("photo.jpg", data, "image/jpeg")},
            HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
        )
        return response

    # Freeze django-ratelimit's clock so that the 60 uploads cannot straddle two windows.
    frozen = mock.Mock(time=mock.Mock(return_value=time.time()))
    with mock.patch("django_ratelimit.core.time", frozen):
        statuses = [post().status_code for _ in range(60)]
        refused = post()

    assert statuses == [201] * 60
    assert refused.status_code == 429
    assert refused.json() == {"code": "rate_limited", "detail": "Too many uploads; please wait a minute."}
    assert Attachment.objects.count() == 60


def test_it_refuses_a_7000_by_7000_png_by_default() -> None:
    conversation = ConversationFactory()

    response = upload(conversation, one_bit_png(7000, 7000), name="bomb.png", content_type="image/png")

    assert response.status_code == 400
    assert response.json() == {
        "code": "too_many_pixels",
        "detail": "The image is 7000x7000 pixels, more than the limit of 16,777,216 pixels.",
    }
    assert_nothing_saved()


def test_it_takes_the_decoded_pixel_limit_from_the_settings(settings: Any) -> None:
    settings.ATTACHMENT_MAX_DECODED_PIXELS = 9_999
    conversation = ConversationFactory()
    picture = encode(Image.new("RGB", (100, 100), RED), "PNG")

    response = upload(conversation, picture, name="square.png", content_type="image/png")

    assert response.status_code == 400
    assert response.json() == {
        "code": "too_many_pixels",
        "detail": "The image is 100x100 pixels, more than the limit of 9,999 pixels.",
    }
    assert_nothing_saved()


def test_it_accepts_a_12_megapixel_phone_photo() -> None:
    conversation = ConversationFactory()
    photo = encode(Image.linear_gradient("L").resize((4032, 3024)).convert("RGB"), "JPEG", quality=85)

    response = upload(conversation, photo)

    assert response.status_code == 201
    assert (response.json()["width"], response.json()["height"]) == (1463, 1097)  # ATTACHMENT_MAX_PIXELS
    attachment = Attachment.objects.get()
    assert (attachment.original_width, attachment.original_height) == (4032, 3024)


# --- a bounded number of uploads is normalised at once per process --------------------------------


class SignallingSlots(threading.BoundedSemaphore):
    """The uploads' semaphore, telling the test each time someone starts waiting for a slot."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.acquiring = threading.Semaphore(0)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        self.acquiring.release()
        return super().acquire(blocking, timeout)


class HeldNormalisations:
    """Stands in for normalise_image: each call holds its slot until `release` is set."""

    def __init__(self, concurrency: int) -> None:
        self.slots = SignallingSlots(concurrency)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.running = 0
        self.most_running = 0
        self.holders: list[threading.Thread] = []
        self.results: list[NormalisedImage] = []

    def __call__(self, source: Any, **limits: Any) -> NormalisedImage:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.entered.release()
        try:
            assert self.release.wait(timeout=30), "the test never released the held normalisations"
            return normalise_image(source, **limits)
        finally:
            with self.lock:
                self.running -= 1

    def start_holders(self, count: int) -> None:
        """Start `count` uploads and return once each is inside the decoder, holding its slot."""
        for _ in range(count):
            holder = threading.Thread(
                target=lambda: self.results.append(uploads.image_normalise(jpeg_bytes()))
            )
            holder.start()
            self.holders.append(holder)
        for _ in range(count):
            assert self.entered.acquire(timeout=10)

    def finish(self) -> None:
        """Let every held upload complete, and wait until their slots are free again."""
        self.release.set()
        for holder in self.holders:
            holder.join(timeout=30)
            assert not holder.is_alive()


@pytest.fixture
def held(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldNormalisations]:
    """Two normalisation slots per process, both taken by uploads that stay in the decoder until released."""
    settings.ATTACHMENT_NORMALISE_CONCURRENCY = 2
    settings.ATTACHMENT_NORMALISE_WAIT_SECONDS = 0
    fake = HeldNormalisations(2)
    monkeypatch.setattr(uploads, "normalise_image", fake)
    monkeypatch.setattr(uploads, "_slots", lambda concurrency: fake.slots)
    fake.start_holders(2)
    try:
        yield fake
    finally:
        fake.finish()
    assert len(fake.results) == 2


def test_it_refuses_a_third_normalisation_while_two_are_running(held: HeldNormalisations) -> None:
    with pytest.raises(uploads.UploadsBusy) as caught:
        uploads.image_normalise(jpeg_bytes())

    assert caught.value.code == "busy"
    assert caught.value.http_status == 503
    assert caught.value.retry_after == 2
    assert held.calls == 2


def test_it_lets_a_third_normalisation_wait_for_a_free_slot(settings: Any, held: HeldNormalisations) -> None:
    settings.ATTACHMENT_NORMALISE_WAIT_SECONDS = 30
    results: list[NormalisedImage] = []
    third = threading.Thread(target=lambda: results.append(uploads.image_normalise(jpeg_bytes())))
    third.start()
    # The two holders' acquisitions were signalled already; this one is the third's.
    for _ in range(3):
        assert held.slots.acquiring.acquire(timeout=10)
    assert held.calls == 2

    held.finish()
    third.join(timeout=30)

    assert len(results) == 1
    assert held.calls == 3
    assert held.most_running == 2


def test_it_answers_503_busy_with_retry_after_and_keeps_nothing(held: HeldNormalisations) -> None:
    conversation = ConversationFactory()
    photo = jpeg_bytes()

    response = upload(conversation, photo)

    assert response.status_code == 503
    assert response.json() == {
        "code": "busy",
        "detail": "Too many pictures are being processed right now; send it again in 2 s.",
    }
    assert response["Retry-After"] == "2"
    assert_nothing_saved()
    assert held.calls == 2

    held.finish()
    retried = upload(conversation, photo)

    assert retried.status_code == 201
    assert Attachment.objects.count() == 1


# --- refused while the body streams: the ASGI middleware ---------------------------------------


def http_scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), *(headers or [])],
        "client": (unique_address(), 50000),
        "server": ("localhost", 80),
    }


class ChunkedBody:
    """An ASGI `receive` serving `count` body chunks of `size` bytes, counting what was pulled."""

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self.chunk = b"x" * size
        self.calls = 0
        self.bytes_pulled = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls > self.count:
            return {"type": "http.disconnect"}
        self.bytes_pulled += len(self.chunk)
        return {"type": "http.request", "body": self.chunk, "more_body": self.calls < self.count}


class Sent:
    """An ASGI `send` that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [message["status"] for message in self.messages if message["type"] == "http.response.start"]
        assert len(starts) <= 1, starts
        return starts[0] if starts else None

    @property
    def json(self) -> Any:
        return json.loads(
            b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")
        )


class BodyReadingApp:
    """A stand-in for Django's ASGI handler: reads the whole body first, gives up on a disconnect."""

    def __init__(self) -> None:
        self.called = False
        self.received: list[str] = []
        self.body_bytes = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            self.received.append(message["type"])
            if message["type"] == "http.disconnect":
                return
            self.body_bytes += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def limited(app: Any) -> Any:
    """The middleware around a stand-in app (typed loosely: the stand-ins are not asgiref's exact types)."""
    return UploadSizeLimitMiddleware(app)


TOO_LARGE_1_MB = {"code": "too_large", "detail": "The file is larger than the 1 MB limit."}
CHUNK = 64 * 1024


async def test_it_cuts_off_a_streaming_upload_once_it_passes_the_limit(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = 1024 * 1024
    limit = 1024 * 1024 + MULTIPART_OVERHEAD_BYTES
    body = ChunkedBody(count=1000, size=CHUNK)  # 64 MB on offer
    sent = Sent()
    app = BodyReadingApp()

    await limited(app)(http_scope(f"/api/widget/conversations/{uuid.uuid4()}/attachments"), body, sent)

    assert sent.status == 413
    assert sent.messages[0]["headers"] == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(json.dumps(TOO_LARGE_1_MB))).encode()),
        (b"connection", b"close"),
    ]
    assert sent.json == TOO_LARGE_1_MB
    # 17 chunks are exactly the limit; the 18th passes it and is the last one pulled.
    assert limit == 17 * CHUNK
    assert body.calls == 18
    assert body.bytes_pulled == limit + CHUNK
    assert app.received == ["http.request"] * 17 + ["http.disconnect"]


async def test_it_cuts_off_a_body_longer_than_its_declared_length(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = 1024 * 1024
    body = ChunkedBody(count=1000, size=CHUNK)
    sent = Sent()
    app = BodyReadingApp()

    await limited(app)(
        http_scope("/api/widget/conversations/abc/attachments", [(b"content-length", b"1000")]), body, sent
    )

    assert sent.status == 413
    assert sent.json == TOO_LARGE_1_MB
    assert body.calls == 18


async def test_it_refuses_a_declared_length_over_the_limit_without_reading_the_body(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = 1024 * 1024
    declared = 1024 * 1024 + MULTIPART_OVERHEAD_BYTES + 1
    body = ChunkedBody(count=1000, size=CHUNK)
    sent = Sent()
    app = BodyReadingApp()

    await limited(app)(
        http_scope(
            "/api/widget/conversations/abc/attachments/", [(b"content-length", str(declared).encode())]
        ),
        body,
        sent,
    )

    assert sent.status == 413
    assert sent.json == TOO_LARGE_1_MB
    assert body.calls == 0
    assert app.called is False


async def test_it_lets_an_upload_within_the_limit_through_whole(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = 1024 * 1024
    declared = 1024 * 1024 + MULTIPART_OVERHEAD_BYTES
    body = ChunkedBody(count=17, size=CHUNK)
    sent = Sent()
    app = BodyReadingApp()

    await limited(app)(
        http_scope(
            "/api/widget/conversations/abc/attachments", [(b"content-length", str(declared).encode())]
        ),
        body,
        sent,
    )

    assert sent.status == 201
    assert app.body_bytes == declared
    assert app.received == ["http.request"] * 17


async def test_it_does_not_limit_other_paths(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = 1024 * 1024
    body = ChunkedBody(count=40, size=CHUNK)
    sent = Sent()
    app = BodyReadingApp()

    await limited(app)(
        http_scope("/api/widget/conversations", [(b"content-length", str(40 * CHUNK).encode())]), body, sent
    )

    assert sent.status == 201
    assert app.body_bytes == 40 * CHUNK


async def test_it_cuts_off_a_streaming_upload_in_the_real_asgi_application(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = 1024 * 1024
    body = ChunkedBody(count=1000, size=CHUNK)
    sent = Sent()

    await application(
        http_scope(
            f"/api/widget/conversations/{uuid.uuid4()}/attachments", [(b"authorization", b"Bearer x")]
        ),
        body,
        sent,
    )

    assert sent.status == 413
    assert sent.json == TOO_LARGE_1_MB
    assert body.calls == 18
    assert [message["type"] for message in sent.messages] == ["http.response.start", "http.response.body"]


@pytest.mark.django_db(transaction=True)
async def test_it_refuses_an_oversized_upload_over_http_in_the_real_asgi_application(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = 1024 * 1024
    conversation = await database_sync_to_async(ConversationFactory)()
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(200):  # 12.5 MB, streamed with no Content-Length
            pulled += CHUNK
            yield b"x" * CHUNK

    transport = httpx.ASGITransport(app=application, client=(unique_address(), 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        declared = await client.post(
            upload_url(conversation),
            files={"file": ("big.jpg", b"x" * (2 * 1024 * 1024), "image/jpeg")},
            headers={"Authorization": f"Bearer {conversation.token}"},
        )
        streamed = await client.post(
            upload_url(conversation),
            content=body(),
            headers={
                "Authorization": f"Bearer {conversation.token}",
                "Content-Type": "multipart/form-data; boundary=xyz",
            },
        )

    assert declared.status_code == 413
    assert declared.json() == TOO_LARGE_1_MB
    assert streamed.status_code == 413
    assert streamed.json() == TOO_LARGE_1_MB
    assert pulled <= 1024 * 1024 + MULTIPART_OVERHEAD_BYTES + CHUNK
    assert await database_sync_to_async(Attachment.objects.count)() == 0
    assert stored_files() == []


@pytest.mark.django_db(transaction=True)
async def test_it_accepts_an_upload_within_the_limit_in_the_real_asgi_application() -> None:
    conversation = await database_sync_to_async(ConversationFactory)()

    transport = httpx.ASGITransport(app=application, client=(unique_address(), 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        response = await client.post(
            upload_url(conversation),
            files={"file": ("photo.jpg", jpeg_bytes(64, 48), "image/jpeg")},
            headers={"Authorization": f"Bearer {conversation.token}"},
        )

    assert response.status_code == 201
    attachment = await database_sync_to_async(Attachment.objects.get)()
    assert response.json()["id"] == str(attachment.pk)
    assert (attachment.width, attachment.height, attachment.conversation_id) == (64, 48, conversation.pk)


# --- good files -----------------------------------------------------------------------------------


def test_it_stores_an_exif_rotated_photo_upright_without_exif_or_gps() -> None:
    conversation = ConversationFactory()
    source = exif_rotated_photo_with_gps()
    with Image.open(io.BytesIO(source)) as original:
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo) != {}

    response = upload(conversation, source)

    assert response.status_code == 201
    attachment = Attachment.objects.get()
    assert (attachment.width, attachment.height) == (200, 400)
    assert (attachment.original_width, attachment.original_height) == (200, 400)
    stored = Path(attachment.image.path).read_bytes()
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG"
        assert image.size == (200, 400)
        assert dict(image.getexif()) == {}
        assert image.getexif().get_ifd(ExifTags.IFD.GPSInfo) == {}
        assert "exif" not in image.info
        # Upright: the left half of the sideways original is now on top.
        rgb = image.convert("RGB")
        assert_near(rgb.getpixel((100, 80)), RED)
        assert_near(rgb.getpixel((100, 320)), BLUE)
    assert b"Exif\x00\x00" not in stored
    assert b"ExampleCam" not in stored
    status, _, served = fetch(response.json()["url"])
    assert status == 200
    assert served == stored


def test_it_scales_a_large_photo_within_the_side_and_pixel_limits() -> None:
    conversation = ConversationFactory()
    source = encode(Image.new("RGB", (4000, 3000), (10, 120, 200)), "JPEG", quality=90)

    response = upload(conversation, source, name="DSC_0001.JPG")

    assert response.status_code == 201
    attachment = Attachment.objects.get()
    assert (attachment.width, attachment.height) == (1463, 1097)
    assert max(attachment.width, attachment.height) <= settings.ATTACHMENT_MAX_SIDE
    assert attachment.width * attachment.height <= settings.ATTACHMENT_MAX_PIXELS
    with Image.open(attachment.image.path) as image:
        assert image.size == (1463, 1097)
    with Image.open(attachment.thumbnail.path) as thumbnail:
        assert thumbnail.size == (320, 240)
    assert (attachment.original_width, attachment.original_height) == (4000, 3000)
    assert attachment.original_name == "DSC_0001.JPG"
    assert attachment.original_content_type == "image/jpeg"
    assert attachment.original_size == len(source)


def test_it_answers_with_the_stored_attachment() -> None:
    conversation = ConversationFactory()

    response = upload(conversation, jpeg_bytes(64, 48), name="screenshot.png.jpg")

    assert response.status_code == 201
    attachment = Attachment.objects.get()
    body = response.json()
    assert set(body) == {"id", "content_type", "width", "height", "url", "thumbnail_url"}
    assert body["id"] == str(attachment.pk)
    assert body["content_type"] == "image/jpeg" == attachment.content_type
    assert (body["width"], body["height"]) == (attachment.width, attachment.height) == (64, 48)
    assert re.fullmatch(rf"/api/widget/attachments/{attachment.pk}/image{SIGNED_LINK}", body["url"])
    assert re.fullmatch(
        rf"/api/widget/attachments/{attachment.pk}/thumbnail{SIGNED_LINK}", body["thumbnail_url"]
    )
    stored = Path(attachment.image.path).read_bytes()
    assert attachment.size == len(stored)
    assert attachment.sha256 == hashlib.sha256(stored).hexdigest()
    assert attachment.conversation_id == conversation.pk
    assert attachment.message_id is None
    assert stored_files() == [
        f"attachments/{attachment.sha256[:2]}/{attachment.sha256}.jpg",
        f"attachments/{attachment.sha256[:2]}/{attachment.sha256}.thumb.jpg",
    ]


def test_it_stores_the_same_image_once_for_two_uploads() -> None:
    conversation = ConversationFactory()
    other_conversation = ConversationFactory()
    data = noise_jpeg(120, 90)

    first = upload(conversation, data)
    second = upload(other_conversation, data, name="again.jpg")

    assert (first.status_code, second.status_code) == (201, 201)
    first_row = Attachment.objects.get(pk=first.json()["id"])
    second_row = Attachment.objects.get(pk=second.json()["id"])
    assert first_row.pk != second_row.pk
    assert first_row.sha256 == second_row.sha256
    assert first_row.image.name == second_row.image.name
    assert first_row.thumbnail.name == second_row.thumbnail.name
    assert stored_files() == [first_row.image.name, first_row.thumbnail.name]
    assert Attachment.objects.count() == 2


# --- signed links ---------------------------------------------------------------------------------


def test_it_serves_the_image_to_a_signed_link_without_any_header() -> None:
    conversation = ConversationFactory()
    body = upload(conversation, noise_jpeg(100, 80)).json()
    attachment = Attachment.objects.get()

    response, served = fetch_response(body["url"])

    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert served == Path(attachment.image.path).read_bytes()
    assert response["Cache-Control"] == "private, max-age=3600"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == "inline"


def test_it_serves_the_thumbnail_to_its_signed_link() -> None:
    conversation = ConversationFactory()
    body = upload(conversation, noise_jpeg(1000, 500)).json()
    attachment = Attachment.objects.get()

    status, content_type, served = fetch(body["thumbnail_url"])

    assert (status, content_type) == (200, "image/jpeg")
    assert served == Path(attachment.thumbnail.path).read_bytes()
    with Image.open(io.BytesIO(served)) as thumbnail:
        assert thumbnail.size == (320, 160)


def test_it_refuses_an_altered_signature() -> None:
    attachment = attachment_for(ConversationFactory())
    url = attachment_url(attachment)
    path, signature = url.split("?signature=")

    status, _, body = fetch(f"{path}?signature={altered(signature)}")

    assert status == 403
    assert json.loads(body) == INVALID_SIGNATURE


def test_it_refuses_a_link_without_a_signature() -> None:
    attachment = attachment_for(ConversationFactory())
    path = attachment_url(attachment).split("?")[0]

    assert fetch(path)[0] == 403
    assert json.loads(fetch(path)[2]) == INVALID_SIGNATURE
    assert json.loads(fetch(f"{path}?signature=")[2]) == INVALID_SIGNATURE


def test_it_refuses_another_attachments_signature() -> None:
    conversation = ConversationFactory()
    attachment = attachment_for(conversation, colour=(1, 2, 3))
    other = attachment_for(conversation, colour=(200, 200, 0))

    status, _, body = fetch(
        f"/api/widget/attachments/{attachment.pk}/image?signature={signature_of(attachment_url(other))}"
    )

    assert status == 403
    assert json.loads(body) == INVALID_SIGNATURE


def test_it_refuses_an_expired_link(settings: Any) -> None:
    attachment = attachment_for(ConversationFactory())
    with mock.patch("time.time", return_value=time.time() - settings.ATTACHMENT_URL_MAX_AGE_SECONDS - 2):
        expired = attachment_url(attachment)
    with mock.patch("time.time", return_value=time.time() - settings.ATTACHMENT_URL_MAX_AGE_SECONDS + 60):
        still_valid = attachment_url(attachment)

    status, _, body = fetch(expired)

    assert status == 403
    assert json.loads(body) == LINK_EXPIRED
    assert fetch(still_valid)[0] == 200


def test_it_refuses_a_link_once_the_maximum_age_is_lowered_below_its_age(settings: Any) -> None:
    attachment = attachment_for(ConversationFactory())
    url = attachment_url(attachment)
    settings.ATTACHMENT_URL_MAX_AGE_SECONDS = 0

    with mock.patch("time.time", return_value=time.time() + 1):
        status, _, body = fetch(url)

    assert status == 403
    assert json.loads(body) == LINK_EXPIRED


def test_it_does_not_open_the_image_with_a_thumbnail_signature() -> None:
    attachment = attachment_for(ConversationFactory())
    thumbnail_signature = signature_of(attachment_url(attachment, variant="thumbnail"))
    image_signature = signature_of(attachment_url(attachment))

    image_status, _, image_body = fetch(
        f"/api/widget/attachments/{attachment.pk}/image?signature={thumbnail_signature}"
    )
    thumbnail_status, _, thumbnail_body = fetch(
        f"/api/widget/attachments/{attachment.pk}/thumbnail?signature={image_signature}"
    )

    assert (image_status, json.loads(image_body)) == (403, INVALID_SIGNATURE)
    assert (thumbnail_status, json.loads(thumbnail_body)) == (403, INVALID_SIGNATURE)


def test_it_answers_404_for_a_signed_link_to_a_deleted_attachment() -> None:
    attachment = attachment_for(ConversationFactory())
    url = attachment_url(attachment)
    Attachment.objects.filter(pk=attachment.pk).delete()

    status, _, body = fetch(url)

    assert status == 404
    assert json.loads(body) == {"code": "not_found", "detail": "No such attachment."}


def test_it_refuses_another_customers_token_for_the_history() -> None:
    conversation = ConversationFactory()
    attachment = attachment_for(conversation)
    services.message_post(conversation=conversation, text="See picture", attachment_ids=[attachment.pk])
    someone_else = ConversationFactory()

    response = Client().get(
        f"/api/widget/conversations/{conversation.pk}/messages",
        HTTP_AUTHORIZATION=f"Bearer {someone_else.token}",
    )

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


def test_it_returns_fresh_links_in_the_history() -> None:
    conversation = ConversationFactory()
    body = upload(conversation, noise_jpeg(80, 60)).json()
    services.message_post(conversation=conversation, text="Here", attachment_ids=[uuid.UUID(body["id"])])
    two_hours_later = time.time() + 7200

    with mock.patch("time.time", return_value=two_hours_later):
        old_link_status, _, old_link_body = fetch(body["url"])
        history = Client().get(
            f"/api/widget/conversations/{conversation.pk}/messages",
            HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
        )
        fresh = history.json()["messages"][0]["attachments"][0]
        fresh_image = fetch(fresh["url"])
        fresh_thumbnail = fetch(fresh["thumbnail_url"])

    assert (old_link_status, json.loads(old_link_body)) == (403, LINK_EXPIRED)
    assert fresh["id"] == body["id"]
    assert fresh["url"] != body["url"]
    assert (fresh_image[0], fresh_image[1]) == (200, "image/jpeg")
    assert (fresh_thumbnail[0], fresh_thumbnail[1]) == (200, "image/jpeg")


# --- attachments on messages ------------------------------------------------------------------------


def test_it_attaches_uploads_to_a_message_in_the_order_sent() -> None:
    conversation = ConversationFactory()
    first, second, third = (
        uuid.UUID(upload(conversation, noise_jpeg(40 + index, 30)).json()["id"]) for index in range(3)
    )

    posted = services.message_post(
        conversation=conversation, text="Three pictures", attachment_ids=[third, first, second]
    )

    positions = {
        attachment.pk: (attachment.message_id, attachment.position) for attachment in Attachment.objects.all()
    }
    assert positions == {
        third: (posted.message.pk, 0),
        first: (posted.message.pk, 1),
        second: (posted.message.pk, 2),
    }
    response = Client().get(
        f"/api/widget/conversations/{conversation.pk}/messages",
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
    )
    [message] = [item for item in response.json()["messages"] if item["role"] == "customer"]
    assert [attachment["id"] for attachment in message["attachments"]] == [
        str(third),
        str(first),
        str(second),
    ]
    assert [attachment["width"] for attachment in message["attachments"]] == [42, 40, 41]


def test_it_sends_a_message_with_only_images() -> None:
    conversation = ConversationFactory()
    attachment = attachment_for(conversation)

    posted = services.message_post(conversation=conversation, text="  ", attachment_ids=[attachment.pk])

    assert posted.created is True
    assert posted.message.text == ""
    assert [a.pk for a in posted.message.attachments.all()] == [attachment.pk]


def assert_message_refused(
    conversation: Conversation, attachment_ids: list[uuid.UUID], capture_on_commit: Any
) -> None:
    messages_before = list(Message.objects.values_list("pk", flat=True))
    attachments_before = list(Attachment.objects.order_by("pk").values_list("pk", "message_id", "position"))
    last_message_at = Conversation.objects.get(pk=conversation.pk).last_message_at

    with capture_on_commit(execute=True) as callbacks, pytest.raises(services.ServiceError) as caught:
        services.message_post(conversation=conversation, text="Look", attachment_ids=attachment_ids)

    assert callbacks == []
    assert caught.value.code == "unknown_attachment"
    assert caught.value.detail == "An attachment was not found in this conversation."
    assert list(Message.objects.values_list("pk", flat=True)) == messages_before
    assert (
        list(Attachment.objects.order_by("pk").values_list("pk", "message_id", "position"))
        == attachments_before
    )
    assert Conversation.objects.get(pk=conversation.pk).last_message_at == last_message_at


def test_it_refuses_an_attachment_from_another_conversation(
    enqueued_replies: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    conversation = ConversationFactory()
    mine = attachment_for(conversation)
    theirs = attachment_for(ConversationFactory(), colour=(0, 0, 0))

    assert_message_refused(conversation, [mine.pk, theirs.pk], django_capture_on_commit_callbacks)

    assert enqueued_replies == []


def test_it_copies_an_attachment_already_sent_when_a_message_is_retried(
    enqueued_replies: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    conversation = ConversationFactory()
    attachment = attachment_for(conversation)
    with django_capture_on_commit_callbacks(execute=True):
        first = services.message_post(conversation=conversation, text="Look", attachment_ids=[attachment.pk])

    with django_capture_on_commit_callbacks(execute=True):
        retry = services.message_post(conversation=conversation, text="Look", attachment_ids=[attachment.pk])

    assert retry.created is True
    assert retry.reply is not None
    assert first.reply is not None
    assert enqueued_replies == [first.reply.pk, retry.reply.pk]
    attachment.refresh_from_db()
    assert (attachment.message_id, attachment.position) == (first.message.pk, 0)
    copy = Attachment.objects.get(message=retry.message)
    assert copy.pk != attachment.pk
    assert copy.conversation_id == conversation.pk
    assert (copy.image.name, copy.thumbnail.name, copy.sha256) == (
        attachment.image.name,
        attachment.thumbnail.name,
        attachment.sha256,
    )
    assert (copy.width, copy.height, copy.size) == (attachment.width, attachment.height, attachment.size)


def test_it_refuses_an_unknown_attachment_id(
    enqueued_replies: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    conversation = ConversationFactory()

    assert_message_refused(conversation, [uuid.uuid4()], django_capture_on_commit_callbacks)

    assert enqueued_replies == []


def test_it_refuses_more_attachments_than_a_message_may_carry(settings: Any) -> None:
    settings.ATTACHMENT_MAX_PER_MESSAGE = 2
    conversation = ConversationFactory()
    attachments = [attachment_for(conversation, colour=(index, 0, 0)) for index in range(3)]

    with pytest.raises(services.ServiceError) as caught:
        services.message_post(conversation=conversation, text="", attachment_ids=[a.pk for a in attachments])

    assert caught.value.code == "too_many_attachments"
    assert Message.objects.count() == 0
    assert list(Attachment.objects.values_list("message_id", flat=True)) == [None, None, None]


@pytest.mark.django_db(transaction=True)
async def test_it_sends_uploaded_images_with_a_websocket_message() -> None:
    conversation = await database_sync_to_async(ConversationFactory)()
    first = await database_sync_to_async(upload)(conversation, noise_jpeg(50, 40))
    second = await database_sync_to_async(upload)(conversation, noise_jpeg(60, 40))
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": conversation.token})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"
    client_id = str(uuid.uuid4())

    await communicator.send_json_to(
        {
            "type": "message",
            "client_id": client_id,
            "text": "Both pictures",
            "attachments": [second.json()["id"], first.json()["id"]],
        }
    )
    accepted = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert accepted["type"] == "message.accepted"
    assert accepted["client_id"] == client_id
    assert [a["id"] for a in accepted["message"]["attachments"]] == [second.json()["id"], first.json()["id"]]
    assert [(a["width"], a["height"]) for a in accepted["message"]["attachments"]] == [(60, 40), (50, 40)]
    for attachment in accepted["message"]["attachments"]:
        status, content_type, _ = await database_sync_to_async(fetch)(attachment["url"])
        assert (status, content_type) == (200, "image/jpeg")
    message = await database_sync_to_async(Message.objects.get)(pk=accepted["message"]["id"])
    expected = await database_sync_to_async(lambda: message_data(message))()
    assert [a["id"] for a in expected["attachments"]] == [second.json()["id"], first.json()["id"]]


async def test_it_cuts_off_a_gateway_body_past_its_own_limit_in_openais_shape(settings: Any) -> None:
    settings.GATEWAY_MAX_REQUEST_BYTES = 2 * CHUNK
    body = ChunkedBody(count=1000, size=CHUNK)
    sent = Sent()
    app = BodyReadingApp()

    await limited(app)(http_scope("/v1/chat/completions"), body, sent)

    assert sent.status == 413
    assert sent.json == {
        "error": {
            "message": f"The request body is over {2 * CHUNK} bytes.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    assert body.calls == 3
    assert app.received == ["http.request"] * 2 + ["http.disconnect"]


async def test_it_lets_a_gateway_body_under_its_limit_through_past_the_uploads(settings: Any) -> None:
    settings.ATTACHMENT_MAX_BYTES = CHUNK
    settings.GATEWAY_MAX_REQUEST_BYTES = 100 * CHUNK
    body = ChunkedBody(count=10, size=CHUNK)
    sent = Sent()
    app = BodyReadingApp()

    await limited(app)(http_scope("/v1/chat/completions"), body, sent)

    assert sent.status == 201
    assert app.body_bytes == 10 * CHUNK
