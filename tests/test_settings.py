"""Settings that cannot work stop start-up with a sentence naming them (real settings, in a child)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def start_up(**environment: str) -> subprocess.CompletedProcess[str]:
    """Load the settings and set Django up in a fresh interpreter, as daphne and Celery do."""
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "cs_platform.settings", **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_it_starts_with_valid_proxy_and_metrics_networks() -> None:
    result = start_up(
        TRUSTED_PROXIES="10.0.0.0/8,172.18.0.5", METRICS_ALLOWED_IPS="127.0.0.1/32,::1,fd00::/8"
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("name", "value", "bad"),
    [
        ("TRUSTED_PROXIES", "10.0.0.0/33", "10.0.0.0/33"),
        ("TRUSTED_PROXIES", "172.18.0.5,nginx", "nginx"),
        ("METRICS_ALLOWED_IPS", "127.0.0.1/32,10.0.0.300", "10.0.0.300"),
        ("METRICS_ALLOWED_IPS", "::1/129", "::1/129"),
    ],
)
def test_it_refuses_to_start_with_an_invalid_network(name: str, value: str, bad: str) -> None:
    result = start_up(**{name: value})

    assert result.returncode == 1
    assert (
        f"django.core.exceptions.ImproperlyConfigured: {name} has an invalid IP address or network: {bad!r} "
        "(write addresses or CIDR networks such as 10.0.0.0/8, separated by commas)."
    ) in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        ("ATTACHMENT_MAX_DECODED_PIXELS", "0", "ATTACHMENT_MAX_DECODED_PIXELS must be a positive integer."),
        ("ATTACHMENT_MAX_JPEG_PIXELS", "-1", "ATTACHMENT_MAX_JPEG_PIXELS must be a positive integer."),
        (
            "ATTACHMENT_NORMALISE_CONCURRENCY",
            "0",
            "ATTACHMENT_NORMALISE_CONCURRENCY must be a positive integer.",
        ),
        (
            "ATTACHMENT_NORMALISE_WAIT_SECONDS",
            "-0.5",
            "ATTACHMENT_NORMALISE_WAIT_SECONDS must be zero or a positive number of seconds.",
        ),
    ],
)
def test_it_refuses_to_start_with_invalid_upload_limits(name: str, value: str, sentence: str) -> None:
    result = start_up(**{name: value})

    assert result.returncode == 1
    assert f"django.core.exceptions.ImproperlyConfigured: {sentence}" in result.stderr
