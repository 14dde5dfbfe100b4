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


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        (
            "DATABASE_POOL_MAX_SIZE",
            "abc",
            "DATABASE_POOL_MAX_SIZE must be a whole number, not 'abc'.",
        ),
        ("ATTACHMENT_MAX_BYTES", "10MB", "ATTACHMENT_MAX_BYTES must be a whole number, not '10MB'."),
        (
            "INFERENCE_COALESCE_SECONDS",
            "nan",
            "INFERENCE_COALESCE_SECONDS must be a finite number, not 'nan'.",
        ),
        ("INFERENCE_TOTAL_TIMEOUT", "inf", "INFERENCE_TOTAL_TIMEOUT must be a finite number, not 'inf'."),
        ("OCR_WAIT_SECONDS", "ten", "OCR_WAIT_SECONDS must be a finite number, not 'ten'."),
        (
            "INFERENCE_VISION",
            "maybe",
            "INFERENCE_VISION must be true or false (true/false, 1/0, yes/no, on/off), not 'maybe'.",
        ),
        ("DEBUG", "maybe", "DEBUG must be true or false (true/false, 1/0, yes/no, on/off), not 'maybe'."),
    ],
)
def test_it_refuses_to_start_with_a_value_that_is_not_of_its_type(
    name: str, value: str, sentence: str
) -> None:
    result = start_up(**{name: value})

    assert result.returncode == 1
    assert f"django.core.exceptions.ImproperlyConfigured: {sentence}" in result.stderr
    assert "ValueError" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        (
            "WIDGET_HELLO_TIMEOUT_SECONDS",
            "-5",
            "WIDGET_HELLO_TIMEOUT_SECONDS must be a positive number of seconds.",
        ),
        (
            "WIDGET_HELLO_TIMEOUT_SECONDS",
            "0",
            "WIDGET_HELLO_TIMEOUT_SECONDS must be a positive number of seconds.",
        ),
        ("ATTACHMENT_MAX_SIDE", "0", "ATTACHMENT_MAX_SIDE must be a positive integer."),
        ("ATTACHMENT_MAX_PIXELS", "-1", "ATTACHMENT_MAX_PIXELS must be a positive integer."),
        ("WIDGET_MESSAGES_PER_MINUTE", "-3", "WIDGET_MESSAGES_PER_MINUTE must be a positive integer."),
        (
            "ATTACHMENT_URL_MAX_AGE_SECONDS",
            "0",
            "ATTACHMENT_URL_MAX_AGE_SECONDS must be a positive number of seconds.",
        ),
        (
            "REPLY_SWEEP_INTERVAL_SECONDS",
            "0",
            "REPLY_SWEEP_INTERVAL_SECONDS must be a positive number of seconds.",
        ),
        (
            "REPLY_QUEUE_TIMEOUT_SECONDS",
            "0",
            "REPLY_QUEUE_TIMEOUT_SECONDS must be a positive number of seconds.",
        ),
        ("OCR_TIMEOUT_SECONDS", "-1", "OCR_TIMEOUT_SECONDS must be a positive number of seconds."),
        ("OCR_MAX_CHARS", "0", "OCR_MAX_CHARS must be a positive integer."),
        (
            "INFERENCE_MAX_IMAGES_PER_PROMPT",
            "-1",
            "INFERENCE_MAX_IMAGES_PER_PROMPT must be zero (no images) or a positive integer.",
        ),
        (
            "DATABASE_CONN_MAX_AGE",
            "-1",
            "DATABASE_CONN_MAX_AGE must be zero or a positive number of seconds.",
        ),
        ("ALLOWED_HOSTS", "", "ALLOWED_HOSTS must name at least one host (such as support.example.com)."),
        (
            "REDIS_URL",
            "notredis://x",
            "REDIS_URL must be a redis://, rediss:// or unix:// URL, not 'notredis://x'.",
        ),
        (
            "LOG_LEVEL",
            "bogus",
            "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR or CRITICAL, not 'bogus'.",
        ),
    ],
)
def test_it_refuses_to_start_with_a_value_out_of_its_range(name: str, value: str, sentence: str) -> None:
    result = start_up(**{name: value})

    assert result.returncode == 1
    assert f"django.core.exceptions.ImproperlyConfigured: {sentence}" in result.stderr


def test_it_refuses_a_worker_concurrency_below_one_for_prefork() -> None:
    result = start_up(CELERY_WORKER_POOL="prefork", CELERY_WORKER_CONCURRENCY="-2")

    assert result.returncode == 1
    assert (
        "django.core.exceptions.ImproperlyConfigured: CELERY_WORKER_CONCURRENCY must be 0 (one per CPU) "
        "or a positive integer."
    ) in result.stderr


@pytest.mark.parametrize(
    "environment",
    [
        {"DEBUG": "yes", "INFERENCE_VISION": "off", "LOG_LEVEL": "warning"},
        {"DEBUG": "", "INFERENCE_MAX_IMAGES_PER_PROMPT": "0", "INFERENCE_COALESCE_SECONDS": "0.05"},
    ],
)
def test_it_starts_with_strict_booleans_numbers_and_a_lower_case_log_level(
    environment: dict[str, str],
) -> None:
    result = start_up(**environment)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def deploy_check(**environment: str) -> subprocess.CompletedProcess[str]:
    """`manage.py check --deploy` with production settings: not embedded, not DEBUG, a real secret."""
    production = {
        "DATABASE_URL": "postgres://cs@db.invalid:5432/cs",
        "REDIS_URL": "redis://redis.invalid:6379/0",
        "SECRET_KEY": "a-production-secret-" + "x" * 50,
        "ALLOWED_HOSTS": "support.example.com",
        "DEBUG": "false",
    }
    # Not the tests' own DJANGO_ALLOW_ASYNC_UNSAFE (the browser tests set it): a deployment has none.
    inherited = {name: value for name, value in os.environ.items() if name != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={**inherited, "DJANGO_SETTINGS_MODULE": "cs_platform.settings", **production, **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_deploy_checks_report_nothing_for_a_site_served_over_https() -> None:
    result = deploy_check(HTTPS="true")

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_deploy_checks_warn_about_a_site_on_plain_http() -> None:
    result = deploy_check()

    assert "security.W008" in result.stderr + result.stdout  # no redirect to HTTPS
    assert "security.W004" in result.stderr + result.stdout  # no HSTS
