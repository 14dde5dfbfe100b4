"""Grounding a reply in the knowledge base: the sources block of a prompt, citations read back from a
reply's markers, and a source passage shown as the answer (quote mode).

Pure functions over plain values, no Django and no database, so the rules a reply is judged by (which
sources the prompt shows, which of them the reply cites) are easy to test one by one and cannot drift
between the streaming path and anything else that needs them. A source is anything with the fields of
`knowledge.retrieval.Source`; nothing here imports it, so the knowledge app may change how it finds
sources without touching this.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

__all__ = [
    "CitableSource",
    "FenceTagFilter",
    "ToolCallTextFilter",
    "WrittenToolCall",
    "citation_of",
    "citations_from_text",
    "cited_numbers",
    "passage_trim",
    "quote_answer",
    "quote_lead",
    "quoted_passages",
    "source_entry",
    "sources_block",
    "unanswered_sentence",
]

logger = logging.getLogger(__name__)

SOURCES_OPEN = "<sources>"
SOURCES_CLOSE = "</sources>"

# A citation marker: [1], [1, 2], [1,2], [1、2], 【1】, 【1，2】; adjacent markers ([1][3]) match one by one.
_MARKER = re.compile(r"[\[【]\s*(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\s*[\]】]")
_NUMBER = re.compile(r"\d+")
# A fence written inside a source's own text would end the block early: it is neutralised.
_FENCE = re.compile(r"</?\s*sources\s*>", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[。！？!?.])\s*")

# How long a quoted passage may be, in characters: a screenful in the widget, not a whole article.
QUOTE_MAX_CHARACTERS = 600


class CitableSource(Protocol):
    """What grounding needs of a retrieved source (`knowledge.retrieval.Source` has it)."""

    @property
    def article_id(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def heading(self) -> str: ...
    @property
    def anchor(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def url(self) -> str: ...


def source_entry(number: int, source: CitableSource) -> str:
    """One numbered source as the prompt shows it: `[n] Title — Heading` and its text."""
    heading = f" — {source.heading}" if source.heading and source.heading != source.title else ""
    text = _FENCE.sub("", source.text).strip()
    return f"[{number}] {source.title}{heading}\n{text}"


def sources_block(sources: Sequence[CitableSource]) -> str:
    """The numbered sources between `<sources>` and `</sources>`, best first, numbered from 1."""
    entries = "\n\n".join(source_entry(number, source) for number, source in enumerate(sources, start=1))
    return f"{SOURCES_OPEN}\n{entries}\n{SOURCES_CLOSE}"


def cited_numbers(text: str) -> list[int]:
    """The source numbers a text's markers name, in order of first use, each once."""
    numbers: dict[int, None] = {}
    for marker in _MARKER.finditer(text):
        for number in _NUMBER.findall(marker.group(1)):
            numbers.setdefault(int(number), None)
    return list(numbers)


def citation_of(source: CitableSource) -> dict[str, Any]:
    """A source as a message's citation (DESIGN, Knowledge): article id, title, anchor and link."""
    return {"article": source.article_id, "title": source.title, "anchor": source.anchor, "url": source.url}


def citations_from_text(text: str, sources: Sequence[CitableSource]) -> list[dict[str, Any]]:
    """The citations a reply actually used: its markers' sources in order of first use.

    A marker pointing at no source ([7] of three, an order number in brackets) is ignored, and two
    sources of the same article section (a long section cut in two) make one citation.
    """
    citations: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for number in cited_numbers(text):
        if not 1 <= number <= len(sources):
            continue
        source = sources[number - 1]
        key = (source.article_id, source.anchor)
        if key in seen:
            continue
        seen.add(key)
        citations.append(citation_of(source))
    return citations


def passage_trim(text: str, max_characters: int = QUOTE_MAX_CHARACTERS) -> str:
    """A passage cut to a readable length at a paragraph's end, else a sentence's, Markdown kept."""
    text = text.strip()
    if len(text) <= max_characters:
        return text
    kept = ""
    for paragraph in re.split(r"\n\s*\n", text):
        candidate = f"{kept}\n\n{paragraph}" if kept else paragraph
        if len(candidate) > max_characters:
            break
        kept = candidate
    if kept:
        return f"{kept}\n\n…"
    # The first paragraph alone is too long: keep its whole sentences that fit.
    first = re.split(r"\n\s*\n", text)[0]
    sentences = [sentence for sentence in _SENTENCE_END.split(first) if sentence]
    kept = ""
    for sentence in sentences:
        separator = "" if not kept or _is_wide(kept[-1]) else " "
        candidate = f"{kept}{separator}{sentence}"
        if len(candidate) > max_characters:
            break
        kept = candidate
    return f"{kept or first[:max_characters].rstrip()}…"


def _is_wide(character: str) -> bool:
    return "\u2e80" <= character <= "\uffef"


def quote_lead(title: str, locale: str) -> str:
    """The line before a quoted passage, in the conversation's language: where the answer comes from."""
    if locale == "zh-Hans":
        return f"根据《{title}》："
    return f"From “{title}”:"


def quoted_passages(sources: Sequence[CitableSource]) -> list[CitableSource]:
    """What quote mode shows of the sources (best first): the best one, and when that is an article's
    lead, also the best-ranked section of the same article among them.

    A lead ranks high (it sums the article up) but mostly says what the sections below explain
    ("here is what to check"): measured on the demo base, the section after it is what answers.
    """
    best = sources[0]
    if best.anchor:
        return [best]
    section = next(
        (source for source in sources[1:] if source.article_id == best.article_id and source.anchor), None
    )
    return [best, section] if section is not None else [best]


def quote_answer(
    passages: Sequence[CitableSource], locale: str, max_characters: int = QUOTE_MAX_CHARACTERS
) -> str:
    """The reply of quote mode: a one-line lead naming the article, then its passages (`quoted_passages`)."""
    text = "\n\n".join(_FENCE.sub("", passage.text).strip() for passage in passages)
    return f"{quote_lead(passages[0].title, locale)}\n\n{passage_trim(text, max_characters)}"


# What a reply says when the knowledge base has nothing on the question and no model phrases it.
UNANSWERED_SENTENCES = {
    "zh-Hans": "抱歉，我们的帮助中心里没有找到关于这个问题的内容。需要的话，我可以为您转接人工客服。",
    "en": "Sorry, I could not find anything about this in our help center. If you like, I can connect you "
    "with a person.",
}


def unanswered_sentence(locale: str) -> str:
    """The fixed "nothing found, a person can help" sentence in the conversation's language."""
    return UNANSWERED_SENTENCES.get(locale, UNANSWERED_SENTENCES["en"])


# The prompt's fence as a small model echoes it (<sources>, </source>, < sources >), with the line
# break after it.
_ECHOED_FENCE = re.compile(r"<\s*/?\s*sources?\s*>[ \t]*\n?", re.IGNORECASE)
_FENCE_TAGS = ("<sources>", "</sources>")
# Longer than any spelling of a fence tag worth holding back ("< / sources >").
_FENCE_PREFIX_MAX = 14


def _could_become_fence(fragment: str) -> bool:
    compact = re.sub(r"\s", "", fragment.lower())
    return any(tag.startswith(compact) for tag in _FENCE_TAGS)


class FenceTagFilter:
    """Takes the prompt's `<sources>` fence tags out of a streamed reply, token by token.

    A weak model sometimes repeats the tag that opened or closed its sources; the customer must never
    see the prompt's scaffolding. A tag can arrive split over tokens ("<", "sour", "ces>"), so a text
    that ends in what may be the start of one is held back until the next token says what it is.
    """

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        """The part of `text` (after what was held back) that can be shown now."""
        text = _ECHOED_FENCE.sub("", self._held + text)
        self._held = ""
        start = text.rfind("<")
        if start != -1 and len(text) - start <= _FENCE_PREFIX_MAX and _could_become_fence(text[start:]):
            text, self._held = text[:start], text[start:]
        return text

    def flush(self) -> str:
        """What was held back, once the stream has ended (it was not a tag after all)."""
        held, self._held = self._held, ""
        return held


# A tool call written out as text in the Hermes format of Qwen's chat template, which vLLM turns into
# `tool_calls` only when started with a tool-call parser.
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_TOOL_NAME = re.compile(r'"name"\s*:\s*"([^"\\]+)"')


class WrittenToolCall(NamedTuple):
    """A tool call the model wrote as text: its name and its arguments as JSON text ("" if unreadable)."""

    name: str
    arguments: str


def _written_tool_call(body: str) -> WrittenToolCall | None:
    """The call in a `<tool_call>` block: `{"name": ..., "arguments": {...}}`, read as well as it can be.

    Arguments that are not JSON leave the call with none (its caller decides what that means); a
    block with no readable name is no call at all.
    """
    try:
        parsed = json.loads(body.strip())
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("name"), str):
        arguments = parsed.get("arguments", parsed.get("parameters"))
        if isinstance(arguments, str):
            text = arguments
        elif arguments is None:
            text = ""
        else:
            text = json.dumps(arguments, ensure_ascii=False)
        return WrittenToolCall(name=parsed["name"].strip(), arguments=text)
    named = _TOOL_NAME.search(body)
    if named is None:
        logger.warning("The model wrote a tool call with no readable name; dropped")
        return None
    return WrittenToolCall(name=named.group(1).strip(), arguments="")


def _tag_prefix_start(text: str, tag: str) -> int:
    """Where the longest end of `text` that could still grow into `tag` starts (len(text): none)."""
    for start in range(max(0, len(text) - len(tag) + 1), len(text)):
        if tag.startswith(text[start:]):
            return start
    return len(text)


class ToolCallTextFilter:
    """Takes tool calls written as text (`<tool_call>{...}</tool_call>`) out of a streamed reply.

    Qwen served without vLLM's tool-call parser, or a call the parser missed, arrives in the content:
    the customer must never see it, and the call is the model's all the same. A tag can arrive split
    over tokens, so an end that may be the start of one is held back, with the white space before it
    (the blank line a model writes before its call is no part of the reply); everything from the
    opening tag to the closing one is kept out and read as a call (`calls`).
    """

    def __init__(self) -> None:
        self._held = ""
        self._inside = False
        self._body = ""
        # Nothing but white space since the last call: what is held back at the end is dropped.
        self._after_call = False
        # The calls read so far, in order; the caller takes them (`take_calls`).
        self.calls: list[WrittenToolCall] = []

    def feed(self, text: str) -> str:
        """The part of `text` (after what was held back) that can be shown now."""
        shown: list[str] = []
        rest, self._held = self._held + text, ""
        while rest:
            if self._inside:
                self._body += rest
                end = self._body.find(TOOL_CALL_CLOSE)
                if end == -1:
                    return "".join(shown)
                body, after = self._body[:end], self._body[end + len(TOOL_CALL_CLOSE) :]
                self._inside, self._body, self._after_call = False, "", True
                # Text after a call (rare) keeps one space from what came before it, not a blank line.
                rest = after.lstrip()
                if rest and len(rest) < len(after):
                    rest = f" {rest}"
                self._read(body)
                continue
            start = rest.find(TOOL_CALL_OPEN)
            if start != -1:
                shown.append(rest[:start].rstrip())
                rest, self._inside = rest[start + len(TOOL_CALL_OPEN) :], True
                continue
            cut = _tag_prefix_start(rest, TOOL_CALL_OPEN)
            while cut > 0 and rest[cut - 1].isspace():
                cut -= 1
            shown.append(rest[:cut])
            self._held = rest[cut:]
            break
        text = "".join(shown)
        if text.strip():
            self._after_call = False
        return text

    def flush(self) -> str:
        """What was held back, once the stream has ended; a call never closed is read as it stands."""
        if self._inside:
            body, self._inside, self._body = self._body, False, ""
            self._read(body)
            return ""
        held, self._held = self._held, ""
        # The blank line a model ends with after its call is no part of the reply.
        return "" if self._after_call and held.isspace() else held

    def take_calls(self) -> list[WrittenToolCall]:
        """The calls read since the last take, and forget them."""
        calls, self.calls = self.calls, []
        return calls

    def _read(self, body: str) -> None:
        call = _written_tool_call(body)
        if call is not None:
            self.calls.append(call)
