"""The embedded default's real local model answers the demo's questions as a new user asks them.

`manage.py run_embedded` as `make run` starts it (the demo knowledge base loaded, its own llama.cpp
server with the local model), then the demo's quick entries and paraphrases of its topics in both
languages (bench/local_answers.py asks 20 per language and counts; this asks fewer and insists).
Every reply must keep the hidden instructions to itself, come from the knowledge base (an FAQ
answer, a quoted passage, or a reply citing an article), and a Chinese question must be answered in
Chinese.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.local_answers import (
    PARAPHRASES,
    Question,
    ask,
    has_chinese,
    instruction_sentences,
    is_grounded,
    is_relevant,
    leaked_sentences,
    quick_entries,
)
from tests.test_end_to_end import _assert_no_instructions, embedded_platform  # noqa: F401 - a fixture

pytestmark = pytest.mark.e2e

# A few paraphrases per language: the bench asks all of them.
PARAPHRASES_ASKED = 4
LOCALES = ["en", "zh-Hans"]


def problems_with(question: Question, frame: dict[str, Any], sentences: list[str]) -> list[str]:
    """What is wrong with one reply, in words; an empty list when nothing is."""
    if frame.get("type") != "reply.done":
        return [f"no reply: {frame.get('code')}: {frame.get('detail')}"]
    message = frame["message"]
    text, source = str(message["text"]), str(message["source"])
    problems = []
    try:
        # The leak check of the other end-to-end tests, then the knowledge instructions and the fence.
        _assert_no_instructions(text)
    except AssertionError as error:
        problems.append(str(error))
    if leaked := leaked_sentences(text, sentences):
        problems.append(f"repeats its instructions: {leaked}")
    if question.locale == "zh-Hans" and not has_chinese(text):
        problems.append("a Chinese question answered without Chinese")
    if question.topic is None and source != "faq":
        problems.append(f"a quick entry not answered from the FAQ (source {source!r})")
    return problems


def relevance_problem(question: Question, frame: dict[str, Any]) -> str | None:
    """Why a reply that came is not an answer from the knowledge base about its topic, or None."""
    message = frame["message"]
    text, source, citations = str(message["text"]), str(message["source"]), list(message["citations"])
    if not is_grounded(source, citations):
        return f"not from the knowledge base (source {source!r}, no citations)"
    if not is_relevant(question, source, text, citations):
        return f"not about {question.topic} (source {source!r}, citations {citations})"
    return None


@pytest.mark.parametrize("locale", LOCALES)
async def test_it_answers_the_demo_questions_from_the_knowledge_base_without_leaking_its_instructions(
    embedded_platform: tuple[str, subprocess.Popen[bytes], Path],  # noqa: F811 - the fixture imported above
    locale: str,
) -> None:
    base_url, process, _ = embedded_platform
    entries = await quick_entries(base_url, locale)
    questions = [Question(locale, text, None) for text in entries]
    questions += [Question(locale, text, topic) for text, topic in PARAPHRASES[locale][:PARAPHRASES_ASKED]]
    sentences = instruction_sentences()

    # The demo has quick entries in both languages (knowledge/demo/faq.csv); the paraphrases are
    # asked all the same, so that one run tells everything that is wrong.
    report = [] if entries else [f"no quick entries in {locale}"]
    misses = []
    for question in questions:
        frame = await ask(base_url, locale, question.text)
        text = (frame.get("message") or {}).get("text", "")
        if problems := problems_with(question, frame, sentences):
            report.append(f"{question.text!r} → {text!r}: {'; '.join(problems)}")
        elif miss := relevance_problem(question, frame):
            misses.append(f"{question.text!r} → {text!r}: {miss}")

    # Never a leak, a Chinese question answered in another language, or a quick entry missed.
    assert report == [], "\n".join(report)
    # Retrieval is measured, not perfect (bench/local_answers.py: 19 of 20 per language): one
    # paraphrase of the four may miss; two would mean the demo's first impression got worse.
    assert len(misses) <= 1, "\n".join(misses)
    assert process.poll() is None
