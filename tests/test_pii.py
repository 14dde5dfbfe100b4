"""Personal data masked: what is found (and what only looks like it), the log lines a real process
writes through the configured handlers, the reports' CSV and page, and the prompt when
PII_MASK_BEFORE_MODEL is on."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, Message
from cs_platform.pii import id_number_valid, luhn_valid, pii_mask
from inference import prompts
from tests import factories
from tests.factories import make_user

ROOT = Path(__file__).resolve().parents[1]
ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

# The fixture's personal data: a valid ID (check digit X), a card passing Luhn, a mobile, an e-mail.
ID_NUMBER = "11010519491231002X"
CARD = "6222021234567890128"
MOBILE = "13812345678"
EMAIL = "zhang.san@example.com"
PERSONAL = (ID_NUMBER, CARD, MOBILE, EMAIL, "1234567890128", "zhang.san")
TEXT = f"身份证 {ID_NUMBER}，卡号 {CARD}，手机 {MOBILE}，邮箱 {EMAIL}。"


def test_the_fixture_is_valid_personal_data() -> None:
    assert id_number_valid(ID_NUMBER)
    assert luhn_valid(CARD)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (ID_NUMBER, "**************002X"),
        ("11010519491231002x", "**************002x"),
        (CARD, "***************0128"),
        ("4111 1111 1111 1111", "**** **** **** 1111"),
        ("4111-1111-1111-1111", "****-****-****-1111"),
        (MOBILE, "138****5678"),
        ("138 1234 5678", "138****5678"),
        ("+86 138-1234-5678", "138****5678"),
        (EMAIL, "z***@example.com"),
        (f"Call {MOBILE} or mail {EMAIL}.", "Call 138****5678 or mail z***@example.com."),
        (
            TEXT,
            "身份证 **************002X，卡号 ***************0128，手机 138****5678，邮箱 z***@example.com。",
        ),
    ],
)
def test_personal_data_is_masked(text: str, masked: str) -> None:
    assert pii_mask(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "110105194912310021",  # 18 digits, wrong check digit: an order number, not an ID
        "4111111111111112",  # fails Luhn
        "Order A12345 shipped on 2026-12-04 18:26:39,123",
        "12812345678",  # no mobile number starts 12
        "138123456789",  # 12 digits: not a mobile number
        "conversation 5b0e1d9a-1c44-4a64-9d3c-446655440000",
        "user@localhost",  # no domain with a dot
        "",
    ],
)
def test_what_only_looks_like_personal_data_is_left_alone(text: str) -> None:
    assert pii_mask(text) == text


def test_a_real_process_logs_no_personal_data() -> None:
    """The settings' handlers mask every logger's lines: message, arguments and traceback."""
    script = (
        "import logging, django; django.setup()\n"
        f"logging.getLogger('conversations').warning('customer wrote %s', {TEXT!r})\n"
        f"logging.getLogger('some.library').error('card ' + {CARD!r})\n"
        "try:\n"
        f"    raise ValueError({EMAIL!r})\n"
        "except ValueError:\n"
        "    logging.getLogger('x').exception('failed for %s', " + repr(MOBILE) + ")\n"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cs_platform.settings",
        "SECRET_KEY": "pii-test",
        "DATABASE_URL": "sqlite:///:memory:",
        "REDIS_URL": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    lines = result.stderr
    assert "customer wrote 身份证 **************002X" in lines
    assert "card ***************0128" in lines
    assert "ValueError: z***@example.com" in lines
    assert "failed for 138****5678" in lines
    for value in PERSONAL:
        assert value not in lines


@pytest.mark.django_db
def test_reports_csv_and_page_mask_the_customers_words(settings: Any) -> None:
    conversation: Any = ConversationFactory()
    question: Any = MessageFactory(conversation=conversation, text=f"My card {CARD} was charged twice")
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=Message.Source.MODEL,
        text="I don't know.",
        is_unanswered=True,
        reply_to=question,
    )
    client = Client()
    client.force_login(make_user("Manager"))
    today = timezone.localdate().isoformat()

    exported = client.get("/reports/export/unanswered_questions.csv", {"start": today, "end": today})
    page = client.get("/reports/", {"start": today, "end": today}).content.decode()

    rows = list(csv.reader(io.StringIO(exported.content.decode())))
    assert rows[1][0] == "My card ***************0128 was charged twice"
    assert "My card ***************0128 was charged twice" in page
    for text in (exported.content.decode(), page):
        assert CARD not in text


@pytest.mark.django_db
@pytest.mark.parametrize("masked", [True, False])
def test_the_prompt_masks_personal_data_only_when_told(settings: Any, masked: bool) -> None:
    settings.PII_MASK_BEFORE_MODEL = masked
    conversation: Any = ConversationFactory(locale=Conversation.Locale.EN)
    message: Any = MessageFactory(conversation=conversation, text=f"My phone is {MOBILE}, mail {EMAIL}")

    entry, _, _ = prompts._message_entry(message, images_left=0)

    assert entry is not None
    expected = "My phone is 138****5678, mail z***@example.com" if masked else message.text
    assert entry["content"] == expected
    assert (MOBILE in entry["content"]) is not masked


@pytest.mark.django_db
def test_the_daily_aggregates_keep_the_questions_masked() -> None:
    from reports import services as report_services

    conversation: Any = ConversationFactory()
    question: Any = MessageFactory(conversation=conversation, text=f"Refund to {EMAIL} please")
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=Message.Source.MODEL,
        text="I don't know.",
        is_unanswered=True,
        reply_to=question,
    )

    row = report_services.daily_stats_compute(day=timezone.localdate(conversation.created_at))

    assert [text for _, text in row.unanswered_questions.values()] == ["Refund to z***@example.com please"]
    assert EMAIL not in str(row.unanswered_questions)


@pytest.mark.django_db
def test_admin_lists_mask_personal_data_and_the_transcript_keeps_it() -> None:
    conversation: Any = ConversationFactory()
    MessageFactory(conversation=conversation, text=f"My phone is {MOBILE}")
    client = Client()
    client.force_login(make_user(None, is_staff=True, is_superuser=True))

    listed = client.get("/admin/conversations/message/").content.decode()
    transcript = client.get(f"/admin/conversations/conversation/{conversation.pk}/change/").content.decode()

    assert "My phone is 138****5678" in listed
    assert MOBILE not in listed
    assert MOBILE in transcript  # the supervisor helping this customer reads what they wrote
