"""Cut an article's Markdown into the sections retrieval finds and cites.

The lead paragraph (before the first heading) is one chunk with anchor "", each ## and ### heading
starts another; deeper headings stay inside their section. Anchors come from knowledge.anchors over
every level 2–6 heading of the body in order, as the public page computes them, so a citation opens
the page at its section. A long section is cut at paragraphs (or sentences) into parts that overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.anchors import HEADING_LINE, heading_anchors

__all__ = ["ChunkDraft", "article_chunks", "chunk_label", "indexed_text"]

# Sizes in "units": a Han character or a Latin word each count one (about a model token each).
MAX_CHUNK_UNITS = 400
# The end of the previous part repeated at the start of the next, so a sentence cut in two is whole
# in one of them.
OVERLAP_UNITS = 80

_UNIT = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[A-Za-z0-9]+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_TITLE_LINE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$")
_SENTENCE_END = re.compile(r"(?<=[。！？；.!?;])\s*")


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it is saved: its position in the article, heading, anchor and Markdown text."""

    position: int
    heading: str
    anchor: str
    text: str


def units(text: str) -> int:
    """The length of `text` in units (Han characters and Latin words)."""
    return len(_UNIT.findall(text))


def chunk_label(*, title: str, heading: str) -> str:
    """A chunk's label: the article's title and the section's heading ("Returns › Who pays")."""
    return f"{title} › {heading}" if heading and heading != title else title


def indexed_text(*, title: str, heading: str, text: str) -> str:
    """What is BM25-indexed (and hashed) for a chunk: its label, then its text (from the saved chunk
    alone, so that any process rebuilds the same index from the database)."""
    return f"{chunk_label(title=title, heading=heading)}\n{text}".strip()


def _body_lines(title: str, body: str) -> list[str]:
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # A body imported with its "# Title" first line: the title is the article's, not a section.
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        match = _TITLE_LINE.match(line.strip())
        if match:
            return lines[index + 1 :]
        break
    return lines


def article_chunks(*, title: str, body: str) -> list[ChunkDraft]:
    """The chunks of an article, in order: the lead (anchor ""), then one or more per ## or ### section."""
    sections: list[tuple[str, str, list[str]]] = [("", "", [])]
    headings: list[tuple[int, str]] = []
    in_fence = False
    for line in _body_lines(title, body):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else HEADING_LINE.match(line.rstrip())
        if match is None:
            sections[-1][2].append(line)
            continue
        level, heading = len(match.group(1)), match.group(2).strip()
        headings.append((level, heading))
        anchor = heading_anchors([text for _, text in headings])[-1]
        if level > 3:
            # Deeper headings stay in their section, as text.
            sections[-1][2].append(heading)
            continue
        sections.append((heading, anchor, []))

    drafts: list[ChunkDraft] = []
    for heading, anchor, lines in sections:
        text = "\n".join(lines).strip()
        if not text:
            continue
        for part in _split(text):
            drafts.append(ChunkDraft(position=len(drafts), heading=heading, anchor=anchor, text=part))
    return drafts


def _pieces(text: str) -> list[str]:
    """Paragraphs of `text`, a paragraph longer than a chunk cut into its sentences."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if units(paragraph) <= MAX_CHUNK_UNITS:
            pieces.append(paragraph)
            continue
        pieces.extend(sentence for sentence in _SENTENCE_END.split(paragraph) if sentence.strip())
    return pieces


def _split(text: str) -> list[str]:
    """`text` as one part, or as parts of at most about MAX_CHUNK_UNITS that overlap by a piece."""
    if units(text) <= MAX_CHUNK_UNITS:
        return [text]
    parts: list[list[str]] = [[]]
    size = 0
    for piece in _pieces(text):
        piece_units = units(piece)
        if parts[-1] and size + piece_units > MAX_CHUNK_UNITS:
            # Carry the last pieces of this part, up to OVERLAP_UNITS, into the next.
            carried: list[str] = []
            carried_units = 0
            for previous in reversed(parts[-1]):
                if carried_units + units(previous) > OVERLAP_UNITS:
                    break
                carried.insert(0, previous)
                carried_units += units(previous)
            parts.append(carried)
            size = carried_units
        parts[-1].append(piece)
        size += piece_units
    return ["\n\n".join(part) for part in parts if part]
