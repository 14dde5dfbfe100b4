"""The demo's team hours (every day 09:00–21:00 Beijing time, as the demo FAQ tells customers) and
canned replies in English and Chinese."""

from __future__ import annotations

from datetime import time

from agents import services
from agents.models import DEFAULT_TIME_ZONE, CannedReply, HandoffSettings, WeeklyHours

__all__ = [
    "DEMO_CANNED_REPLIES",
    "DEMO_CLOSES",
    "DEMO_OPENS",
    "canned_replies_demo_load",
    "handoff_demo_load",
]

DEMO_OPENS = time(9)
DEMO_CLOSES = time(21)


def handoff_demo_load() -> bool:
    """Save the demo's handoff settings and hours unless some are saved already; returns whether it did.

    Hours someone set up (any weekly row) are kept: the demo loader never overwrites an operator's.
    """
    created = False
    if not HandoffSettings.objects.filter(pk=1).exists():
        HandoffSettings(pk=1, time_zone=DEFAULT_TIME_ZONE).save()
        created = True
    if not WeeklyHours.objects.exists():
        WeeklyHours.objects.bulk_create(
            WeeklyHours(weekday=weekday, opens=DEMO_OPENS, closes=DEMO_CLOSES) for weekday in range(7)
        )
        created = True
    return canned_replies_demo_load() or created


# (shortcode, locale, title, text): the refund timeline is the demo FAQ's (knowledge/demo/faq.csv).
DEMO_CANNED_REPLIES: tuple[tuple[str, str, str, str], ...] = (
    (
        "hello",
        "en",
        "Greeting",
        "Hello, I'm here to help. Could you tell me a little more about the problem?",
    ),
    ("hello", "zh-Hans", "问候", "您好，我是人工客服，很高兴为您服务。请问遇到了什么问题？"),
    (
        "order",
        "en",
        "Ask for the order number",
        "Could you send me your order number? You'll find it in the confirmation email or under My orders.",
    ),
    ("order", "zh-Hans", "询问订单号", "麻烦提供一下您的订单号，可以在确认邮件或“我的订单”中找到。"),
    (
        "refund",
        "en",
        "Refund timeline",
        "A refund goes back to your original payment method, usually within 5–7 working days "
        "(Alipay and WeChat Pay often in 1–2 days). You can follow it under My orders → Refund details.",
    ),
    (
        "refund",
        "zh-Hans",
        "退款时效",
        "退款发起后原路退回，一般 5–7 个工作日到账，支付宝和微信通常 1–2 天，"
        "可在 我的订单 → 退款详情 查看进度。",
    ),
    (
        "bye",
        "en",
        "Closing",
        "Is there anything else I can help with? If not, thanks for contacting us and have a good day.",
    ),
    ("bye", "zh-Hans", "结束语", "请问还有其他可以帮您的吗？如果没有，感谢您的咨询，祝您生活愉快！"),
)


def canned_replies_demo_load() -> bool:
    """Save the demo's canned replies unless some exist already (an operator's are never touched)."""
    if CannedReply.objects.exists():
        return False
    for shortcode, locale, title, text in DEMO_CANNED_REPLIES:
        services.canned_reply_save(shortcode=shortcode, locale=locale, title=title, text=text)
    return True
