"""Benchmark of the reports over a generated year of conversations.

Run from the repository root: `python bench/reports.py [--quick] [--conversations N] [--no-write]`
(`make bench`). It creates a PostgreSQL database of its own (BENCH_DATABASE_URL, default
cs_bench_reports on the local server: dropped if it exists, created, migrated, and dropped again at
the end unless --keep), fills it with a year ending today (200,000 conversations by default, 20,000
with --quick) and measures, in TIME_ZONE:

- `reports.selectors.report_get` and `summary_get` for 365 days with no aggregates (every day live);
- `reports.services.daily_stats_recompute` over every finished day of the year (total and per day);
- then, from the aggregates, `summary_get` and `report_get` for the last 365, 90, 30 and 7 days, and
  the page itself (GET /reports/ as a logged-in superuser) for 365 and 30 days: median and max of
  repeated runs, and the SQL queries of each.

It prints a table and replaces the `## Reports` section of docs/benchmarks.md (only that section).
No Redis is used: the settings run in their embedded shape against PostgreSQL.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on the path, not the repository root.
sys.path.insert(0, str(REPOSITORY_ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

BENCHMARKS_PATH = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Reports"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/cs_bench_reports"
DEFAULT_CONVERSATIONS = 200_000
QUICK_CONVERSATIONS = 20_000
YEAR_DAYS = 365
PERIODS = (365, 90, 30, 7)
PAGE_PERIODS = (365, 30)
# Above this, a 365-day read from the aggregates counts as slow, and the report says where the time goes.
SLOW_SECONDS = 1.0
ARTICLE_COUNT = 30
AGENT_COUNT = 6
MODEL_NAME = "Qwen/Qwen2.5-VL-7B-Instruct"
# Today's conversations started this long before now at the latest, so that their replies, tickets
# and ratings (minutes later) are not in the future.
TODAY_MARGIN_SECONDS = 1800


# --- the database and Django -----------------------------------------------------------------


def _database_name(database_url: str) -> str:
    name = database_url.rsplit("/", 1)[1].split("?", 1)[0]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"BENCH_DATABASE_URL names an unusual database: {name!r}")
    return name


def _maintenance_url(database_url: str) -> str:
    return database_url.rsplit("/", 1)[0] + "/postgres"


def recreate_database(database_url: str) -> None:
    """Drop the benchmark's database if it is there, and create it empty."""
    name = sql.Identifier(_database_name(database_url))
    with psycopg.connect(_maintenance_url(database_url), autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(name))


def drop_database(database_url: str) -> None:
    name = sql.Identifier(_database_name(database_url))
    with psycopg.connect(_maintenance_url(database_url), autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def configure_django(database_url: str) -> None:
    """The settings' environment (as Makefile's TEST_ENV, without Redis), then django.setup()."""
    os.environ.pop("REDIS_URL", None)  # the embedded shape: no Redis, nothing here needs one
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "cs_platform.settings",
            "DATABASE_URL": database_url,
            "DATABASE_CONN_MAX_AGE": "0",
            "SECRET_KEY": "benchmark-only-secret-key",
            # django.test.Client asks for the page as "testserver".
            "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
            "DEBUG": "false",
        }
    )
    # The embedded shape serves static files from the source folders; no collected ones are needed here.
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    import django

    django.setup()


# --- COPY ------------------------------------------------------------------------------------

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def text(value: str) -> str:
    """A string as a cell of COPY's text format."""
    return value.translate(_ESCAPES)


def number(value: int | None) -> str:
    return NULL if value is None else str(value)


def instant(value: float | None) -> str:
    """A Unix time as a timestamptz cell."""
    if value is None:
        return NULL
    return datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat()


def as_json(value: Any) -> str:
    return text(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def boolean(value: bool) -> str:
    return "t" if value else "f"


def _constant_cell(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return boolean(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list):
        return as_json(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return text(str(value))


class CopyTable:
    """A model's table filled by COPY: the columns given per row, the others at their model defaults.

    Django keeps defaults in Python, not in the schema, so every column the rows leave out is written
    with its field's default (or NULL where the field allows it); a new required field without a
    default stops the benchmark here, by name, rather than at the COPY.
    """

    def __init__(self, model: Any, varying: Sequence[str]) -> None:
        fields = {model_field.attname: model_field for model_field in model._meta.concrete_fields}
        unknown = [name for name in varying if name not in fields]
        if unknown:
            raise SystemExit(f"{model.__name__} has no fields {unknown}")
        self.table: str = model._meta.db_table
        self.columns = [fields[name].column for name in varying]
        constants = []
        for name, model_field in fields.items():
            if name in varying:
                continue
            value = model_field.get_default()
            if value is None and not model_field.null:
                raise SystemExit(f"{model.__name__}.{name} needs a value: the benchmark does not fill it")
            self.columns.append(model_field.column)
            constants.append(_constant_cell(value))
        self.suffix = ("\t" + "\t".join(constants) if constants else "") + "\n"
        self.width = len(varying)
        self.lines: list[str] = []

    def add(self, *cells: str) -> None:
        self.lines.append("\t".join(cells) + self.suffix)

    def copy(self, connection: psycopg.Connection[Any]) -> int:
        """COPY the rows in, in chunks; returns how many."""
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(self.table), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            for index in range(0, len(self.lines), 20_000):
                copy.write("".join(self.lines[index : index + 20_000]))
        count = len(self.lines)
        self.lines = []
        return count


# --- what the customers ask ------------------------------------------------------------------

# Questions the knowledge base has no answer for (the unanswered replies' questions), English then
# Chinese; each is asked in small rewordings (greetings, thanks, a typo, punctuation, case).
UNANSWERED_EN = (
    "Do you ship to Iceland?",
    "Can I pay with cryptocurrency?",
    "Is there a student discount?",
    "Do you sell gift cards?",
    "Can I change the colour after ordering?",
    "Why was my card declined twice?",
    "Do you have a store in Lisbon?",
    "Can I pick up my order at the warehouse?",
    "Is the charger compatible with 110 volts?",
    "Can you engrave my name on it?",
    "How do I become a reseller?",
    "Do you offer installation service?",
    "Is the packaging recyclable?",
    "Can I order more than 50 units?",
    "Where is your privacy officer?",
    "Do you price match other shops?",
    "Can I split the payment over two cards?",
    "What is the warranty in Brazil?",
    "Does the app work on a smartwatch?",
    "Can I reserve an item before it launches?",
    "Why does my invoice show a different address?",
    "Do you have a referral programme?",
    "Can I return a gift without a receipt?",
    "Is customs duty included for Switzerland?",
)
UNANSWERED_ZH = (
    "可以寄到冰岛吗？",
    "可以用比特币付款吗？",
    "学生有优惠吗？",
    "你们卖礼品卡吗？",
    "下单后还能改颜色吗？",
    "为什么我的卡被拒绝了两次？",
    "里斯本有门店吗？",
    "可以到仓库自提吗？",
    "充电器支持110伏吗？",
    "可以刻字吗？",
    "怎么成为经销商？",
    "提供上门安装吗？",
    "包装可以回收吗？",
    "可以一次订50台以上吗？",
    "发票上的地址为什么不一样？",
    "有推荐奖励吗？",
)
# Questions the knowledge base answers.
ANSWERED_EN = (
    "Where is my order?",
    "How do I return an item?",
    "How long does delivery take?",
    "Can I change my delivery address?",
    "How do I reset my password?",
    "What payment methods do you accept?",
    "When will I get my refund?",
    "How do I cancel my order?",
    "Do you ship internationally?",
    "What is your warranty?",
    "How do I track my parcel?",
    "My item arrived damaged, what now?",
    "How do I update my billing details?",
    "Can I exchange for another size?",
    "How do I contact support by phone?",
)
ANSWERED_ZH = (
    "我的订单在哪里？",
    "怎么退货？",
    "配送需要多久？",
    "可以修改收货地址吗？",
    "怎么重置密码？",
    "支持哪些付款方式？",
    "退款什么时候到账？",
    "怎么取消订单？",
    "商品到货损坏了怎么办？",
    "保修期多长？",
)
EN_PREFIXES = ("", "", "", "", "Hi, ", "Hello! ", "hey ", "Quick question: ", "Sorry, ")
EN_SUFFIXES = ("", "", "", "", " Thanks", " please", " Thank you!", " asap")
ZH_PREFIXES = ("", "", "", "你好，", "您好，请问", "请问", "在吗？")
ZH_SUFFIXES = ("", "", "", "谢谢", "谢谢！", "急")
ARTICLE_TOPICS = (
    ("Shipping times and costs", "en"),
    ("Returns and refunds", "en"),
    ("Tracking your parcel", "en"),
    ("Changing or cancelling an order", "en"),
    ("Payment methods", "en"),
    ("Warranty and repairs", "en"),
    ("Account and password", "en"),
    ("Damaged or missing items", "en"),
    ("International delivery", "en"),
    ("Sizes and exchanges", "en"),
    ("Invoices and billing", "en"),
    ("Contacting support", "en"),
    ("Product care", "en"),
    ("Promotions and coupons", "en"),
    ("Pre-orders", "en"),
    ("Business accounts", "en"),
    ("Loyalty points", "en"),
    ("Privacy and your data", "en"),
    ("配送时间与运费", "zh-Hans"),
    ("退货与退款", "zh-Hans"),
    ("查询物流", "zh-Hans"),
    ("修改或取消订单", "zh-Hans"),
    ("付款方式", "zh-Hans"),
    ("保修与维修", "zh-Hans"),
    ("账户与密码", "zh-Hans"),
    ("商品损坏或缺件", "zh-Hans"),
    ("发票", "zh-Hans"),
    ("联系客服", "zh-Hans"),
    ("优惠券", "zh-Hans"),
    ("会员积分", "zh-Hans"),
)
REPLY_TEXT = {
    "en": "Here is what I found: {topic}. You can read the details in the linked article.",
    "zh-Hans": "根据知识库：{topic}。详情请查看链接中的文章。",
}
UNANSWERED_TEXT = {
    "en": "I could not find that in our help centre. Would you like me to connect you with a person?",
    "zh-Hans": "知识库里没有找到相关内容。需要为您转接人工客服吗？",
}


def _typo(question: str, rand: random.Random) -> str:
    """Two neighbouring letters swapped, as a hurried customer types."""
    letters = [index for index in range(len(question) - 1) if question[index : index + 2].isalpha()]
    if not letters:
        return question
    index = rand.choice(letters)
    return question[:index] + question[index + 1] + question[index] + question[index + 2 :]


def reworded(question: str, locale: str, rand: random.Random) -> str:
    """The question as one customer asks it: mostly as written, often with a greeting, thanks, a typo."""
    if locale == "en":
        asked = question
        roll = rand.random()
        if roll < 0.15:
            asked = asked.lower()
        elif roll < 0.2:
            asked = asked.upper()
        if rand.random() < 0.2:
            asked = asked.rstrip("?")
        if rand.random() < 0.08:
            asked = _typo(asked, rand)
        return rand.choice(EN_PREFIXES) + asked + rand.choice(EN_SUFFIXES)
    asked = question
    if rand.random() < 0.25:
        asked = asked.replace("？", "?")
    elif rand.random() < 0.15:
        asked = asked.rstrip("？")
    return rand.choice(ZH_PREFIXES) + asked + rand.choice(ZH_SUFFIXES)


def zipf_weights(count: int, exponent: float) -> list[float]:
    return [1 / (rank + 1) ** exponent for rank in range(count)]


# --- the year --------------------------------------------------------------------------------

# Relative traffic by local hour: quiet at night, busy late morning, afternoon and evening.
HOURLY = (
    0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.3, 0.6, 1.0, 1.4, 1.6, 1.6,
    1.3, 1.4, 1.5, 1.45, 1.3, 1.1, 1.0, 1.1, 1.2, 1.1, 0.8, 0.45,
)  # fmt: skip
# Monday first.
WEEKLY = (1.12, 1.08, 1.05, 1.02, 0.95, 0.66, 0.58)


def day_weight(day: datetime.date, index: int, rand: random.Random) -> float:
    """How busy a day is: the week, the season, the sales, a year's growth and some noise."""
    season = 1 + 0.12 * math.sin(2 * math.pi * (day.timetuple().tm_yday - 100) / 365.25)
    sales = 1.0
    if (day.month, day.day) == (11, 11):
        sales = 2.2
    elif day.month == 11 and day.day >= 24:
        sales = 1.6
    elif day.month == 12 and day.day <= 20:
        sales = 1.3
    elif day.month == 1 and day.day <= 6:
        sales = 1.25  # returns after the holidays
    growth = 0.75 + 0.5 * index / (YEAR_DAYS - 1)
    return WEEKLY[day.weekday()] * season * sales * growth * rand.lognormvariate(0, 0.08)


def allocate(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights`, in whole numbers that add up (largest remainder)."""
    whole = sum(weights)
    shares = [total * weight / whole for weight in weights]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(weights)), key=lambda index: counts[index] - shares[index])
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts


def conversation_times(
    total: int, days: list[datetime.date], zone: ZoneInfo, now: float, rand: random.Random
) -> list[float]:
    """When each conversation started (Unix times, sorted): the year's days by weight, hours by HOURLY.

    Today gets only the share of its traffic that has already happened.
    """
    cumulative_hours = list(_cumulative(HOURLY))
    latest = now - TODAY_MARGIN_SECONDS
    bounds = []
    weights = []
    for index, day in enumerate(days):
        start = datetime.datetime.combine(day, datetime.time.min, tzinfo=zone).timestamp()
        end = datetime.datetime.combine(
            day + datetime.timedelta(days=1), datetime.time.min, tzinfo=zone
        ).timestamp()
        weight = day_weight(day, index, rand)
        if end > latest:  # today: the hours gone by, the current one in part (none just after midnight)
            elapsed = max(0.0, (latest - start) / (end - start) * 24)
            done = sum(HOURLY[: int(elapsed)]) + HOURLY[min(int(elapsed), 23)] * (elapsed % 1)
            weight *= done / sum(HOURLY)
        bounds.append((start, end))
        weights.append(weight)
    times: list[float] = []
    for (start, end), count in zip(bounds, allocate(total, weights), strict=True):
        hour_seconds = (end - start) / 24
        made = 0
        while made < count:
            hour = rand.choices(range(24), cum_weights=cumulative_hours)[0]
            moment = start + (hour + rand.random()) * hour_seconds
            if moment < latest:
                times.append(moment)
                made += 1
    times.sort()
    return times


def _cumulative(values: Sequence[float]) -> Iterator[float]:
    running = 0.0
    for value in values:
        running += value
        yield running


@dataclass
class Volume:
    """What was generated, for the report."""

    conversations: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    unanswered_replies: int = 0
    replies_with_citations: int = 0
    tickets: int = 0
    csat: int = 0
    feedback: int = 0
    review_items: int = 0
    reviewed: int = 0
    articles: int = 0
    distinct_unanswered_questions: int = 0
    # Today's conversations so far: what every read counts live, whatever its period.
    today_conversations: int = 0
    generate_seconds: float = 0.0
    load_seconds: float = 0.0
    vacuum_seconds: float = 0.0
    database_bytes: int = 0

    @property
    def message_total(self) -> int:
        return sum(self.messages.values())


def _lognormal_int(rand: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(rand.lognormvariate(math.log(median), sigma))))


def _first_token_ms(rand: random.Random) -> int:
    """Time to first token: mostly around 400 ms, a slower tail (a queue, a long prompt), rare stalls."""
    roll = rand.random()
    if roll < 0.015:
        return _lognormal_int(rand, 4000, 0.6, 1500, 60_000)
    if roll < 0.1:
        return _lognormal_int(rand, 1200, 0.4, 500, 20_000)
    return _lognormal_int(rand, 380, 0.35, 90, 5_000)


def generate(*, total: int, zone: ZoneInfo, today: datetime.date, seed: int, database_url: str) -> Volume:
    """Fill the database with a year of conversations ending now, by COPY in one transaction."""
    from django.contrib.auth import get_user_model

    from conversations.models import Conversation, Feedback, Message, SatisfactionRating, Ticket
    from knowledge.models import Article
    from review.models import ReviewItem

    started = time.perf_counter()
    rand = random.Random(seed)
    now = time.time()
    volume = Volume()
    user_model = get_user_model()
    agents = [
        user_model.objects.create_user(username=f"agent{index}", email=f"agent{index}@example.com")
        for index in range(AGENT_COUNT)
    ]
    reviewer = user_model.objects.create_user(username="supervisor", email="supervisor@example.com")
    agent_ids = [agent.pk for agent in agents]

    articles = CopyTable(
        Article, ["id", "slug", "title", "body", "locale", "status", "tags", "created_at", "updated_at"]
    )
    article_rows = []
    for index, (title, locale) in enumerate(ARTICLE_TOPICS, start=1):
        slug = f"article-{index}"
        article_rows.append((index, title, slug))
        articles.add(
            str(index), slug, text(title), text(f"## {title}\n\nWhat customers ask about {title}."),
            locale, Article.Status.PUBLISHED, "help", instant(now - 400 * 86400), instant(now - 30 * 86400),
        )  # fmt: skip
    article_weights = list(_cumulative(zipf_weights(len(article_rows), 0.9)))
    en_articles = [row for row in article_rows if ARTICLE_TOPICS[row[0] - 1][1] == "en"]
    zh_articles = [row for row in article_rows if ARTICLE_TOPICS[row[0] - 1][1] != "en"]
    unanswered_weights = {
        "en": list(_cumulative(zipf_weights(len(UNANSWERED_EN), 0.8))),
        "zh-Hans": list(_cumulative(zipf_weights(len(UNANSWERED_ZH), 0.8))),
    }
    unanswered_templates = {"en": UNANSWERED_EN, "zh-Hans": UNANSWERED_ZH}
    answered_templates = {"en": ANSWERED_EN, "zh-Hans": ANSWERED_ZH}

    conversations = CopyTable(
        Conversation,
        ["id", "token_hash", "channel", "status", "locale", "created_at", "updated_at", "last_message_at"],
    )
    messages = CopyTable(
        Message,
        ["id", "conversation_id", "role", "text", "status", "reply_to_id", "author_id", "model",
         "prompt_tokens", "completion_tokens", "first_token_latency_ms", "total_latency_ms", "source",
         "citations", "is_unanswered", "error_code", "generation_started_at", "created_at", "completed_at"],
    )  # fmt: skip
    tickets = CopyTable(
        Ticket,
        ["id", "conversation_id", "status", "reason", "trigger", "assignee_id", "created_at", "updated_at",
         "claimed_at", "first_response_at", "resolved_at", "first_response_seconds", "resolution_seconds"],
    )  # fmt: skip
    ratings = CopyTable(SatisfactionRating, ["id", "conversation_id", "score", "created_at", "updated_at"])
    feedback = CopyTable(Feedback, ["id", "message_id", "rating", "created_at", "updated_at"])
    review_items = CopyTable(
        ReviewItem,
        ["id", "conversation_id", "reason", "latest_reason", "latest_rated_at", "message_id", "created_at",
         "verdict", "reviewer_id", "reviewed_at"],
    )  # fmt: skip

    days = [today - datetime.timedelta(days=YEAR_DAYS - 1 - offset) for offset in range(YEAR_DAYS)]
    start_times = conversation_times(total, days, zone, now, rand)
    today_start = datetime.datetime.combine(today, datetime.time.min, tzinfo=zone).timestamp()
    volume.today_conversations = sum(1 for moment in start_times if moment >= today_start)
    triggers = [choice.value for choice in Ticket.Trigger]
    trigger_weights = list(_cumulative((35, 30, 20, 0, 8, 7)))  # knowledge misses come from unanswered
    verdicts = [choice.value for choice in ReviewItem.Verdict]
    verdict_weights = list(_cumulative((30, 20, 25, 12, 5, 8)))
    turn_weights = list(_cumulative((68, 22, 8, 2)))
    source_weights = list(_cumulative((72, 17, 11)))
    sources = (Message.Source.MODEL, Message.Source.FAQ, Message.Source.KNOWLEDGE)
    distinct_questions: set[str] = set()
    message_id = ticket_id = rating_id = feedback_id = item_id = 0

    for index, started_at in enumerate(start_times):
        conversation_id = str(uuid.UUID(int=rand.getrandbits(128), version=4))
        locale = "zh-Hans" if rand.random() < 0.38 else "en"
        channel = Conversation.Channel.API if rand.random() < 0.12 else Conversation.Channel.WIDGET
        moment = started_at
        replies: list[tuple[int, float, bool]] = []  # (id, completed at, complete)
        any_unanswered = any_failed = False
        for _ in range(rand.choices((1, 2, 3, 4), cum_weights=turn_weights)[0]):
            message_id += 1
            question_id = message_id
            unanswered = rand.random() < 0.08
            if unanswered:
                template = rand.choices(unanswered_templates[locale], cum_weights=unanswered_weights[locale])[
                    0
                ]
                question = reworded(template, locale, rand)
                distinct_questions.add(question)
            else:
                question = reworded(rand.choice(answered_templates[locale]), locale, rand)
            messages.add(
                str(question_id), conversation_id, "customer", text(question), "complete", NULL, NULL, "",
                NULL, NULL, NULL, NULL, "customer", "[]", "f", "", NULL, instant(moment), NULL,
            )  # fmt: skip
            volume.messages["customer"] += 1
            if rand.random() > 0.96 and not unanswered:
                moment += rand.uniform(20, 120)  # left before the reply, or asked again at once
                continue
            message_id += 1
            reply_at = moment + rand.uniform(0.05, 0.4)
            source = (
                Message.Source.MODEL if unanswered else rand.choices(sources, cum_weights=source_weights)[0]
            )
            roll = rand.random()
            status = "failed" if roll < 0.03 else "cancelled" if roll < 0.045 else "complete"
            ttft = total_ms = prompt_tokens = completion_tokens = None
            model = error_code = ""
            if source == Message.Source.MODEL:
                model = MODEL_NAME
                prompt_tokens = rand.randint(600, 2800)
                if status != "failed" or rand.random() < 0.3:
                    ttft = _first_token_ms(rand)
                    completion_tokens = rand.randint(30, 320)
                    total_ms = ttft + completion_tokens * rand.randint(18, 28)
                if status == "failed":
                    error_code = "inference_unavailable"
            else:
                total_ms = rand.randint(40, 250)
            citations: list[dict[str, Any]] = []
            if status == "complete" and not unanswered:
                pool = en_articles if locale == "en" else zh_articles
                if source == Message.Source.KNOWLEDGE or (
                    source == Message.Source.MODEL and rand.random() < 0.5
                ):
                    for _ in range(1 if source == Message.Source.KNOWLEDGE else rand.choice((1, 1, 2, 3))):
                        article, title, slug = rand.choices(article_rows, cum_weights=article_weights)[0]
                        if (article, title, slug) not in pool and rand.random() < 0.8:
                            article, title, slug = rand.choice(pool)
                        citations.append(
                            {"article": article, "title": title, "anchor": "", "url": f"/kb/{slug}/"}
                        )
            if citations:
                volume.replies_with_citations += 1
            reply_text = (
                UNANSWERED_TEXT[locale]
                if unanswered
                else REPLY_TEXT[locale].format(topic=citations[0]["title"] if citations else "our policy")
            )
            completed = reply_at + (total_ms or rand.randint(2000, 30_000)) / 1000
            messages.add(
                str(message_id), conversation_id, "assistant", text(reply_text if status != "failed" else ""),
                status, str(question_id), NULL, model, number(prompt_tokens), number(completion_tokens),
                number(ttft), number(total_ms), source, as_json(citations), boolean(unanswered), error_code,
                instant(reply_at if source == Message.Source.MODEL else None), instant(reply_at),
                instant(completed),
            )  # fmt: skip
            volume.messages["assistant"] += 1
            volume.unanswered_replies += unanswered
            any_unanswered |= unanswered
            any_failed |= status == "failed"
            replies.append((message_id, completed, status == "complete"))
            moment = completed + rand.uniform(15, 150)
        last_at = moment

        # A handoff: most after an unanswered reply or a failure, some asked for anyway.
        handoff_chance = 0.5 if any_unanswered else 0.35 if any_failed else 0.1
        ticket_status = ""
        thumbs_down_trigger = False
        if rand.random() < handoff_chance:
            ticket_id += 1
            if any_unanswered and rand.random() < 0.7:
                trigger = Ticket.Trigger.KNOWLEDGE_MISS.value
            else:
                trigger = rand.choices(triggers, cum_weights=trigger_weights)[0]
            thumbs_down_trigger = trigger == Ticket.Trigger.THUMBS_DOWN
            opened = last_at + rand.uniform(2, 30)
            first_response = _lognormal_int(rand, 240, 1.0, 5, 6 * 3600) if rand.random() < 0.93 else None
            resolution = None
            if first_response is not None and rand.random() < 0.95:
                resolution = first_response + _lognormal_int(rand, 3000, 1.1, 30, 5 * 86400)
            if first_response is not None and opened + first_response > now:
                first_response = resolution = None
            if resolution is not None and opened + resolution > now:
                resolution = None
            ticket_status = "resolved" if resolution is not None else "assigned" if first_response else "open"
            assignee = rand.choice(agent_ids) if first_response is not None else None
            first_at = None if first_response is None else opened + first_response
            resolved_at = None if resolution is None else opened + resolution
            claimed_at = None if first_at is None else first_at - 5
            tickets.add(
                str(ticket_id), conversation_id, ticket_status, "", trigger, number(assignee),
                instant(opened), instant(resolved_at or first_at or opened), instant(claimed_at),
                instant(first_at), instant(resolved_at), number(first_response), number(resolution),
            )  # fmt: skip
            volume.tickets += 1
            if first_at is not None:
                message_id += 1
                messages.add(
                    str(message_id), conversation_id, "agent", "Hi, this is the support team. Let me help.",
                    "complete", NULL, number(assignee), "", NULL, NULL, NULL, NULL, "agent", "[]", "f", "",
                    NULL, instant(first_at), NULL,
                )  # fmt: skip
                volume.messages["agent"] += 1
                last_at = max(last_at, first_at)
        # Ratings: worse after an unanswered reply, a failure or a handoff.
        troubled = any_unanswered or any_failed or bool(ticket_status)
        bad_ratings: list[tuple[float, str, int | None]] = []  # (when, reason, reply under review)
        complete_replies = [reply for reply in replies if reply[2]]
        if complete_replies and (thumbs_down_trigger or rand.random() < 0.15):
            reply_id, reply_done, _ = rand.choice(complete_replies)
            down = thumbs_down_trigger or rand.random() < (0.5 if troubled else 0.18)
            rated_at = reply_done + rand.uniform(3, 90)
            if rated_at < now:
                feedback_id += 1
                feedback.add(
                    str(feedback_id),
                    str(reply_id),
                    "-1" if down else "1",
                    instant(rated_at),
                    instant(rated_at),
                )
                volume.feedback += 1
                if down:
                    bad_ratings.append((rated_at, "thumbs_down", reply_id))
        if rand.random() < 0.25:
            weights = (22, 14, 16, 22, 26) if troubled else (4, 4, 10, 27, 55)
            score = rand.choices((1, 2, 3, 4, 5), weights=weights)[0]
            rated_at = last_at + rand.uniform(30, 1800)
            if rated_at < now:
                rating_id += 1
                ratings.add(str(rating_id), conversation_id, str(score), instant(rated_at), instant(rated_at))
                volume.csat += 1
                if score <= 2:
                    bad_ratings.append((rated_at, "csat_low", replies[-1][0] if replies else None))
        if bad_ratings:
            bad_ratings.sort()
            item_id += 1
            queued_at, reason, reviewed_message = bad_ratings[0]
            age_days = (now - queued_at) / 86400
            reviewed_share = 0.75 if age_days > 14 else 0.4 if age_days > 3 else 0.1
            verdict = ""
            reviewed_at = None
            if rand.random() < reviewed_share:
                reviewed_at = min(now - 1, queued_at + rand.uniform(2 * 3600, 5 * 86400))
                verdict = rand.choices(verdicts, cum_weights=verdict_weights)[0]
                volume.reviewed += 1
            review_items.add(
                str(item_id), conversation_id, reason, bad_ratings[-1][1], instant(bad_ratings[-1][0]),
                number(reviewed_message), instant(queued_at), verdict,
                number(reviewer.pk if verdict else None), instant(reviewed_at),
            )  # fmt: skip
            volume.review_items += 1
        recent = now - started_at < 86400
        status = (
            Conversation.Status.HANDED_OFF
            if ticket_status in {"open", "assigned"}
            else Conversation.Status.OPEN
            if recent
            else Conversation.Status.CLOSED
        )
        conversations.add(
            conversation_id, f"{rand.getrandbits(256):064x}", channel, status, locale, instant(started_at),
            instant(last_at), instant(last_at),
        )  # fmt: skip
        volume.conversations += 1
        if (index + 1) % 50_000 == 0:
            print(f"  {index + 1:,} conversations generated…", flush=True)

    volume.generate_seconds = time.perf_counter() - started
    volume.articles = len(article_rows)
    volume.distinct_unanswered_questions = len(distinct_questions)
    print(f"  generated in {volume.generate_seconds:.1f} s; loading by COPY…", flush=True)
    loaded = time.perf_counter()
    with psycopg.connect(database_url) as connection:
        connection.execute("SET synchronous_commit TO off")
        for table in (articles, conversations, messages, tickets, ratings, feedback, review_items):
            count = table.copy(connection)
            if table is not conversations:  # the others' ids were given: move their sequences past them
                connection.execute(
                    sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), {})").format(
                        sql.Literal(table.table), sql.Literal(max(count, 1))
                    )
                )
            print(f"  {table.table}: {count:,} rows", flush=True)
    volume.load_seconds = time.perf_counter() - loaded
    vacuumed = time.perf_counter()
    # A table that has been written for a year has been vacuumed and analysed: plan as production would.
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE)")
        row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
        volume.database_bytes = int(row[0]) if row else 0
    volume.vacuum_seconds = time.perf_counter() - vacuumed
    return volume


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Measurement:
    """Repeated timings of one read, and the SQL of its first (untimed) run."""

    name: str
    period: str
    seconds: list[float]
    queries: int
    sql_seconds: float
    slowest: list[tuple[float, str]]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def maximum(self) -> float:
        return max(self.seconds)


def measure(name: str, period: str, function: Callable[[], object], runs: int, note: str = "") -> Measurement:
    """One run with the queries captured (their count, time and the slowest), then `runs` timed runs.

    With runs=0 the captured run is the only (timed) one: for the slow, all-live reads.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # The log keeps the last 9,000 queries: emptied first, a capture of fewer is whole.
    connection.queries_log.clear()
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        function()
    first = time.perf_counter() - started
    # Read now: a request (the page) empties the log when it starts.
    queries = [(float(query["time"]), query["sql"]) for query in captured.captured_queries]
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    result = Measurement(
        name=name,
        period=period,
        seconds=timings or [first],
        queries=len(queries),
        sql_seconds=sum(seconds for seconds, _ in queries),
        slowest=sorted(queries, reverse=True)[:5],
        note=note,
    )
    print(
        f"  {name} {period}: median {_duration(result.median)}, max {_duration(result.maximum)}, "
        f"{result.queries:,} queries ({_duration(result.sql_seconds)} in SQL, first run)",
        flush=True,
    )
    return result


def _duration(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def page_reader() -> Callable[[int], Callable[[], int]]:
    """GET /reports/ for the last `days` days as a logged-in superuser, checked to answer 200."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from reports.selectors import today_get

    user = get_user_model().objects.create_superuser("bench-admin", "admin@example.com", None)
    client = Client()
    client.force_login(user)

    def for_days(days: int) -> Callable[[], int]:
        today = today_get()
        query = {"start": (today - datetime.timedelta(days=days - 1)).isoformat(), "end": today.isoformat()}

        def get() -> int:
            response = client.get("/reports/", query)
            if response.status_code != 200:
                raise SystemExit(f"GET /reports/ answered {response.status_code}: {response.content[:300]!r}")
            return len(response.content)

        return get

    return for_days


@dataclass
class Results:
    volume: Volume
    live: list[Measurement]
    recompute_seconds: float
    recompute_days: int
    recompute_queries: int
    reads: list[Measurement]
    page_bytes: dict[int, int]
    runs: int
    started: str
    total_seconds: float = 0.0
    machine: list[str] = field(default_factory=list)
    command: str = ""


def run_measurements(volume: Volume, *, runs: int) -> Results:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reports.models import DailyStat
    from reports.selectors import report_get, summary_get, today_get
    from reports.services import daily_stats_recompute

    today = today_get()

    def period(days: int) -> tuple[datetime.date, datetime.date]:
        return today - datetime.timedelta(days=days - 1), today

    year_start, year_end = period(YEAR_DAYS)
    print("with no aggregates (every day counted live):", flush=True)
    DailyStat.objects.all().delete()
    live = [
        measure("summary_get", "365 days", lambda: summary_get(start=year_start, end=year_end), 0,
                note="no aggregates: one live pass over the year"),
        measure("report_get", "365 days", lambda: report_get(start=year_start, end=year_end), 0,
                note="no aggregates: each day counted live"),
    ]  # fmt: skip
    print("recomputing the aggregates…", flush=True)
    connection.queries_log.clear()
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        rows = daily_stats_recompute(start=year_start, end=today - datetime.timedelta(days=1))
        recompute_seconds = time.perf_counter() - started
    recompute_queries = len(captured.captured_queries)
    per_day = recompute_seconds / max(1, len(rows))
    print(f"  {len(rows)} days in {recompute_seconds:.1f} s ({_duration(per_day)} a day)", flush=True)
    print(f"from the aggregates ({runs} runs each after one with its queries captured):", flush=True)
    reads = []
    for days in PERIODS:
        start, end = period(days)
        reads.append(measure("summary_get", f"{days} days", partial(summary_get, start=start, end=end), runs))
    for days in PERIODS:
        start, end = period(days)
        reads.append(measure("report_get", f"{days} days", partial(report_get, start=start, end=end), runs))
    page = page_reader()
    page_bytes = {}
    for days in PAGE_PERIODS:
        get = page(days)
        page_bytes[days] = get()
        reads.append(measure("GET /reports/", f"{days} days", get, runs))
    return Results(
        volume=volume,
        live=live,
        recompute_seconds=recompute_seconds,
        recompute_days=len(rows),
        recompute_queries=recompute_queries,
        reads=reads,
        page_bytes=page_bytes,
        runs=runs,
        started="",
    )


# --- the report ------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine_description(database_url: str, load_before: tuple[float, float, float]) -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    postgres = "?"
    with psycopg.connect(database_url) as connection:
        settings = []
        for name in ("server_version", "shared_buffers", "work_mem"):
            row = connection.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            settings.append(str(row[0]) if row else "?")
        postgres = (
            f"{settings[0]} (shared_buffers {settings[1]}, work_mem {settings[2]}), on the same machine"
        )
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    before = " ".join(f"{value:.2f}" for value in load_before)
    return [
        f"- CPU: {cpu}, {usable} logical CPUs usable ({os.cpu_count()} present); memory {memory}; "
        f"load average (1, 5, 15 min) at the start {before}, at the end {load}",
        f"- {platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"Django {_version('django')}, psycopg {_version('psycopg')}",
        f"- PostgreSQL {postgres}",
    ]


def _sql_line(query: str) -> str:
    shown = " ".join(query.split())
    return shown if len(shown) <= 240 else shown[:237] + "…"


def build_section(results: Results) -> str:
    volume = results.volume
    rows = []
    for measurement in results.live:
        rows.append(
            f"| `{measurement.name}`, no aggregates | {measurement.period} | 1 | {measurement.queries:,} "
            f"| {_duration(measurement.median)} | – | {_duration(measurement.sql_seconds)} |"
        )
    per_day = results.recompute_seconds / max(1, results.recompute_days)
    days = max(1, results.recompute_days)
    rows.append(
        f"| `daily_stats_recompute`, every finished day | {results.recompute_days} days | 1 "
        f"| {results.recompute_queries:,} ({results.recompute_queries / days:.0f} a day) "
        f"| {_duration(results.recompute_seconds)} ({_duration(per_day)} a day) | – | – |"
    )
    for measurement in results.reads:
        label = measurement.name if measurement.name.startswith("GET") else f"`{measurement.name}`"
        rows.append(
            f"| {label} | {measurement.period} | {len(measurement.seconds)} | {measurement.queries:,} "
            f"| {_duration(measurement.median)} | {_duration(measurement.maximum)} "
            f"| {_duration(measurement.sql_seconds)} |"
        )
    slow = [
        measurement
        for measurement in results.reads
        if measurement.period == "365 days" and measurement.median > SLOW_SECONDS
    ]
    slowest_lines = []
    for measurement in [*slow, *[m for m in results.live if m.name == "report_get"]]:
        slowest_lines.append(
            f"- {measurement.name} {measurement.period}"
            f"{' (no aggregates)' if measurement in results.live else ''}: {measurement.queries:,} queries, "
            f"{_duration(measurement.sql_seconds)} of SQL of {_duration(measurement.median)}; the slowest:"
        )
        for seconds, query in measurement.slowest[:3]:
            slowest_lines.append(f"  - {_duration(seconds)}: `{_sql_line(query)}`")
    messages = volume.messages
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            "The reports (`reports/selectors.py`, the page at /reports/) over a generated year, measured by "
            "`bench/reports.py` in a PostgreSQL database of its own (created, migrated, filled by COPY, "
            "vacuumed and analysed, dropped at the end). The year ends today, in TIME_ZONE "
            f"({_time_zone()}): conversations spread over {YEAR_DAYS} days by weekday, season, sales days "
            "and growth, busier by day than by night; each has a customer question and most an "
            "assistant reply (model, FAQ or knowledge-base passage; some failed or cancelled), with "
            "times to first token from a log-normal with a slow tail, unanswered replies whose questions "
            f"come from {len(UNANSWERED_EN) + len(UNANSWERED_ZH)} questions in English and Chinese in small "
            f"rewordings, citations of {volume.articles} articles, tickets with triggers and agents' times, "
            "CSAT ratings, thumbs and the review items the bad ones queue (some with verdicts). Past days "
            "are read from their `DailyStat` rows, today live. Each read was run once with its SQL captured "
            f"(the queries column and the SQL time are from that run), then timed {results.runs} times "
            "(median and max); the reads with no aggregates were run once. The page is "
            "`django.test.Client` GET /reports/?start=&end= as a logged-in superuser, rendered in full "
            f"({results.page_bytes.get(365, 0) / 1024:.0f} KiB for 365 days, "
            f"{results.page_bytes.get(30, 0) / 1024:.0f} KiB for 30).",
            "",
            f"- Date: {results.started}; the run took {results.total_seconds:.0f} s, of which generating "
            f"the data {volume.generate_seconds:.0f} s, loading it {volume.load_seconds:.0f} s and "
            f"vacuuming it {volume.vacuum_seconds:.0f} s",
            *results.machine,
            f"- Data: {volume.conversations:,} conversations; {volume.message_total:,} messages "
            f"({messages['customer']:,} customer, {messages['assistant']:,} assistant, {messages['agent']:,} "
            f"agent), {volume.unanswered_replies:,} unanswered replies "
            f"({volume.distinct_unanswered_questions:,} distinct wordings), "
            f"{volume.replies_with_citations:,} replies with citations; {volume.tickets:,} tickets; "
            f"{volume.csat:,} CSAT ratings; "
            f"{volume.feedback:,} thumbs; {volume.review_items:,} review items ({volume.reviewed:,} with a "
            f"verdict); database {volume.database_bytes / 1024 / 1024:.0f} MiB; today so far "
            f"{volume.today_conversations:,} conversations (counted live by every read)",
            f"- Rerun: `{results.command}` (`make bench`; `--quick` for 20,000 conversations, "
            "`--keep` to keep the database, `--no-write` to leave this file alone)",
            "",
            "| read | period | runs | SQL queries | median | max | SQL time |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            *(
                ["Where the time goes (the captured run's slowest queries):", "", *slowest_lines, ""]
                if slowest_lines
                else []
            ),
        ]
    )


def _time_zone() -> str:
    from django.conf import settings

    return str(settings.TIME_ZONE)


def replace_section(document: str, section: str) -> str:
    """Replace the `## Reports` section (up to the next `## ` heading), or add it at the end."""
    pattern = re.compile(rf"^{re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: section.rstrip("\n") + "\n\n", document, count=1).rstrip("\n") + "\n"
    if not document.strip():
        return "# Benchmarks\n\n" + section.rstrip("\n") + "\n"
    return document.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--conversations",
        type=int,
        default=None,
        help=f"conversations to generate (default {DEFAULT_CONVERSATIONS:,})",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CONVERSATIONS:,} conversations")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each read from the aggregates")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the generated data")
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()
    total = arguments.conversations or (QUICK_CONVERSATIONS if arguments.quick else DEFAULT_CONVERSATIONS)
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    began = time.perf_counter()
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    recreate_database(database_url)
    try:
        configure_django(database_url)
        from django.core.management import call_command
        from django.db import connections

        from reports.selectors import report_time_zone, today_get

        print(f"migrating {_database_name(database_url)}…", flush=True)
        call_command("migrate", verbosity=0, interactive=False)
        print(f"generating {total:,} conversations over {YEAR_DAYS} days ending {today_get()}…", flush=True)
        volume = generate(
            total=total,
            zone=report_time_zone(),
            today=today_get(),
            seed=arguments.seed,
            database_url=database_url,
        )
        print(
            f"data ready: generated in {volume.generate_seconds:.1f} s, loaded in "
            f"{volume.load_seconds:.1f} s, vacuumed in {volume.vacuum_seconds:.1f} s",
            flush=True,
        )
        results = run_measurements(volume, runs=arguments.runs)
        results.started = started
        results.machine = machine_description(database_url, load_before)
        command = "python bench/reports.py"
        if arguments.conversations:
            command += f" --conversations {total}"
        elif arguments.quick:
            command += " --quick"
        results.command = command
        connections.close_all()
    finally:
        if arguments.keep:
            print(f"kept the database {_database_name(database_url)}")
        else:
            drop_database(database_url)
    results.total_seconds = time.perf_counter() - began
    section = build_section(results)
    print()
    print(section)
    if arguments.no_write:
        return
    document = BENCHMARKS_PATH.read_text() if BENCHMARKS_PATH.exists() else ""
    BENCHMARKS_PATH.write_text(replace_section(document, section))
    print(f"updated {BENCHMARKS_PATH.relative_to(REPOSITORY_ROOT)}")


if __name__ == "__main__":
    main()
