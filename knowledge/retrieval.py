"""Find what the knowledge base says about a customer's question: articles' sections and FAQ entries.

Hybrid: BM25 over segmented tokens and dense cosine over the embedder's vectors, fused by reciprocal
rank (k = 60), over the newest index build this process has loaded (knowledge/indexing.py). Each
source's calibrated relevance (0–1) is a logistic function of its cosine and of how much of the
query's (IDF-weighted) vocabulary it contains, fitted on the retrieval bench (bench/retrieval);
sources under RetrievalSettings.relevance_threshold are dropped, and none left is "nothing found".
FAQ matching scores a question against the published FAQ questions the same way; a question equal
to an entry's after normalisation (a quick-entry click) scores 1.0. No database query per call: the
settings row is read again at most every KNOWLEDGE_INDEX_CHECK_SECONDS.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError

from knowledge.embedders import embedder_get
from knowledge.indexing import LoadedIndex, index_current
from knowledge.models import RetrievalSettings
from knowledge.text import normalise_question, tokenize

logger = logging.getLogger(__name__)

__all__ = ["FaqMatch", "Retrieval", "Source", "faq_match", "retrieval_warm_up", "retrieve"]


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


# Reciprocal rank fusion's constant (Cormack et al.): a rank's weight is 1 / (RRF_K + rank).
RRF_K = 60
# How many of each ranking's best rows are fused.
CANDIDATES_PER_RANKING = 40
# A question is searched by its first this many characters: a pasted e-mail must not cost seconds.
MAX_QUERY_CHARACTERS = 1000

# The calibration, a logistic regression fitted by `python -m bench.retrieval --calibrate` on the
# tuning part of bench/retrieval/questions.jsonl (the held-out third is only measured): relevance
# of a section = sigmoid(COS * cosine + COVERAGE * share of the query's IDF-weighted tokens in it
# + BIAS), the probability that the section belongs to an article that answers the question.
RELEVANCE_COSINE_WEIGHT = 6.75
RELEVANCE_COVERAGE_WEIGHT = 1.23
RELEVANCE_BIAS = -3.81
# An FAQ question's closeness = sigmoid(COS * cosine + COVERAGE * share of the customer's tokens in
# the FAQ question + REVERSE * share of the FAQ question's tokens in the customer's + BIAS).
# Fitted the same way on bench/retrieval/faq_tuning.jsonl.
FAQ_COSINE_WEIGHT = 15.25
FAQ_COVERAGE_WEIGHT = 0.60
FAQ_REVERSE_COVERAGE_WEIGHT = 2.75
FAQ_BIAS = -11.39

# The thresholds used while no RetrievalSettings row exists, the same as the model's defaults. On the
# tuning questions the relevance threshold's best balance of answered and correct "nothing found"
# was 0.25 (0.93 / 0.95); 0.30 gives 0.92 / 0.95, within one question, and is what admin shows.
# At the FAQ default, 0.80, every FAQ match the bench made was the right entry.
DEFAULT_RELEVANCE_THRESHOLD = 0.30
DEFAULT_FAQ_MATCH_THRESHOLD = 0.80
DEFAULT_SOURCES_PER_REPLY = 3


@dataclass(frozen=True)
class RetrievalConfig:
    """RetrievalSettings' values, or the defaults when its row does not exist."""

    faq_match_threshold: float = DEFAULT_FAQ_MATCH_THRESHOLD
    relevance_threshold: float = DEFAULT_RELEVANCE_THRESHOLD
    sources_per_reply: int = DEFAULT_SOURCES_PER_REPLY
    any_language: bool = False


_config_lock = threading.Lock()
_config: RetrievalConfig | None = None
_config_read_at = -math.inf


def forget_retrieval_config() -> None:
    """Read the settings row again on the next call (tests; admin changes arrive within seconds anyway)."""
    global _config, _config_read_at
    with _config_lock:
        _config = None
        _config_read_at = -math.inf


def retrieval_config() -> RetrievalConfig:
    """The retrieval settings, read from the database at most every KNOWLEDGE_INDEX_CHECK_SECONDS."""
    global _config, _config_read_at
    now = time.monotonic()
    if _config is not None and now - _config_read_at < settings.KNOWLEDGE_INDEX_CHECK_SECONDS:
        return _config
    with _config_lock:
        try:
            row = RetrievalSettings.objects.filter(pk=1).first()
        except DatabaseError:
            row = None
            if _config is not None:
                return _config
        if row is None:
            # Read at call time, not bound when the class was made: the bench sets them.
            _config = RetrievalConfig(
                faq_match_threshold=DEFAULT_FAQ_MATCH_THRESHOLD,
                relevance_threshold=DEFAULT_RELEVANCE_THRESHOLD,
            )
        else:
            _config = RetrievalConfig(
                faq_match_threshold=row.faq_match_threshold,
                relevance_threshold=row.relevance_threshold,
                sources_per_reply=max(1, row.sources_per_reply),
                any_language=row.any_language,
            )
        _config_read_at = now
        return _config


def locale_normalised(locale: str) -> str:
    """A conversation's locale as the knowledge base writes it: zh, zh-CN, zh-hans → zh-Hans; en-US → en."""
    value = (locale or "").strip()
    lowered = value.lower()
    if lowered.startswith("zh"):
        return "zh-Hans"
    if lowered.startswith("en"):
        return "en"
    return value


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def relevance_score(*, cosine: float, coverage: float) -> float:
    """The calibrated 0–1 relevance of a section from its cosine and the query's coverage by it."""
    return _sigmoid(RELEVANCE_COSINE_WEIGHT * cosine + RELEVANCE_COVERAGE_WEIGHT * coverage + RELEVANCE_BIAS)


def faq_score(*, cosine: float, coverage: float, reverse_coverage: float) -> float:
    """The calibrated 0–1 closeness of a customer's question to an FAQ question."""
    return _sigmoid(
        FAQ_COSINE_WEIGHT * cosine
        + FAQ_COVERAGE_WEIGHT * coverage
        + FAQ_REVERSE_COVERAGE_WEIGHT * reverse_coverage
        + FAQ_BIAS
    )


@dataclass
class _Lexicon:
    """A BM25 index's vocabulary with each token's IDF, for coverage and spelling."""

    idf: dict[str, float]
    unknown_idf: float
    # Each known Latin word's one-letter deletions → the words (typos: "retrun" and "return" share
    # "retrn"), made on first use.
    deletions: dict[str, list[str]] | None = None


def _deletions(word: str) -> set[str]:
    return {word[:index] + word[index + 1 :] for index in range(len(word))}


def _is_spelled_right(token: str, lexicon: _Lexicon) -> bool:
    """Known, or not a Latin word long enough to correct."""
    return token in lexicon.idf or not token.isascii() or not token.isalpha() or len(token) < 4


def _spelling_corrected(tokens: list[str], lexicon: _Lexicon) -> list[str]:
    """Unknown Latin words of four letters or more replaced by a known word one edit away (the most
    frequent: the lowest IDF), so that "retrun" finds "return"; other tokens as they are."""
    if not lexicon.idf or all(_is_spelled_right(token, lexicon) for token in tokens):
        return tokens
    if lexicon.deletions is None:
        deletions: dict[str, list[str]] = {}
        for word in lexicon.idf:
            if word.isascii() and word.isalpha() and len(word) >= 3:
                for deleted in _deletions(word) | {word}:
                    deletions.setdefault(deleted, []).append(word)
        lexicon.deletions = deletions
    corrected: list[str] = []
    for token in tokens:
        if _is_spelled_right(token, lexicon):
            corrected.append(token)
            continue
        candidates = {word for key in _deletions(token) | {token} for word in lexicon.deletions.get(key, [])}
        corrected.append(min(candidates, key=lambda word: (lexicon.idf[word], word)) if candidates else token)
    return corrected


def _is_segmentation_artefact(token: str, tokens: list[str], lexicon: _Lexicon) -> bool:
    """An unknown Chinese token overlapping another of the query's: search mode's extra cut of a
    compound ("开发票" gives 开发, 发票, 开发票), which must not count as a word the base lacks."""
    if token in lexicon.idf or token.isascii():
        return False
    return any(other != token and (other in token or token in other) for other in tokens)


_lexicons: dict[tuple[int, str], _Lexicon] = {}


def _lexicon(index: LoadedIndex, kind: str) -> _Lexicon:
    key = (index.build_id, kind)
    lexicon = _lexicons.get(key)
    if lexicon is not None:
        return lexicon
    bm25 = index.chunk_bm25 if kind == "chunks" else index.faq_bm25
    if bm25 is None:
        lexicon = _Lexicon(idf={}, unknown_idf=1.0)
    else:
        documents = float(bm25.scores["num_docs"])
        frequency = np.diff(np.asarray(bm25.scores["indptr"]))
        idf = np.log1p((documents - frequency + 0.5) / (frequency + 0.5))
        lexicon = _Lexicon(
            idf={token: float(idf[token_id]) for token, token_id in bm25.vocab_dict.items() if token},
            unknown_idf=math.log1p((documents + 0.5) / 0.5),
        )
    if len(_lexicons) > 8:
        _lexicons.clear()
    _lexicons[key] = lexicon
    return lexicon


def _coverage(weights: dict[str, float], tokens: set[str]) -> float:
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    return sum(weight for token, weight in weights.items() if token in tokens) / total


def _query_weights(query_tokens: list[str], lexicon: _Lexicon) -> dict[str, float]:
    """Each distinct token's IDF (an unknown word weighs most: the base does not know it)."""
    return {
        token: lexicon.idf.get(token, lexicon.unknown_idf)
        for token in dict.fromkeys(query_tokens)
        if not _is_segmentation_artefact(token, query_tokens, lexicon)
    }


def _best_first(scores: np.ndarray, count: int, *, positive_only: bool) -> np.ndarray:
    """Positions of the `count` highest scores, best first; ties in row order (the same on every database)."""
    if scores.size == 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    count = min(count, scores.size)
    top = np.argpartition(-scores, count - 1)[:count] if count < scores.size else np.arange(scores.size)
    top = top[np.lexsort((top, -scores[top]))]
    if positive_only:
        top = top[scores[top] > 0]
    return top


def _cosines(vectors: np.ndarray, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The cosine of each of `rows` with `vector`; a language's rows are one slice (no copy).

    einsum, not `@`: BLAS's matrix-vector product is ~0.1 ms but wakes its thread pool, and on a busy
    server its p95 was 8 ms at 10,000 rows; einsum's single-threaded loop is 0.5 ms with a p95 of 0.8.
    """
    if rows.size and int(rows[-1]) - int(rows[0]) + 1 == rows.size:
        return np.einsum("ij,j->i", vectors[int(rows[0]) : int(rows[-1]) + 1], vector)
    return np.einsum("ij,j->i", vectors, vector)[rows]


def _query_vector(index: LoadedIndex, text: str) -> np.ndarray | None:
    """The query's vector, or None where the index has none of this embedder's (BM25 alone then)."""
    if index.dimension == 0:
        return None
    embedder = embedder_get()
    if embedder.model_name != index.embedder_model:
        logger.warning(
            "The index was built with %s but this process embeds with %s: lexical ranking only",
            index.embedder_model,
            embedder.model_name,
        )
        return None
    try:
        vector = embedder.encode([text])[0]
    except Exception:
        logger.exception("Could not embed a query: lexical ranking only")
        return None
    if vector.shape[0] != index.dimension:
        return None
    return vector


@dataclass(frozen=True)
class RankedRow:
    """A row of the index with its fused rank's features (the bench reads them to calibrate)."""

    row: int
    fused: float
    cosine: float
    bm25: float
    coverage: float
    score: float


def chunk_ranking(*, index: LoadedIndex, query: str, rows: np.ndarray, limit: int) -> list[RankedRow]:
    """The best `limit` chunk rows among `rows` by reciprocal rank fusion of BM25 and cosine, best first."""
    query = query[:MAX_QUERY_CHARACTERS]
    if rows.size == 0 or not query.strip():
        return []
    lexicon = _lexicon(index, "chunks")
    tokens = _spelling_corrected(tokenize(query), lexicon)
    bm25 = np.zeros(rows.size, dtype=np.float32)
    if tokens and index.chunk_bm25 is not None:
        bm25 = np.asarray(index.chunk_bm25.get_scores(tokens), dtype=np.float32)[rows]
    vector = _query_vector(index, query)
    cosine = np.zeros(rows.size, dtype=np.float32)
    if vector is not None:
        cosine = _cosines(index.chunk_vectors, vector, rows)
    fused: dict[int, float] = {}
    for position_rank, position in enumerate(_best_first(bm25, CANDIDATES_PER_RANKING, positive_only=True)):
        fused[int(position)] = fused.get(int(position), 0.0) + 1.0 / (RRF_K + position_rank + 1)
    if vector is not None:
        for position_rank, position in enumerate(
            _best_first(cosine, CANDIDATES_PER_RANKING, positive_only=False)
        ):
            fused[int(position)] = fused.get(int(position), 0.0) + 1.0 / (RRF_K + position_rank + 1)
    ordered = sorted(fused.items(), key=lambda item: (-item[1], int(rows[item[0]])))[:limit]
    weights = _query_weights(tokens, lexicon)
    ranked: list[RankedRow] = []
    for position, fused_score in ordered:
        row = int(rows[position])
        coverage = _coverage(weights, set(index.chunk_tokens[row]))
        row_cosine = float(cosine[position])
        ranked.append(
            RankedRow(
                row=row,
                fused=fused_score,
                cosine=row_cosine,
                bm25=float(bm25[position]),
                coverage=coverage,
                score=relevance_score(cosine=row_cosine, coverage=coverage),
            )
        )
    return ranked


def _locale_rows(index: LoadedIndex, locale: str, *, any_language: bool) -> np.ndarray:
    if any_language:
        return np.arange(len(index.chunks), dtype=np.int64)
    return index.chunk_rows_by_locale.get(locale_normalised(locale), np.zeros(0, dtype=np.int64))


def retrieve(*, query: str, locale: str) -> Retrieval:
    """The sections most relevant to `query`, in `locale` unless the settings allow any language."""
    index = index_current()
    if index is None or not index.chunks:
        return Retrieval(sources=[])
    config = retrieval_config()
    rows = _locale_rows(index, locale, any_language=config.any_language)
    ranked = chunk_ranking(index=index, query=query, rows=rows, limit=config.sources_per_reply * 3)
    sources: list[Source] = []
    seen: set[tuple[int, str]] = set()
    for item in ranked:
        if item.score < config.relevance_threshold:
            continue
        chunk: dict[str, Any] = index.chunks[item.row]
        # Parts of one long section share its anchor: cite the section once.
        key = (chunk["article_id"], chunk["anchor"])
        if key in seen:
            continue
        seen.add(key)
        sources.append(
            Source(
                chunk_id=chunk["chunk_id"],
                article_id=chunk["article_id"],
                slug=chunk["slug"],
                title=chunk["title"],
                heading=chunk["heading"],
                anchor=chunk["anchor"],
                text=chunk["text"],
                locale=chunk["locale"],
                score=round(item.score, 4),
            )
        )
        if len(sources) >= config.sources_per_reply:
            break
    return Retrieval(sources=sources)


@dataclass(frozen=True)
class FaqCandidate:
    """An FAQ row with its closeness features (the bench reads them to calibrate)."""

    row: int
    cosine: float
    coverage: float
    reverse_coverage: float
    score: float


def faq_candidates(*, index: LoadedIndex, question: str, locale: str, limit: int = 5) -> list[FaqCandidate]:
    """The FAQ rows in `locale` closest to `question`, closest first; an exact normalised match scores 1.0."""
    question = question[:MAX_QUERY_CHARACTERS]
    rows = index.faq_rows_by_locale.get(locale_normalised(locale), np.zeros(0, dtype=np.int64))
    normalised = normalise_question(question)
    if rows.size == 0 or not normalised:
        return []
    exact = index.faq_exact.get((locale_normalised(locale), normalised))
    if exact is not None:
        return [FaqCandidate(row=exact, cosine=1.0, coverage=1.0, reverse_coverage=1.0, score=1.0)]
    lexicon = _lexicon(index, "faq")
    tokens = _spelling_corrected(tokenize(question), lexicon)
    bm25 = np.zeros(rows.size, dtype=np.float32)
    if tokens and index.faq_bm25 is not None:
        bm25 = np.asarray(index.faq_bm25.get_scores(tokens), dtype=np.float32)[rows]
    vector = _query_vector(index, question)
    cosine = np.zeros(rows.size, dtype=np.float32)
    if vector is not None:
        cosine = _cosines(index.faq_vectors, vector, rows)
    positions = set(_best_first(bm25, limit, positive_only=True).tolist())
    positions.update(_best_first(cosine, limit, positive_only=False).tolist())
    weights = _query_weights(tokens, lexicon)
    candidates: list[FaqCandidate] = []
    for position in positions:
        row = int(rows[position])
        faq_tokens = index.faq_tokens[row]
        faq_weights = _query_weights(faq_tokens, lexicon)
        if not weights and not faq_weights:
            # Neither has a word beyond greetings and particles ("hi" and "Hello", "您好" and
            # "你好"): nothing lexical tells them apart, and the cosine decides.
            coverage = reverse = 1.0
        else:
            coverage = _coverage(weights, set(faq_tokens))
            reverse = _coverage(faq_weights, set(tokens))
        row_cosine = float(cosine[position])
        candidates.append(
            FaqCandidate(
                row=row,
                cosine=row_cosine,
                coverage=coverage,
                reverse_coverage=reverse,
                score=faq_score(cosine=row_cosine, coverage=coverage, reverse_coverage=reverse),
            )
        )
    candidates.sort(key=lambda candidate: (-candidate.score, candidate.row))
    return candidates[:limit]


def faq_match(*, question: str, locale: str) -> FaqMatch | None:
    """The published FAQ entry that answers `question`, if one is at or above the FAQ threshold."""
    index = index_current()
    if index is None or not index.faqs:
        return None
    candidates = faq_candidates(index=index, question=question, locale=locale, limit=5)
    if not candidates or candidates[0].score < retrieval_config().faq_match_threshold:
        return None
    best = candidates[0]
    entry: dict[str, Any] = index.faqs[best.row]
    return FaqMatch(
        entry_id=entry["entry_id"],
        question=entry["question"],
        answer=entry["answer"],
        locale=entry["locale"],
        score=round(best.score, 4),
    )


def retrieval_warm_up() -> None:
    """Load what a process's first question would otherwise wait seconds for: jieba's dictionary, the
    embedder's weights and the newest index. Called on a thread when a worker starts."""
    started = time.monotonic()
    try:
        tokenize("热身 warm up")
        embedder_get().encode(["warm up"])
        for locale in ("zh-Hans", "en"):
            retrieve(query="热身 warm up", locale=locale)
            faq_match(question="热身 warm up", locale=locale)
    except Exception:
        # A first question will load it (and say what is wrong) all the same.
        logger.exception("Warming up retrieval failed")
        return
    logger.info("Retrieval warmed up in %.1f s", time.monotonic() - started)
