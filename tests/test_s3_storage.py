"""Attachments on S3-compatible storage (ATTACHMENT_S3_BUCKET, django-storages): an upload lands in
the bucket, image and thumbnail, private; the platform's signed links serve it; the prompt reads it
back; nothing is written to the local disk. The S3 is moto's, in-process (no network)."""

from __future__ import annotations

import importlib
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from moto import mock_aws

from conversations.models import Attachment
from inference import prompts
from tests import factories
from tests.factories import jpeg_bytes

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
BUCKET = "cs-attachments"
_addresses = itertools.count(random.randrange(2**20))


def unique_address() -> str:
    number = next(_addresses) % 2**24
    return f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}"


@pytest.fixture
def s3(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 with the platform's bucket, and the settings' S3 storage as the default storage."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        # The storage as cs_platform/settings.py builds it from the environment.
        monkeypatch.setenv("ATTACHMENT_S3_BUCKET", BUCKET)
        monkeypatch.setenv("ATTACHMENT_S3_REGION", "us-east-1")
        monkeypatch.setenv("ATTACHMENT_S3_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("ATTACHMENT_S3_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("ATTACHMENT_S3_PREFIX", "media")
        from cs_platform import settings as platform_settings

        built = importlib.reload(platform_settings).STORAGES["default"]
        settings.STORAGES = {**settings.STORAGES, "default": built}
        settings.MEDIA_ROOT = str(tmp_path / "media")
        yield client
    importlib.reload(platform_settings)


def bucket_keys(client: Any) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_the_settings_build_a_private_s3_storage(s3: Any, settings: Any) -> None:
    storage = settings.STORAGES["default"]

    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    assert storage["OPTIONS"]["bucket_name"] == BUCKET
    assert storage["OPTIONS"]["default_acl"] == "private"
    assert storage["OPTIONS"]["file_overwrite"] is False


def test_an_upload_lands_in_the_bucket_and_is_served_through_the_platform(s3: Any, settings: Any) -> None:
    conversation: Any = ConversationFactory()

    response = Client(REMOTE_ADDR=unique_address()).post(
        f"/api/widget/conversations/{conversation.pk}/attachments",
        {"file": SimpleUploadedFile("photo.jpg", jpeg_bytes(640, 480), "image/jpeg")},
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
    )

    assert response.status_code == 201, response.content
    attachment = Attachment.objects.get()
    keys = bucket_keys(s3)
    assert f"media/{attachment.image.name}" in keys
    assert f"media/{attachment.thumbnail.name}" in keys
    # Private: the bucket grants nobody but its owner.
    grants = s3.get_object_acl(Bucket=BUCKET, Key=f"media/{attachment.image.name}")["Grants"]
    assert all(grant["Grantee"].get("Type") != "Group" for grant in grants)
    # Nothing went to the local disk.
    assert not Path(settings.MEDIA_ROOT).exists() or not any(Path(settings.MEDIA_ROOT).rglob("*.*"))
    # The signed links the widget gets are the platform's own, and serve the stored bytes.
    body = response.json()
    served: Any = Client().get(body["url"])
    content = b"".join(served.streaming_content)
    stored = s3.get_object(Bucket=BUCKET, Key=f"media/{attachment.image.name}")["Body"].read()
    assert served.status_code == 200
    assert content == stored
    assert BUCKET not in body["url"]
    assert "amazonaws" not in body["url"]
    thumbnail = Client().get(body["thumbnail_url"])
    assert thumbnail.status_code == 200


def test_the_prompt_reads_the_image_back_from_the_bucket(s3: Any) -> None:
    conversation: Any = ConversationFactory()
    response = Client(REMOTE_ADDR=unique_address()).post(
        f"/api/widget/conversations/{conversation.pk}/attachments",
        {"file": SimpleUploadedFile("photo.jpg", jpeg_bytes(64, 48), "image/jpeg")},
        HTTP_AUTHORIZATION=f"Bearer {conversation.token}",
    )
    assert response.status_code == 201
    attachment = Attachment.objects.get()

    data_url = prompts._data_url(attachment)

    assert data_url.startswith("data:image/jpeg;base64,")
    assert len(data_url) > 100


def test_local_files_stay_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTACHMENT_S3_BUCKET", raising=False)
    from cs_platform import settings as platform_settings

    try:
        reloaded = importlib.reload(platform_settings)
        assert reloaded.STORAGES["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    finally:
        importlib.reload(platform_settings)
