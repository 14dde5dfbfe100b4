"""Retrieval bench: the demo knowledge base in a throwaway SQLite database, a labelled question set,
quality per language (hit@1, hit@3, MRR, correct "nothing found"), the calibration of the relevance
score, and retrieval latency at 10,000 chunks.

    .venv/bin/python -m bench.retrieval [--write-docs] [--calibrate] [--show-misses]
    .venv/bin/python -m bench.retrieval --articles DIR --faq FILE.csv --questions FILE.jsonl

The second form measures another base (say, articles and questions not written with the code),
imported as `import_articles --publish` and `import_faq` would.

Questions are JSON lines: {"question", "locale", "expected": [slug, ...]} (an empty list: the base
cannot answer it); "split": "holdout" marks a question kept out of calibration, otherwise every third
question is held out. Other spellings of the keys (text/query, lang/language, slugs/answers/article)
are read too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_QUESTIONS = ROOT / "bench" / "retrieval" / "questions.jsonl"
TUNING_QUESTIONS = ROOT / "bench" / "retrieval" / "tuning.jsonl"
FAQ_QUESTIONS = ROOT / "bench" / "retrieval" / "faq_tuning.jsonl"
DEMO = ROOT / "knowledge" / "demo"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
LATENCY_CHUNKS = 10_000
CONCURRENT_CLIENTS = 4


def _django_setup(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["KNOWLEDGE_INDEX_DIR"] = str(workdir / "index")
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_platform.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


@dataclass
class Question:
    text: str
    locale: str
    expected: list[str]
    is_holdout: bool
    faq: str = ""

    @property
    def is_answerable(self) -> bool:
        return bool(self.expected)


def _expected(raw: dict[str, Any]) -> list[str]:
    for key in ("expected", "expected_slugs", "slugs", "answers", "articles", "article", "slug"):
        if key in raw:
            value = raw[key]
            if value in (None, "", [], False):
                return []
            values = value if isinstance(value, list) else [value]
            return [str(item).split("#")[0].strip("/").removeprefix("kb/") for item in values if item]
    return []


def questions_load(path: Path) -> list[Question]:
    """The labelled questions of `path`; without a split field every third one is held out."""
    questions: list[Question] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        raw = json.loads(line)
        text = raw.get("question") or raw.get("text") or raw.get("query") or ""
        locale = raw.get("locale") or raw.get("lang") or raw.get("language") or "en"
        split = str(raw.get("split", "")).lower()
        is_holdout = split in {"holdout", "held-out", "test"} if split else number % 3 == 2
        faq = raw.get("faq") or ""
        questions.append(
            Question(text=text, locale=locale, expected=_expected(raw), is_holdout=is_holdout, faq=faq)
        )
    return questions


def base_load(*, articles: list[Path], faq_files: list[Path]) -> tuple[int, int]:
    """Import articles (files or folders, published) and FAQ CSV files into the bench database with
    the admin's import code, as `import_articles --publish` and `import_faq` do; the counts."""
    from knowledge import importing
    from knowledge.models import Article, FaqEntry

    report = importing.articles_import_paths(paths=articles, publish=True)
    for failure in report.failures:
        print(f"  import failed: {failure.name}: {failure.error}")
    for csv_file in faq_files:
        importing.faq_csv_import(text=csv_file.read_text(encoding="utf-8-sig"), source=csv_file.name)
    return Article.objects.count(), FaqEntry.objects.count()


@dataclass
class Outcome:
    question: Question
    ranked_slugs: list[str]
    found: bool
    features: list[tuple[float, float, bool]] = field(default_factory=list)


def evaluate(questions: list[Question]) -> list[Outcome]:
    """Rank every question as retrieve() does, keeping each top row's features for calibration."""
    from knowledge import indexing, retrieval

    index = indexing.index_current()
    assert index is not None, "no index build"
    config = retrieval.retrieval_config()
    outcomes: list[Outcome] = []
    for question in questions:
        rows = retrieval._locale_rows(index, question.locale, any_language=config.any_language)
        # The rows retrieve() weighs against the threshold.
        ranked = retrieval.chunk_ranking(
            index=index, query=question.text, rows=rows, limit=config.sources_per_reply * 3
        )
        slugs = [index.chunks[item.row]["slug"] for item in ranked]
        found = retrieval.retrieve(query=question.text, locale=question.locale).found
        features = [
            (item.cosine, item.coverage, slug in question.expected)
            for item, slug in zip(ranked, slugs, strict=True)
        ]
        outcomes.append(Outcome(question=question, ranked_slugs=slugs, found=found, features=features))
    return outcomes


@dataclass
class Figures:
    questions: int = 0
    answerable: int = 0
    unanswerable: int = 0
    hit_at_1: float = math.nan
    hit_at_3: float = math.nan
    mrr: float = math.nan
    nothing_found_correct: float = math.nan
    answered_when_answerable: float = math.nan


def figures(outcomes: list[Outcome]) -> Figures:
    """hit@1, hit@3 and MRR over answerable questions (the fused ranking); correct "nothing found"
    over unanswerable ones; and the share of answerable ones that passed the threshold."""
    result = Figures(questions=len(outcomes))
    answerable = [outcome for outcome in outcomes if outcome.question.is_answerable]
    unanswerable = [outcome for outcome in outcomes if not outcome.question.is_answerable]
    result.answerable, result.unanswerable = len(answerable), len(unanswerable)
    if answerable:
        ranks = []
        for outcome in answerable:
            rank = next(
                (i + 1 for i, slug in enumerate(outcome.ranked_slugs) if slug in outcome.question.expected),
                None,
            )
            ranks.append(rank)
        result.hit_at_1 = sum(1 for rank in ranks if rank == 1) / len(ranks)
        result.hit_at_3 = sum(1 for rank in ranks if rank is not None and rank <= 3) / len(ranks)
        result.mrr = sum(1 / rank for rank in ranks if rank) / len(ranks)
        result.answered_when_answerable = sum(1 for outcome in answerable if outcome.found) / len(answerable)
    if unanswerable:
        result.nothing_found_correct = sum(1 for outcome in unanswerable if not outcome.found) / len(
            unanswerable
        )
    return result


def _fit_logistic(rows: list[list[float]], labels: list[bool]) -> list[float]:
    """Weights (one per feature, then the bias) of a logistic regression: Newton's method, small L2."""
    import numpy as np

    x = np.array([[*row, 1.0] for row in rows])
    y = np.array([1.0 if label else 0.0 for label in labels])
    regulariser = np.diag([0.01] * (x.shape[1] - 1) + [0.0])
    weights = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ weights)))
        gradient = x.T @ (p - y) + regulariser @ weights
        hessian = (x.T * (p * (1 - p))) @ x + regulariser
        weights -= np.linalg.solve(hessian, gradient)
    return [float(weight) for weight in weights]


def decision_shares(outcomes: list[Outcome], threshold: float) -> tuple[float, float]:
    """At `threshold`: the share of answerable questions given a source, and the share of
    unanswerable ones given none (what retrieve() decides, from the ranked rows' features)."""
    from knowledge import retrieval

    answered = [
        any(retrieval.relevance_score(cosine=c, coverage=v) >= threshold for c, v, _ in outcome.features)
        for outcome in outcomes
    ]
    good_found = [a for a, o in zip(answered, outcomes, strict=True) if o.question.is_answerable]
    good_nothing = [not a for a, o in zip(answered, outcomes, strict=True) if not o.question.is_answerable]
    return sum(good_found) / max(1, len(good_found)), sum(good_nothing) / max(1, len(good_nothing))


VARIANTS = [
    ("search mode, English plurals (shipped)", True, "plural"),
    ("precise mode, English plurals", False, "plural"),
    ("search mode, light English stemming", True, "light"),
    ("search mode, no English stemming", True, "none"),
]


def tokeniser_variants(questions: list[Question]) -> list[str]:
    """The bench's table for each tokeniser variant (the index rebuilt; nothing embedded again)."""
    from knowledge import indexing, text

    lines = [
        "| tokeniser | part | hit@1 | hit@3 | MRR | correct nothing found | answered |",
        "|---|---|---|---|---|---|---|",
    ]
    shipped = (text.SEARCH_MODE, text.ENGLISH_STEMMING)
    try:
        for label, search_mode, stemming in VARIANTS:
            text.SEARCH_MODE, text.ENGLISH_STEMMING = search_mode, stemming
            text._segment = None
            indexing.index_rebuild()
            indexing.forget_loaded_index()
            outcomes = evaluate(questions)
            for part, is_holdout in (("tuning", False), ("held out", True)):
                result = figures(
                    [outcome for outcome in outcomes if outcome.question.is_holdout == is_holdout]
                )
                lines.append(
                    f"| {label} | {part} | {_format(result.hit_at_1)} | {_format(result.hit_at_3)} | "
                    f"{_format(result.mrr)} | {_format(result.nothing_found_correct)} | "
                    f"{_format(result.answered_when_answerable)} |"
                )
    finally:
        text.SEARCH_MODE, text.ENGLISH_STEMMING = shipped
        text._segment = None
    return lines


def calibrate(outcomes: list[Outcome]) -> dict[str, float]:
    """Fit the relevance score on the tuning questions and choose the threshold that best separates
    answerable questions (their top row relevant) from unanswerable ones."""
    from knowledge import retrieval

    samples = [feature for outcome in outcomes for feature in outcome.features]
    weights = _fit_logistic([[cosine, coverage] for cosine, coverage, _ in samples], [s[2] for s in samples])
    retrieval.RELEVANCE_COSINE_WEIGHT, retrieval.RELEVANCE_COVERAGE_WEIGHT = weights[0], weights[1]
    retrieval.RELEVANCE_BIAS = weights[2]
    best: tuple[float, float] = (-1.0, 0.5)
    for step in range(5, 96):
        threshold = step / 100
        share_found, share_nothing = decision_shares(outcomes, threshold)
        # Both errors matter: a wrong "nothing found" loses an answer, a wrong "found" invites a guess.
        balanced = min(share_found, share_nothing) + 0.01 * (share_found + share_nothing)
        if balanced > best[0]:
            best = (balanced, threshold)
        if step % 5 == 0:
            print(
                f"  threshold {threshold:.2f}: answered {share_found:.2f}, nothing found {share_nothing:.2f}"
            )
    return {
        "cosine": retrieval.RELEVANCE_COSINE_WEIGHT,
        "coverage": retrieval.RELEVANCE_COVERAGE_WEIGHT,
        "bias": retrieval.RELEVANCE_BIAS,
        "threshold": best[1],
    }


@dataclass
class FaqOutcome:
    text: str
    locale: str
    expected: str | None
    is_holdout: bool
    # (cosine, coverage, reverse coverage, is the expected entry, question) of the closest entries.
    candidates: list[tuple[float, float, float, bool, str]]


def faq_evaluate(path: Path) -> list[FaqOutcome]:
    """The closest FAQ entries of every question of `path` ({"question", "locale", "faq": the entry's
    question or null}); every third held out."""
    from knowledge import indexing, retrieval

    index = indexing.index_current()
    assert index is not None
    outcomes: list[FaqOutcome] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        raw = json.loads(line)
        candidates = retrieval.faq_candidates(index=index, question=raw["question"], locale=raw["locale"])
        rows = [
            (
                item.cosine,
                item.coverage,
                item.reverse_coverage,
                index.faqs[item.row]["question"] == raw["faq"],
                index.faqs[item.row]["question"],
            )
            for item in candidates
        ]
        outcomes.append(
            FaqOutcome(
                text=raw["question"],
                locale=raw["locale"],
                expected=raw["faq"],
                is_holdout=number % 3 == 2,
                candidates=rows,
            )
        )
    return outcomes


def faq_calibrate(outcomes: list[FaqOutcome]) -> dict[str, float]:
    """Fit the FAQ closeness on the tuning questions' candidates (logistic, three features)."""
    from knowledge import retrieval

    samples = [candidate for outcome in outcomes for candidate in outcome.candidates]
    weights = _fit_logistic(
        [[c, v, r] for c, v, r, _, _ in samples], [label for _, _, _, label, _ in samples]
    )
    retrieval.FAQ_COSINE_WEIGHT, retrieval.FAQ_COVERAGE_WEIGHT = weights[0], weights[1]
    retrieval.FAQ_REVERSE_COVERAGE_WEIGHT, retrieval.FAQ_BIAS = weights[2], weights[3]
    return {"cosine": weights[0], "coverage": weights[1], "reverse": weights[2], "bias": weights[3]}


def faq_figures(outcomes: list[FaqOutcome], threshold: float) -> dict[str, float]:
    """Of the questions an entry answers, the share matched to it; of those none answers, the share
    left unmatched; and of all matches made, the share that were right (precision)."""
    from knowledge import retrieval

    matched_right = answerable = unanswered_right = unanswerable = matches = right_matches = 0
    for outcome in outcomes:
        best = max(
            outcome.candidates,
            key=lambda c: retrieval.faq_score(cosine=c[0], coverage=c[1], reverse_coverage=c[2]),
            default=None,
        )
        score = (
            retrieval.faq_score(cosine=best[0], coverage=best[1], reverse_coverage=best[2]) if best else 0.0
        )
        is_match = best is not None and score >= threshold
        matches += is_match
        right_matches += bool(is_match and best and best[3])
        if outcome.expected:
            answerable += 1
            matched_right += bool(is_match and best and best[3])
        else:
            unanswerable += 1
            unanswered_right += not is_match
    return {
        "questions": len(outcomes),
        "matched": matched_right / max(1, answerable),
        "unmatched": unanswered_right / max(1, unanswerable),
        "precision": right_matches / max(1, matches),
    }


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def latency(questions: list[Question], workdir: Path) -> dict[str, float]:
    """retrieve() over an index of LATENCY_CHUNKS chunks made by repeating and perturbing the demo's:
    p50/p95 in ms with the query's embedding, and without it (vectors embedded beforehand)."""
    import numpy as np

    from knowledge import embedders, indexing, retrieval

    index = indexing.index_current()
    assert index is not None
    randomiser = random.Random(9)
    snapshot = indexing._Snapshot(dimension=index.dimension)
    base_vectors = np.asarray(index.chunk_vectors)
    # Copies in locale order, as a build writes its rows (a language is one slice of the matrix).
    for number in range(LATENCY_CHUNKS):
        row = number * len(index.chunks) // LATENCY_CHUNKS
        chunk = dict(index.chunks[row])
        words = chunk["text"].split()
        randomiser.shuffle(words)
        chunk["text"] = " ".join(words) + f" variant {number}"
        chunk["chunk_id"] = 1_000_000 + number
        snapshot.chunks.append(chunk)
        snapshot.chunk_texts.append(f"{chunk['title']} › {chunk['heading']}\n{chunk['text']}")
        noisy = base_vectors[row] + np.random.default_rng(number).normal(0, 0.02, index.dimension)
        snapshot.chunk_vectors.append((noisy / np.linalg.norm(noisy)).astype(np.float32))
    snapshot.faqs = list(index.faqs)
    snapshot.faq_vectors = list(np.asarray(index.faq_vectors))
    folder = indexing._files_write(build_id=900_000, snapshot=snapshot)
    assert folder.exists()
    big = indexing._load(900_000, index.embedder_model)
    original = retrieval.index_current
    retrieval.index_current = lambda: big
    try:
        texts = [question.text for question in questions] * max(1, 400 // max(1, len(questions)))
        locales = {question.text: question.locale for question in questions}
        # Warm up: the first query of a build makes its lexicon (IDF and spelling tables) once.
        for warm_up in questions:
            retrieval.retrieve(query=warm_up.text, locale=warm_up.locale)
        with_embedding = []
        for text in texts:
            start = time.perf_counter()
            retrieval.retrieve(query=text, locale=locales[text])
            with_embedding.append((time.perf_counter() - start) * 1000)
        # The same queries from CONCURRENT_CLIENTS threads at once, as a busy server asks them.
        concurrent: list[float] = []
        lock = threading.Lock()

        def client(first: int) -> None:
            for text in texts[first::CONCURRENT_CLIENTS]:
                start = time.perf_counter()
                retrieval.retrieve(query=text, locale=locales[text])
                with lock:
                    concurrent.append((time.perf_counter() - start) * 1000)

        clients = [threading.Thread(target=client, args=(first,)) for first in range(CONCURRENT_CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        embedder = embedders.embedder_get()
        cache = {text: embedder.encode([text]) for text in set(texts)}

        class Cached:
            model_name = embedder.model_name

            def encode(self, batch: list[str]) -> Any:
                return cache[batch[0]]

        real_get = retrieval.embedder_get
        retrieval.embedder_get = lambda: Cached()
        try:
            without_embedding = []
            for text in texts:
                start = time.perf_counter()
                retrieval.retrieve(query=text, locale=locales[text])
                without_embedding.append((time.perf_counter() - start) * 1000)
        finally:
            retrieval.embedder_get = real_get
    finally:
        retrieval.index_current = original
    return {
        "chunks": len(big.chunks),
        "queries": len(texts),
        "p50_ms": statistics.median(with_embedding),
        "p95_ms": _percentile(with_embedding, 0.95),
        "p50_ms_without_embedding": statistics.median(without_embedding),
        "p95_ms_without_embedding": _percentile(without_embedding, 0.95),
        "p50_ms_concurrent": statistics.median(concurrent),
        "p95_ms_concurrent": _percentile(concurrent, 0.95),
    }


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _language(locale: str) -> str:
    return "zh-Hans" if locale.lower().startswith("zh") else "en"


def _format(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def report_table(groups: dict[str, list[Outcome]]) -> list[str]:
    lines = [
        "| set | questions (answerable / not) | hit@1 | hit@3 | MRR | correct nothing found "
        "| answered (answerable) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, outcomes in groups.items():
        result = figures(outcomes)
        lines.append(
            f"| {name} | {result.questions} ({result.answerable} / {result.unanswerable}) | "
            f"{_format(result.hit_at_1)} | {_format(result.hit_at_3)} | {_format(result.mrr)} | "
            f"{_format(result.nothing_found_correct)} | {_format(result.answered_when_answerable)} |"
        )
    return lines


def docs_write(section: str) -> None:
    """Replace the "## Retrieval" section of docs/benchmarks.md (or append it); other sections stay."""
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Retrieval"), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new_lines = (
            lines[:start]
            + section.rstrip("\n").splitlines()
            + ([""] if end < len(lines) else [])
            + lines[end:]
        )
        new = "\n".join(new_lines) + "\n"
    BENCHMARKS.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=None, help="labelled questions (JSON lines)")
    parser.add_argument(
        "--articles", type=Path, action="append", help="article files or folders instead of knowledge/demo"
    )
    parser.add_argument("--faq", type=Path, action="append", help="FAQ CSV files instead of knowledge/demo's")
    parser.add_argument(
        "--faq-questions",
        type=Path,
        default=None,
        help='FAQ questions (JSON lines: "question", "locale", "faq")',
    )
    parser.add_argument("--write-docs", action="store_true", help="write the ## Retrieval section")
    parser.add_argument("--calibrate", action="store_true", help="fit the relevance score on the tuning part")
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--precise", action="store_true", help="jieba's precise mode instead of search mode")
    parser.add_argument(
        "--stemming", choices=["plural", "light", "none"], default=None, help="English stemming to measure"
    )
    parser.add_argument("--skip-latency", action="store_true")
    arguments = parser.parse_args(argv)
    path = arguments.questions or (DEFAULT_QUESTIONS if DEFAULT_QUESTIONS.exists() else TUNING_QUESTIONS)

    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as directory:
        workdir = Path(directory)
        _django_setup(workdir)
        from knowledge import embedders, indexing, retrieval, text

        text.SEARCH_MODE = not arguments.precise
        if arguments.stemming:
            text.ENGLISH_STEMMING = arguments.stemming

        articles, faqs = base_load(
            articles=arguments.articles or [DEMO / "articles"],
            faq_files=arguments.faq or sorted(DEMO.glob("*.csv")),
        )
        started = time.perf_counter()
        build = indexing.index_rebuild()
        build_seconds = time.perf_counter() - started
        questions = questions_load(path)
        print(
            f"{articles} articles, {faqs} FAQ entries; "
            f"{build.chunk_count} chunks indexed in {build_seconds:.1f} s"
        )
        print(f"{len(questions)} questions from {_shown(path)}")

        outcomes = evaluate(questions)
        if arguments.calibrate:
            fitted = calibrate([outcome for outcome in outcomes if not outcome.question.is_holdout])
            print("calibration (tuning part):", json.dumps({k: round(v, 3) for k, v in fitted.items()}))
            retrieval.DEFAULT_RELEVANCE_THRESHOLD = fitted["threshold"]
            retrieval.forget_retrieval_config()
            outcomes = evaluate(questions)

        groups: dict[str, list[Outcome]] = {}
        for outcome in outcomes:
            language = _language(outcome.question.locale)
            part = "held out" if outcome.question.is_holdout else "tuning"
            groups.setdefault(f"{language}, all", []).append(outcome)
            groups.setdefault(f"{language}, {part}", []).append(outcome)
        groups["all"] = outcomes
        groups["all, held out"] = [outcome for outcome in outcomes if outcome.question.is_holdout]
        groups = dict(sorted(groups.items()))
        table = report_table(groups)
        print("\n".join(table))
        if arguments.show_misses:
            for outcome in outcomes:
                question = outcome.question
                hit = any(slug in question.expected for slug in outcome.ranked_slugs[:3])
                if (question.is_answerable and (not hit or not outcome.found)) or (
                    not question.is_answerable and outcome.found
                ):
                    print(
                        f"  MISS {question.text!r} expected={question.expected} "
                        f"got={outcome.ranked_slugs[:3]} "
                        f"found={outcome.found}"
                    )

        # The FAQ questions are about the demo's entries: another base needs its own (--faq-questions).
        faq_path = arguments.faq_questions or (None if arguments.faq else FAQ_QUESTIONS)
        faq_outcomes = faq_evaluate(faq_path) if faq_path else []
        if arguments.calibrate:
            fitted_faq = faq_calibrate(
                [faq_outcome for faq_outcome in faq_outcomes if not faq_outcome.is_holdout]
            )
            print(
                "FAQ calibration (tuning part):", json.dumps({k: round(v, 3) for k, v in fitted_faq.items()})
            )
        faq_threshold = retrieval.retrieval_config().faq_match_threshold
        faq_table = [
            "| FAQ set | questions | matched to the right entry | no match when none answers | precision |",
            "|---|---|---|---|---|",
        ]
        for name, faq_part in (
            ("all", faq_outcomes),
            ("held out", [faq_outcome for faq_outcome in faq_outcomes if faq_outcome.is_holdout]),
        ):
            result = faq_figures(faq_part, faq_threshold)
            faq_table.append(
                f"| {name} | {result['questions']} | {result['matched']:.2f} | {result['unmatched']:.2f} "
                f"| {result['precision']:.2f} |"
            )
        if faq_outcomes:
            print(f"FAQ matching at the threshold {faq_threshold:.2f}:")
            print("\n".join(faq_table))
        if arguments.show_misses:
            for faq_outcome in faq_outcomes:
                best = faq_outcome.candidates[0] if faq_outcome.candidates else None
                score = (
                    retrieval.faq_score(cosine=best[0], coverage=best[1], reverse_coverage=best[2])
                    if best
                    else 0
                )
                print(
                    f"  FAQ {faq_outcome.text!r} expected={faq_outcome.expected!r} "
                    f"best={best[4] if best else None!r} "
                    f"score={score:.2f} cos={best[0] if best else 0:.2f}"
                )
        if arguments.skip_latency:
            return 0
        timing = latency(questions, workdir)
        print(
            f"latency at {timing['chunks']} chunks over {timing['queries']} queries: "
            f"p50 {timing['p50_ms']:.2f} ms, p95 {timing['p95_ms']:.2f} ms with the query's embedding; "
            f"p50 {timing['p50_ms_without_embedding']:.2f} ms, "
            f"p95 {timing['p95_ms_without_embedding']:.2f} ms without; "
            f"{CONCURRENT_CLIENTS} threads at once: p50 {timing['p50_ms_concurrent']:.2f} ms, "
            f"p95 {timing['p95_ms_concurrent']:.2f} ms"
        )
        config = retrieval.retrieval_config()
        if arguments.write_docs:
            tuning = [outcome for outcome in outcomes if not outcome.question.is_holdout]
            sweep = [
                "| relevance threshold | answered (tuning) | correct nothing found (tuning) |",
                "|---|---|---|",
            ]
            for threshold in (0.20, 0.25, 0.30, 0.35, 0.40, 0.50):
                share_found, share_nothing = decision_shares(tuning, threshold)
                sweep.append(f"| {threshold:.2f} | {share_found:.2f} | {share_nothing:.2f} |")
            variants = tokeniser_variants(questions)
            load = os.getloadavg()[0]
            section = [
                "## Retrieval",
                "",
                f"`.venv/bin/python -m bench.retrieval --write-docs`: the base ({articles} articles, "
                f"{build.chunk_count} chunks, {faqs} FAQ entries) imported into a throwaway SQLite database, "
                f"indexed with `{embedders.embedder_get().model_name}`, and the {len(questions)} questions "
                f"of `{_shown(path)}`. hit@k and MRR: the expected article among the k best "
                "sections of the fused ranking (answerable questions); correct nothing found: an "
                "unanswerable question got no source at or above the relevance threshold "
                f"({config.relevance_threshold:.2f}); answered: an answerable one got at least one. "
                '"Held out" questions (every third, or those marked `split: holdout`) were not used to '
                "calibrate the score or to tune the tokeniser.",
                "",
                *table,
                "",
                f"FAQ matching (`faq_match()`, threshold {faq_threshold:.2f}) on the "
                f"{len(faq_outcomes)} questions of `{_shown(faq_path) if faq_path else '-'}` (paraphrases of "
                "the demo's FAQ questions, and questions no entry answers); a quick-entry click, "
                "the entry's own question, always scores 1.0:",
                "",
                *faq_table,
                "",
                f"Latency of `retrieve()` at {timing['chunks']:,} chunks (the demo's repeated and "
                "perturbed), "
                f"{timing['queries']} queries, one thread: p50 {timing['p50_ms']:.2f} ms, p95 "
                f"{timing['p95_ms']:.2f} ms including the query's embedding; p50 "
                f"{timing['p50_ms_without_embedding']:.2f} ms, "
                f"p95 {timing['p95_ms_without_embedding']:.2f} ms "
                f"without it; from {CONCURRENT_CLIENTS} threads at once, p50 "
                f"{timing['p50_ms_concurrent']:.2f} ms, p95 {timing['p95_ms_concurrent']:.2f} ms. "
                "Index build of the base (chunking and embedding everything): "
                f"{build_seconds:.1f} s. Machine: {os.cpu_count()} CPUs, load average {load:.1f} while it "
                "ran (other sessions' tests shared it).",
                "",
                "The relevance score is a logistic function of a section's cosine and of the share of the "
                "question's IDF-weighted words it contains, fitted on the tuning part "
                "(`--calibrate`); the threshold against it, on the same part:",
                "",
                *sweep,
                "",
                "Tokeniser variants (same calibration; the index rebuilt, nothing embedded again):",
                "",
                *variants,
                "",
            ]
            docs_write("\n".join(section))
            print(f"wrote the Retrieval section of {BENCHMARKS.relative_to(ROOT)}")
    return 0
