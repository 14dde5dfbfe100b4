"""Find what the knowledge base says about a customer's question: articles' sections and FAQ entries.

Interface fixed for the helpers building it (knowledge/indexing.py builds the index). Not done yet.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FaqMatch", "Retrieval", "Source", "faq_match", "retrieve"]


@dataclass(frozen=True)
class Source:
    """One retrieved section of a published article, best first in a Retrieval."""

    chunk_id: int
    article_id: int
    slug: str
    title: str
    heading: str
    anchor: str
    text: str
    locale: str
    # Calibrated relevance, 0–1, comparable with RetrievalSettings.relevance_threshold.
    score: float

    @property
    def url(self) -> str:
        """Where a citation takes the customer: the article's public page, at the section."""
        return f"/kb/{self.slug}/#{self.anchor}" if self.anchor else f"/kb/{self.slug}/"


@dataclass(frozen=True)
class Retrieval:
    # At most RetrievalSettings.sources_per_reply, best first, each at or above the relevance threshold.
    sources: list[Source]

    @property
    def found(self) -> bool:
        """False on the "nothing found" path: the reply says so and offers a person."""
        return bool(self.sources)


@dataclass(frozen=True)
class FaqMatch:
    entry_id: int
    question: str
    answer: str
    locale: str
    score: float


def retrieve(*, query: str, locale: str) -> Retrieval:
    """The sections most relevant to `query`, in `locale` unless the settings allow any language."""
    raise NotImplementedError


def faq_match(*, question: str, locale: str) -> FaqMatch | None:
    """The published FAQ entry that answers `question`, if one is at or above the FAQ threshold."""
    raise NotImplementedError
