"""Demo data for a first look: an assistant profile, quick entries, articles and an admin user."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from inference.models import AssistantProfile
from knowledge.models import Article, FaqEntry

DEMO_INSTRUCTIONS = (
    "You are the customer-service assistant of Acme Store, an online shop. Help customers with orders, "
    "delivery, invoices, returns and accounts. Answer briefly and politely. If you cannot help, or the "
    "customer asks for a person, say that you can connect them with a human agent. Never invent order "
    "numbers, prices or policies."
)

QUICK_ENTRIES = {
    "zh-Hans": ["查订单", "开发票", "退换货", "物流多久能到？", "修改收货地址"],
    "en": [
        "Where is my order?",
        "I need an invoice",
        "Returns and exchanges",
        "How long is delivery?",
        "Change my delivery address",
    ],
}

ARTICLES = [
    (
        "Returns policy",
        "en",
        "You can return any item within 30 days of delivery. Items must be unused. "
        "Start a return from **My orders → Return**. Refunds reach the original payment method in 5–7 days.",
    ),
    (
        "Invoices",
        "en",
        "Invoices are issued within 24 hours of shipping and can be downloaded from "
        "**My orders → Invoice**. For a company invoice, add your tax number before paying.",
    ),
    (
        "退换货政策",
        "zh-Hans",
        "签收后 30 天内可申请退换货，商品需保持未使用状态。在「我的订单 → 退换货」中发起申请，"
        "退款将在 5–7 个工作日内原路退回。",
    ),
    (
        "发票说明",
        "zh-Hans",
        "发货后 24 小时内开具电子发票，可在「我的订单 → 发票」下载。如需企业发票，请在付款前填写税号。",
    ),
]


def admin_password_file() -> Path:
    return settings.VAR_DIR / "admin_password"


def demo_data_load() -> str | None:
    """Load the demo data once; return the admin's password when the user was created now."""
    if not AssistantProfile.objects.exists():
        AssistantProfile.objects.create(
            name="Acme Support",
            system_instructions=DEMO_INSTRUCTIONS,
            is_active=True,
            max_tokens=200,
            # The local model is small: told to match the customer's language "(Simplified Chinese or
            # English)", it answered English questions in Chinese. The conversation's language is plain.
            language_policy=AssistantProfile.LanguagePolicy.CONVERSATION_LOCALE,
        )
    if not FaqEntry.objects.exists():
        for locale, questions in QUICK_ENTRIES.items():
            for position, question in enumerate(questions):
                FaqEntry.objects.create(
                    question=question, answer="", locale=locale, is_quick_entry=True, position=position
                )
    if not Article.objects.exists():
        for title, locale, body in ARTICLES:
            Article.objects.create(
                slug=f"demo-{len(title)}-{locale}".lower(),
                title=title,
                locale=locale,
                body=body,
                status=Article.Status.PUBLISHED,
            )
    user_model = get_user_model()
    if user_model.objects.filter(username="admin").exists():
        return None
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username="admin", email="admin@example.com", password=password)
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    admin_password_file().write_text(password)
    admin_password_file().chmod(0o600)
    return password
