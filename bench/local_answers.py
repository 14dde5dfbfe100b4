"""How the embedded default's local model answers the demo's questions, as a new user would ask them.

Run from the repository root against a running embedded default (`make run`, or `manage.py
run_embedded`): `python bench/local_answers.py [--base-url http://127.0.0.1:8000] [--per-language 20]`.
For each language it asks the demo's quick entries (GET /api/widget/faq), then paraphrases of the
demo topics below, up to 20 questions, each in a conversation of its own over the widget's
websocket, exactly as the widget does. Each reply is judged three ways:

- relevant: it comes from the knowledge base and is about the question's topic: an FAQ answer
  (source "faq") or a quoted passage (source "knowledge") whose text names the topic, or a reply
  citing an article whose link or title names it; a quick entry counts when it is answered from the
  FAQ or cites an article (it *is* an FAQ entry, its topic is whatever the demo made it);
- in the right language: a Chinese question gets Chinese characters, an English one mostly not;
- leak-free: no sentence of the hidden instructions (the demo profile's, the built-in ones, the
  language policies, the knowledge instructions) and no `<sources>` fence (not even `<source>`).

It prints one line per question and the counts per language; `--json FILE` also writes every reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on the path, not the repository root.
sys.path.insert(0, str(REPOSITORY_ROOT))

import httpx  # noqa: E402
import websockets  # noqa: E402
from websockets.typing import Origin  # noqa: E402

LOCALES = ("en", "zh-Hans")
REPLY_TIMEOUT_SECONDS = 180.0
CREATE_ATTEMPTS = 5

# Words that name a topic in an article's slug or title, or in an FAQ answer (both languages: the
# Chinese articles have English slugs and Chinese titles).
TOPICS: dict[str, tuple[str, ...]] = {
    "returns": ("return", "退货", "退换"),
    "refunds": ("refund", "退款"),
    "tracking": ("track", "delivery", "delayed", "lost", "shipping", "物流", "快递", "配送", "包裹", "查询"),
    "shipping": ("shipping", "delivery", "carrier", "运费", "配送", "发货", "快递", "邮费"),
    "cancel": ("cancel", "取消"),
    "address": ("address", "地址"),
    "invoices": ("invoice", "fapiao", "发票"),
    "missing": ("missing", "wrong", "少件", "少了", "缺件", "漏发", "错发"),
    "exchange": ("exchange", "换货", "更换"),
    "payments": ("payment", "alipay", "wechat pay", "huabei", "instalment", "支付", "付款", "花呗"),
    "coupons": ("coupon", "优惠券", "优惠"),
    "accounts": ("account", "password", "login", "log in", "账号", "账户", "密码", "登录"),
    "app": ("app-", "troubleshoot", "crash", "clear cache", "闪退", "缓存", "卡顿"),
    "warranty": ("warranty", "repair", "保修", "维修"),
}

# Paraphrases of the demo's topics, as customers write them (knowledge/demo/FACTS.md has the facts).
PARAPHRASES: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("How long do I have to send something back?", "returns"),
        ("I changed my mind about the kettle, can I return it?", "returns"),
        ("When will my refund show up on my card?", "refunds"),
        ("I returned my order two weeks ago and still have no money back", "refunds"),
        ("Where's my parcel? I ordered a week ago", "tracking"),
        ("How much is shipping?", "shipping"),
        ("Can I still cancel my order?", "cancel"),
        ("I need to change the delivery address of my order", "address"),
        ("How do I get an invoice for my company?", "invoices"),
        ("The box arrived but one item is missing", "missing"),
        ("Can I swap my headphones for a different colour?", "exchange"),
        ("How long does delivery to Xinjiang take?", "shipping"),
        ("The tracking hasn't updated for three days", "tracking"),
        ("Which payment methods do you accept?", "payments"),
        ("How do I use a coupon code?", "coupons"),
        ("I forgot my password", "accounts"),
        ("The app keeps crashing on my phone", "app"),
        ("My power bank stopped working after 3 months, is that covered by the warranty?", "warranty"),
        ("Do you ship to Hong Kong?", "shipping"),
        ("Can I pay in instalments with Huabei?", "payments"),
    ],
    "zh-Hans": [
        ("我想退货，怎么操作？", "returns"),
        ("买了东西不喜欢，可以退吗？", "returns"),
        ("退款多久能到账？", "refunds"),
        ("退货寄回去好几天了，钱还没退", "refunds"),
        ("我的快递到哪了？", "tracking"),
        ("运费怎么算？", "shipping"),
        ("订单还能取消吗？", "cancel"),
        ("下单后能改收货地址吗？", "address"),
        ("怎么开发票？", "invoices"),
        ("公司要开增值税专用发票，需要什么信息？", "invoices"),
        ("收到的货少了一件", "missing"),
        ("耳机想换个颜色可以吗", "exchange"),
        ("发货后几天能到？", "shipping"),
        ("寄到新疆要几天？", "shipping"),
        ("物流三天没更新了", "tracking"),
        ("支持哪些付款方式？", "payments"),
        ("优惠券怎么用？", "coupons"),
        ("忘记密码了怎么办", "accounts"),
        ("App 一直闪退", "app"),
        ("充电宝用了三个月坏了，保修吗？", "warranty"),
    ],
}

_CHINESE = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s*")


@dataclass
class Question:
    locale: str
    text: str
    # None for a quick entry: its topic is the FAQ entry's own.
    topic: str | None


@dataclass
class Answer:
    question: Question
    text: str = ""
    source: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    leaked: list[str] = field(default_factory=list)
    relevant: bool = False
    right_language: bool = False

    @property
    def leak_free(self) -> bool:
        return not self.leaked and not self.error

    @property
    def good(self) -> bool:
        return self.relevant and self.right_language and self.leak_free


def instruction_sentences() -> list[str]:
    """Every sentence of the hidden instructions a reply may be given, and the sources' fence."""
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        os.environ["DJANGO_SETTINGS_MODULE"] = "cs_platform.settings"
    import django

    django.setup()
    from cs_platform.demo import DEMO_INSTRUCTIONS
    from inference import prompts

    texts = [
        "Your name is Acme Support.",
        "Your name is Support assistant.",
        DEMO_INSTRUCTIONS,
        prompts.DEFAULT_INSTRUCTIONS,
        *prompts.LANGUAGE_POLICY_SENTENCES.values(),
        *getattr(prompts, "KNOWLEDGE_INSTRUCTIONS", ()),
    ]
    sentences = {sentence.strip() for text in texts for sentence in _SENTENCE.split(text.strip())}
    # The fence around the sources, as the prompt writes it and as a small model half-repeats it.
    return [*sorted(sentence for sentence in sentences if len(sentence) >= 12), "<source", "</source"]


def leaked_sentences(text: str, sentences: list[str]) -> list[str]:
    """The instruction sentences (and fence) a reply repeats, word for word."""
    return [sentence for sentence in sentences if sentence.lower() in text.lower()]


def has_chinese(text: str) -> bool:
    return bool(_CHINESE.search(text))


def in_language(text: str, locale: str) -> bool:
    """A Chinese reply has Chinese characters; an English one is mostly Latin letters."""
    chinese, latin = len(_CHINESE.findall(text)), len(_LATIN.findall(text))
    if locale == "zh-Hans":
        return chinese > 0
    return latin > 0 and chinese <= latin * 0.2


def is_grounded(source: str, citations: list[dict[str, Any]]) -> bool:
    """From the knowledge base: an FAQ answer, or a quoted passage or reply that cites an article.

    A "knowledge" reply without a citation is the sentence that says nothing was found.
    """
    return source == "faq" or bool(citations)


def is_relevant(question: Question, source: str, text: str, citations: list[dict[str, Any]]) -> bool:
    """From the knowledge base and about the question's topic (see the module's docstring)."""
    if not is_grounded(source, citations):
        return False
    if question.topic is None:
        return True
    cited = " ".join(f"{citation.get('url', '')} {citation.get('title', '')}" for citation in citations)
    haystack = f"{cited} {text if source in {'faq', 'knowledge'} else ''}".lower()
    return any(word in haystack for word in TOPICS[question.topic])


async def ask(
    base_url: str, locale: str, text: str, *, reply_seconds: float = REPLY_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """Ask one question in a new conversation; the reply.done or reply.error frame that ends it."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for _ in range(CREATE_ATTEMPTS):
            response = await http.post("/api/widget/conversations", json={"locale": locale})
            if response.status_code != 429:
                break
            # Instant answers come faster than the widget's limit on new conversations per address
            # (30 a minute): wait as the platform says, as a customer would be made to.
            await asyncio.sleep(float(response.headers.get("Retry-After") or 10))
    response.raise_for_status()
    conversation = response.json()
    url = base_url.replace("http", "ws", 1) + conversation["ws_path"]
    async with websockets.connect(url, origin=Origin(base_url)) as socket:
        await socket.send(json.dumps({"type": "hello", "token": conversation["token"]}))
        async with asyncio.timeout(30):
            while json.loads(await socket.recv()).get("type") != "ready":
                pass
        await socket.send(json.dumps({"type": "message", "client_id": str(uuid.uuid4()), "text": text}))
        async with asyncio.timeout(reply_seconds):
            while True:
                frame = json.loads(await socket.recv())
                if frame.get("type") in {"reply.done", "reply.error"}:
                    return dict(frame)
                if frame.get("type") == "error":
                    return {"type": "reply.error", "code": frame.get("code"), "detail": frame.get("detail")}


async def quick_entries(base_url: str, locale: str) -> list[str]:
    """The demo's quick-entry questions in a language, as the widget lists them."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.get("/api/widget/faq", params={"locale": locale})
    response.raise_for_status()
    body = response.json()
    entries = body if isinstance(body, list) else body.get("entries", [])
    return [entry["question"] for entry in entries if isinstance(entry, dict) and entry.get("question")]


async def questions_for(base_url: str, locale: str, count: int) -> list[Question]:
    """The quick entries first, then paraphrases, `count` in all."""
    questions = [Question(locale, text, None) for text in await quick_entries(base_url, locale)]
    asked = {question.text for question in questions}
    questions += [Question(locale, text, topic) for text, topic in PARAPHRASES[locale] if text not in asked]
    return questions[:count]


def judge(question: Question, frame: dict[str, Any], sentences: list[str]) -> Answer:
    """What a reply frame is worth: relevant, in the right language, leak-free."""
    if frame.get("type") != "reply.done":
        return Answer(question, error=f"{frame.get('code')}: {frame.get('detail')}")
    message = frame.get("message") or {}
    text, source = str(message.get("text") or ""), str(message.get("source") or "")
    citations = [citation for citation in message.get("citations") or [] if isinstance(citation, dict)]
    return Answer(
        question,
        text=text,
        source=source,
        citations=citations,
        leaked=leaked_sentences(text, sentences),
        relevant=is_relevant(question, source, text, citations),
        right_language=in_language(text, question.locale),
    )


def one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def run(base_url: str, per_language: int) -> list[Answer]:
    """Ask every question, one at a time (the embedded default's model serves one reply at a time)."""
    sentences = instruction_sentences()
    answers = []
    for locale in LOCALES:
        for question in await questions_for(base_url, locale, per_language):
            try:
                frame = await ask(base_url, locale, question.text)
            except (TimeoutError, OSError, httpx.HTTPError, websockets.WebSocketException) as error:
                frame = {"type": "reply.error", "code": type(error).__name__, "detail": str(error)}
            answer = judge(question, frame, sentences)
            answers.append(answer)
            marks = "".join(
                mark if ok else "-"
                for mark, ok in (
                    ("R", answer.relevant),
                    ("L", answer.right_language),
                    ("S", answer.leak_free),
                )
            )
            cited = ",".join(str(citation.get("url", "")) for citation in answer.citations) or "-"
            print(
                f"{marks} {locale:7} {one_line(question.text, 40):40} | {answer.source or answer.error:9} | "
                f"{one_line(answer.text)} | {cited}",
                flush=True,
            )
    return answers


def summary(answers: list[Answer]) -> str:
    lines = ["", "R relevant, L right language, S leak-free (safe)", ""]
    for locale in LOCALES:
        mine = [answer for answer in answers if answer.question.locale == locale]
        if not mine:
            continue
        total = len(mine)
        counts = {
            "relevant": sum(answer.relevant for answer in mine),
            "right language": sum(answer.right_language for answer in mine),
            "leak-free": sum(answer.leak_free for answer in mine),
            "all three": sum(answer.good for answer in mine),
        }
        sources = {
            "from the FAQ": sum(answer.source == "faq" for answer in mine),
            "quoted": sum(answer.source == "knowledge" for answer in mine),
            "model citing": sum(answer.source == "model" and bool(answer.citations) for answer in mine),
            "model not citing": sum(answer.source == "model" and not answer.citations for answer in mine),
            "failed": sum(bool(answer.error) for answer in mine),
        }
        lines.append(
            f"{locale:7}: "
            + ", ".join(f"{name} {count}/{total}" for name, count in counts.items())
            + "; "
            + ", ".join(f"{name} {count}" for name, count in sources.items())
        )
    return "\n".join(lines)


def main() -> int:
    """Ask, judge and print; exit 1 when any reply leaks its instructions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="the running platform")
    parser.add_argument("--per-language", type=int, default=20, help="questions per language")
    parser.add_argument("--json", type=Path, help="also write every question and reply here")
    arguments = parser.parse_args()
    answers = asyncio.run(run(arguments.base_url.rstrip("/"), arguments.per_language))
    print(summary(answers))
    if arguments.json:
        arguments.json.write_text(
            json.dumps([asdict(answer) for answer in answers], ensure_ascii=False, indent=2), encoding="utf-8"
        )
    return 1 if any(answer.leaked for answer in answers) else 0


if __name__ == "__main__":
    raise SystemExit(main())
