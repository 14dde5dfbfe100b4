"""Blocked terms found in a reply as it streams, before they reach the customer.

Pure code over plain strings, no Django and no database, so that the rules (what matches, what is
held back, what is let through) can be tested split by split without a server.

What matches: a term and the text are both normalised the same way, character by character: NFKC
(full-width letters and digits become ASCII, compatibility forms such as ﬁ become fi), case folded
(so "BAD", "Bad" and "ＢＡＤ" are "bad"), any white space one space, runs of it collapsed, and
invisible format characters (zero-width spaces and joiners, soft hyphens) dropped. A term written in
a Latin-like script matches whole words only ("ass" does not block "class" or "assist"); a term with
CJK characters in it matches anywhere, since Chinese has no spaces between words.

What is held back: a reply arrives in deltas, and a term may be split over them in any way ("b",
"ad"). The filter lets through at once everything that cannot be the start of a term, and holds back
the end of the text that could be (at most the longest term's length, normalised), until the next
delta says which it is; a whole-word term at the very end of the text waits for the next character
too ("bad" may become "badge"). Once a term is complete nothing from it onward is let through, and
`blocked` names the term: the caller stops the stream and says its replacement sentence instead.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BlockedTermFilter", "TermMatcher", "is_cjk", "normalise", "term_normalise"]

# Han (with extensions and compatibility ideographs), kana, Hangul, and CJK punctuation.
_CJK_RANGES = (
    (0x2E80, 0x2FFF),
    (0x3000, 0x303F),
    (0x3040, 0x30FF),
    (0x3100, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0xFF66, 0xFF9F),
    (0x20000, 0x3FFFF),
)


def is_cjk(character: str) -> bool:
    """Whether a character is Chinese, Japanese or Korean (a language without spaces between words)."""
    code = ord(character)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _is_word(character: str) -> bool:
    """A character a Latin-like word is made of: a letter, a digit or an underscore, not CJK."""
    return bool(character) and (character.isalnum() or character == "_") and not is_cjk(character)


def _normal(character: str) -> str:
    """One character as matching sees it: NFKC, case folded, white space as " ", format characters gone."""
    if unicodedata.category(character) == "Cf":
        return ""
    folded = unicodedata.normalize("NFKC", character).casefold()
    return "".join(" " if piece.isspace() else piece for piece in folded)


def normalise(text: str, *, before: str = "") -> tuple[str, list[int]]:
    """`text` normalised, and for each of its characters the index in `text` it came from.

    `before` is the normalised character just before `text` (what was already let through), so that
    white space collapses across the boundary as it would within one string.
    """
    characters: list[str] = []
    origins: list[int] = []
    previous = before
    for index, character in enumerate(text):
        for piece in _normal(character):
            if piece == " " and previous == " ":
                continue
            characters.append(piece)
            origins.append(index)
            previous = piece
    return "".join(characters), origins


def term_normalise(term: str) -> str:
    """A blocked term as it is matched (see `normalise`), without white space at either end."""
    return normalise(term.strip())[0].strip()


@dataclass(frozen=True)
class _Term:
    """A normalised term and what its ends need: a whole-word term wants no word character beside it."""

    shown: str
    needs_left: bool
    needs_right: bool


class TermMatcher:
    """A set of blocked terms, ready to be looked for in normalised text (shared by many filters)."""

    def __init__(self, terms: Iterable[str]) -> None:
        self._terms: dict[str, _Term] = {}
        for term in terms:
            normal = term_normalise(term)
            if not normal or normal in self._terms:
                continue
            whole_word = not any(is_cjk(character) for character in normal)
            self._terms[normal] = _Term(
                shown=term.strip(),
                needs_left=whole_word and _is_word(normal[0]),
                needs_right=whole_word and _is_word(normal[-1]),
            )
        # Longest first: at one position the longest term that matches is the one named.
        self._lengths = sorted({len(normal) for normal in self._terms}, reverse=True)
        self.max_length = self._lengths[0] if self._lengths else 0
        # Every start of every term (the whole term too): an end of text in here may become a term.
        self._free_prefixes: set[str] = set()
        self._word_prefixes: set[str] = set()
        for normal, entry in self._terms.items():
            prefixes = self._word_prefixes if entry.needs_left else self._free_prefixes
            prefixes.update(normal[:length] for length in range(1, len(normal) + 1))

    def __bool__(self) -> bool:
        return bool(self._terms)

    def first_match(self, text: str, *, before: str = "", final: bool = False) -> tuple[int, str] | None:
        """Where the first complete term in normalised `text` starts, and the term as configured.

        A whole-word term that ends the text is complete only when the text is `final` (the stream
        ended); otherwise the next character may still make it part of a longer word.
        """
        size = len(text)
        for start in range(size):
            left = text[start - 1] if start else before
            for length in self._lengths:
                end = start + length
                if end > size:
                    continue
                term = self._terms.get(text[start:end])
                if term is None:
                    continue
                if term.needs_left and _is_word(left):
                    continue
                if term.needs_right and (_is_word(text[end]) if end < size else not final):
                    continue
                return start, term.shown
        return None

    def hold_start(self, text: str, *, before: str = "") -> int:
        """Where the end of normalised `text` that may still grow into a term starts (len(text): none)."""
        size = len(text)
        for start in range(max(0, size - self.max_length), size):
            end = text[start:]
            if end in self._free_prefixes:
                return start
            left = text[start - 1] if start else before
            if end in self._word_prefixes and not _is_word(left):
                return start
        return size


class BlockedTermFilter:
    """Keeps blocked terms out of one streamed reply, delta by delta (see the module's docstring)."""

    def __init__(self, matcher: TermMatcher) -> None:
        self._matcher = matcher
        # Text received but not let through yet: it may be the start of a term.
        self._held = ""
        # The last normalised character let through: a whole word's left edge and white space need it.
        self._before = ""
        # The term that stopped the reply (as configured), once one is complete.
        self.blocked: str | None = None

    def feed(self, text: str) -> str:
        """The part of `text` (after what was held back) that can be shown now."""
        if self.blocked is not None:
            return ""
        return self._scan(self._held + text, final=False)

    def flush(self) -> str:
        """What was held back, once the stream has ended (unless it completes a term after all)."""
        if self.blocked is not None:
            return ""
        return self._scan(self._held, final=True)

    def _scan(self, text: str, *, final: bool) -> str:
        self._held = ""
        if not text or not self._matcher:
            return text
        normal, origins = normalise(text, before=self._before)
        hold = len(normal) if final else self._matcher.hold_start(normal, before=self._before)
        match = self._matcher.first_match(normal, before=self._before, final=final)
        if match is not None:
            start, self.blocked = match
            # Nothing from the term onward; what comes before it is harmless (the caller drops it too).
            return text[: origins[min(start, hold)]]
        if hold == len(normal):
            shown = text
            if normal:
                self._before = normal[-1]
            return shown
        cut = origins[hold]
        shown, self._held = text[:cut], text[cut:]
        # The normalised characters of what is let through: those that came from before the cut.
        let_through = next((index for index, origin in enumerate(origins) if origin >= cut), len(origins))
        if let_through:
            self._before = normal[let_through - 1]
        return shown
