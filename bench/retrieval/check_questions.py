"""Checks the demo knowledge base and the labelled retrieval questions for shape and consistency.

Run with `.venv/bin/python bench/retrieval/check_questions.py`; it exits non-zero with one line per
problem. No Django: it reads the files the way import_articles and import_faq are meant to.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTICLES = ROOT / "knowledge" / "demo" / "articles"
FAQ = ROOT / "knowledge" / "demo" / "faq.csv"
QUESTIONS = ROOT / "bench" / "retrieval" / "questions.jsonl"
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
KINDS = {"paraphrase", "typo", "colloquial", "mixed", "direct", "unanswerable"}
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


def section_size(text: str, locale: str) -> int:
    """Words for English; for Chinese, characters without spaces and Markdown marks."""
    if locale == "en":
        return len(re.findall(r"[A-Za-z0-9¥%.'/–-]+", text))
    return len(re.sub(r"[\s*#]|^\d+\.|^-", "", text, flags=re.MULTILINE))


def check_article(path: Path, locale: str, problems: list[str]) -> None:
    """Front matter, title first, a lead paragraph, 3–6 sections of the right size."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\nlang: (\S+)\ntags: (.+)\n---\n(.*)$", text, re.DOTALL)
    if match is None:
        problems.append(f"{path.name}: front matter")
        return
    if match.group(1) != locale:
        problems.append(f"{path.name}: lang {match.group(1)} in {locale}/")
    body = match.group(3).strip().splitlines()
    if not body or not body[0].startswith("# "):
        problems.append(f"{path.name}: body does not start with '# Title'")
        return
    sections = re.split(r"^## .+$", "\n".join(body[1:]), flags=re.MULTILINE)
    lead, sections = sections[0].strip(), sections[1:]
    if not lead:
        problems.append(f"{path.name}: no lead paragraph")
    if not 3 <= len(sections) <= 6:
        problems.append(f"{path.name}: {len(sections)} sections")
    low, high = (60, 200) if locale == "en" else (100, 350)
    for number, section in enumerate(sections, start=1):
        size = section_size(section, locale)
        if not low <= size <= high:
            problems.append(f"{path.name}: section {number} has size {size}")
    if "http" in text or "![" in text:
        problems.append(f"{path.name}: link or image")


def main() -> int:
    """Prints the counts and the problems; 1 when there is any problem."""
    problems: list[str] = []
    slugs: dict[str, str] = {}
    for locale in ("en", "zh-Hans"):
        paths = sorted((ARTICLES / locale).glob("*.md"))
        if len(paths) < 24:
            problems.append(f"{locale}: only {len(paths)} articles")
        for path in paths:
            slug = path.stem
            if not SLUG.match(slug) or slug in slugs:
                problems.append(f"{slug}: bad or repeated slug")
            if (locale == "zh-Hans") != slug.endswith("-zh"):
                problems.append(f"{slug}: -zh suffix does not match {locale}")
            slugs[slug] = locale
            check_article(path, locale, problems)
    print("articles:", Counter(slugs.values()))

    if not FAQ.exists():
        problems.append("faq.csv missing")
        rows: list[dict[str, str]] = []
    else:
        rows = read_faq(problems)
    check_faq(rows, problems)

    if QUESTIONS.exists():
        check_questions(slugs, problems)
    for problem in problems:
        print("PROBLEM", problem)
    return 1 if problems else 0


def read_faq(problems: list[str]) -> list[dict[str, str]]:
    """The FAQ rows, read with the csv module as import_faq would."""
    with FAQ.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = ["question", "answer", "locale", "is_quick_entry", "position", "is_published"]
        if reader.fieldnames != header:
            problems.append(f"faq.csv header {reader.fieldnames}")
        return list(reader)


def check_faq(rows: list[dict[str, str]], problems: list[str]) -> None:
    """Counts per language, the exact quick entries in order, booleans and answers."""
    faq_counts = Counter(row["locale"] for row in rows)
    print("faq:", faq_counts)
    for locale, expected in QUICK_ENTRIES.items():
        if faq_counts[locale] < 16:
            problems.append(f"faq: only {faq_counts[locale]} in {locale}")
        quick = [row for row in rows if row["locale"] == locale and row["is_quick_entry"] == "true"]
        quick.sort(key=lambda row: int(row["position"]))
        if [row["question"] for row in quick] != expected:
            problems.append(f"faq quick entries {locale}: {[row['question'] for row in quick]}")
        if [int(row["position"]) for row in quick] != list(range(5)):
            problems.append(f"faq quick entry positions {locale}")
    for row in rows:
        if row["is_quick_entry"] not in ("true", "false") or row["is_published"] not in ("true", "false"):
            problems.append(f"faq booleans: {row['question']}")
        if not row["answer"].strip():
            problems.append(f"faq empty answer: {row['question']}")


def check_questions(slugs: dict[str, str], problems: list[str]) -> None:
    """Every expected slug exists in the question's language; counts per language and kind."""
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line]
    identifiers = Counter(question["id"] for question in questions)
    problems += [f"repeated id {key}" for key, count in identifiers.items() if count > 1]
    for question in questions:
        if question["kind"] not in KINDS:
            problems.append(f"{question['id']}: kind {question['kind']}")
        if (question["kind"] == "unanswerable") != (question["expected"] == []):
            problems.append(f"{question['id']}: unanswerable and expected disagree")
        if len(question["expected"]) > 2:
            problems.append(f"{question['id']}: more than two expected")
        for slug in question["expected"]:
            if slugs.get(slug) != question["locale"]:
                problems.append(f"{question['id']}: {slug} missing or in another language")
    by_locale = Counter(question["locale"] for question in questions)
    by_kind = Counter((question["locale"], question["kind"]) for question in questions)
    print("questions:", len(questions), dict(by_locale))
    print("kinds:", dict(sorted(by_kind.items())))
    if len(questions) < 130 or min(by_locale["en"], by_locale["zh-Hans"]) < 60:
        problems.append("questions: counts")
    if sum(count for (_, kind), count in by_kind.items() if kind == "unanswerable") < 25:
        problems.append("questions: fewer than 25 unanswerable")


if __name__ == "__main__":
    sys.exit(main())
