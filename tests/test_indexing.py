"""Indexing: tokens, chunks, embedders, index builds and their files, and how processes load them."""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.cache import cache

from knowledge import embedders, indexing, retrieval, tasks
from knowledge.anchors import heading_anchors
from knowledge.chunking import MAX_CHUNK_UNITS, article_chunks, units
from knowledge.embedders import EmbedderError, OpenAIEmbedder
from knowledge.models import Article, Chunk, Embedding, FaqEntry, IndexBuild
from knowledge.text import normalise_question, tokenize
from tests.test_settings import start_up

ARTICLE = """# Returns

You can return most items within 30 days.

## How to return

Open the order and choose Return.

### Print the label

Print the prepaid label.

#### A note

Keep the receipt.

```
## not a heading, inside code
```

## How to return

The same heading again.
"""

# How the ### section's #### heading and its code block end up in its text.
NOTE_AND_CODE = "A note\n\nKeep the receipt.\n\n```\n## not a heading, inside code\n```"


@pytest.fixture
def knowledge_index(settings: Any, tmp_path: Path) -> Path:
    settings.KNOWLEDGE_INDEX_DIR = tmp_path / "index"
    settings.KNOWLEDGE_INDEX_CHECK_SECONDS = 1e-9
    indexing.forget_loaded_index()
    retrieval.forget_retrieval_config()
    return settings.KNOWLEDGE_INDEX_DIR


class CountingEmbedder:
    """A deterministic embedder of 8 dimensions that counts what it embeds."""

    def __init__(self, model_name: str = "counting-v1", dimension: int = 8) -> None:
        self.model_name = model_name
        self.dimension = dimension
        self.texts: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        rows = [
            np.frombuffer(hashlib.sha256(text.encode()).digest()[: self.dimension], dtype=np.uint8).astype(
                np.float32
            )
            + 1.0
            for text in texts
        ]
        return (
            embedders.normalised_rows(np.vstack(rows)) if rows else np.zeros((0, self.dimension), np.float32)
        )


class RefusingEmbedder:
    model_name = "counting-v1"

    def encode(self, texts: list[str]) -> np.ndarray:
        raise AssertionError(f"nothing may be embedded again, asked for {texts!r}")


@pytest.fixture
def counting_embedder(monkeypatch: pytest.MonkeyPatch) -> CountingEmbedder:
    embedder = CountingEmbedder()
    monkeypatch.setattr(indexing, "embedder_get", lambda: embedder)
    monkeypatch.setattr(retrieval, "embedder_get", lambda: embedder)
    return embedder


def published(slug: str, body: str, *, title: str = "Returns", locale: str = "en") -> Article:
    return Article.objects.create(
        slug=slug, title=title, body=body, locale=locale, status=Article.Status.PUBLISHED
    )


# Tokens -------------------------------------------------------------------------------------------


def test_it_segments_chinese_into_words_not_characters() -> None:
    assert tokenize("我的订单一直没发货怎么办？") == ["订单", "一直", "发货"]
    assert tokenize("退款多久到账") == ["退款", "多久", "到账"]


def test_it_lowercases_english_drops_stop_words_and_plurals() -> None:
    assert tokenize("How do I return the items I ORDERED?") == ["return", "item", "ordered"]
    assert tokenize("Returns, boxes, policies, glass") == ["return", "box", "policy", "glass"]


def test_it_tokenises_mixed_chinese_and_english_and_full_width_letters() -> None:
    assert tokenize("我的order没到账") == ["order", "到账"]
    assert tokenize("ＶＩＰ会员") == ["vip", "会员"]


def test_it_normalises_a_question_for_exact_matches() -> None:
    assert normalise_question(" How do I return an item? ") == normalise_question("how do i return an item")
    assert normalise_question("如何退货？") == "如何退货"


# Chunks -------------------------------------------------------------------------------------------


def test_it_cuts_an_article_at_its_headings_with_the_page_anchors() -> None:
    drafts = article_chunks(title="Returns", body=ARTICLE)

    assert [(draft.position, draft.heading, draft.anchor) for draft in drafts] == [
        (0, "", ""),
        (1, "How to return", "how-to-return"),
        (2, "Print the label", "print-the-label"),
        (3, "How to return", "how-to-return-2"),
    ]
    assert drafts[0].text == "You can return most items within 30 days."
    assert drafts[2].text == f"Print the prepaid label.\n\n{NOTE_AND_CODE}"
    assert heading_anchors(["How to return", "Print the label", "A note", "How to return"]) == [
        "how-to-return",
        "print-the-label",
        "a-note",
        "how-to-return-2",
    ]


def test_it_keeps_chinese_headings_in_anchors() -> None:
    drafts = article_chunks(title="退货", body="## 如何退货\n\n在订单页选择退货。")

    assert [(draft.heading, draft.anchor, draft.text) for draft in drafts] == [
        ("如何退货", "如何退货", "在订单页选择退货。")
    ]


def test_it_splits_a_long_section_into_overlapping_parts() -> None:
    paragraphs = [f"Paragraph {number} " + "about refunds and coupons " * 12 for number in range(12)]
    drafts = article_chunks(title="Refunds", body="## Long\n\n" + "\n\n".join(paragraphs))

    assert len(drafts) > 1
    assert all(units(draft.text) <= MAX_CHUNK_UNITS for draft in drafts)
    assert {draft.anchor for draft in drafts} == {"long"}
    for before, after in itertools.pairwise(drafts):
        assert before.text.split("\n\n")[-1] == after.text.split("\n\n")[0]
    assert "Paragraph 11" in drafts[-1].text


# Builds -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_builds_chunks_vectors_and_the_files_of_a_version(
    knowledge_index: Path, counting_embedder: CountingEmbedder
) -> None:
    article = published("returns", ARTICLE)
    Article.objects.create(slug="draft", title="Draft", body="## Secret\n\nNot yet.", locale="en")
    entry = FaqEntry.objects.create(question="How do I return an item?", answer="Choose Return.", locale="en")

    build = indexing.index_rebuild()

    assert (build.status, build.chunk_count, build.faq_count, build.dimension) == ("ready", 4, 1, 8)
    assert build.embedder_model == "counting-v1"
    chunks = list(Chunk.objects.order_by("position"))
    assert [(chunk.article_id, chunk.article_version, chunk.anchor) for chunk in chunks] == [
        (article.pk, 1, ""),
        (article.pk, 1, "how-to-return"),
        (article.pk, 1, "print-the-label"),
        (article.pk, 1, "how-to-return-2"),
    ]
    assert Embedding.objects.filter(model_name="counting-v1", dimension=8, chunk__isnull=False).count() == 4
    assert Embedding.objects.get(faq_entry=entry).text_sha256 == indexing.text_sha256(
        "How do I return an item?"
    )
    folder = knowledge_index / str(build.pk)
    vectors = np.load(folder / "chunk_vectors.npy", mmap_mode="r")
    assert isinstance(vectors, np.memmap)
    assert vectors.shape == (4, 8)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    meta = json.loads((folder / "meta.json").read_text())
    assert [row["chunk_id"] for row in meta["chunks"]] == [chunk.pk for chunk in chunks]
    assert meta["faqs"][0]["entry_id"] == entry.pk
    assert (folder / "chunks_bm25" / "params.index.json").exists()
    assert (folder / "faq_bm25" / "vocab.index.json").exists()


@pytest.mark.django_db
def test_it_embeds_again_only_what_changed(
    knowledge_index: Path, counting_embedder: CountingEmbedder
) -> None:
    article = published("returns", ARTICLE)
    indexing.index_rebuild()
    first_ids = set(Embedding.objects.values_list("id", flat=True))
    counting_embedder.texts.clear()

    indexing.index_rebuild()
    assert counting_embedder.texts == []

    article.body = ARTICLE.replace("Print the prepaid label.", "Print the label we e-mailed you.")
    article.version = 2
    article.save()
    indexing.index_rebuild()

    assert counting_embedder.texts == [
        "Returns › Print the label",
        f"Print the label we e-mailed you.\n\n{NOTE_AND_CODE}",
    ]
    assert len(first_ids - set(Embedding.objects.values_list("id", flat=True))) == 1
    assert set(Chunk.objects.values_list("article_version", flat=True)) == {2}


@pytest.mark.django_db
def test_it_removes_the_chunks_of_an_unpublished_article(
    knowledge_index: Path, counting_embedder: CountingEmbedder
) -> None:
    article = published("returns", ARTICLE)
    indexing.index_rebuild()

    article.status = Article.Status.DRAFT
    article.save()
    build = indexing.index_rebuild()

    assert Chunk.objects.count() == 0
    assert Embedding.objects.count() == 0
    assert build.chunk_count == 0
    assert retrieval.retrieve(query="return", locale="en").found is False


@pytest.mark.django_db
def test_it_embeds_everything_again_with_another_model(
    knowledge_index: Path, monkeypatch: pytest.MonkeyPatch, counting_embedder: CountingEmbedder
) -> None:
    published("returns", ARTICLE)
    FaqEntry.objects.create(question="Where is my parcel?", answer="Track it.", locale="en")
    indexing.index_rebuild()
    other = CountingEmbedder(model_name="other-v2", dimension=16)
    monkeypatch.setattr(indexing, "embedder_get", lambda: other)

    build = indexing.index_rebuild()

    assert (build.embedder_model, build.dimension) == ("other-v2", 16)
    assert len(other.texts) == 4 * 2 + 1
    assert Embedding.objects.filter(model_name="other-v2", dimension=16).count() == 5
    assert np.load(knowledge_index / str(build.pk) / "chunk_vectors.npy").shape == (4, 16)


@pytest.mark.django_db
def test_it_records_a_failed_build_and_keeps_serving_the_previous_one(
    knowledge_index: Path, monkeypatch: pytest.MonkeyPatch, counting_embedder: CountingEmbedder
) -> None:
    published("returns", ARTICLE)
    ready = indexing.index_rebuild()
    published("shipping", "## Costs\n\nShipping is free over 99 yuan.", title="Shipping")
    monkeypatch.setattr(indexing, "embedder_get", lambda: RefusingEmbedder())

    with pytest.raises(AssertionError):
        indexing.index_rebuild()

    failed = IndexBuild.objects.order_by("-id").first()
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error.startswith("AssertionError: nothing may be embedded again")
    current = indexing.index_current()
    assert current is not None
    assert current.build_id == ready.pk


@pytest.mark.django_db
def test_it_loads_a_newer_build_when_one_is_ready(
    knowledge_index: Path, counting_embedder: CountingEmbedder
) -> None:
    published("returns", ARTICLE)
    first = indexing.index_rebuild()
    loaded = indexing.index_current()
    assert loaded is not None
    assert loaded.build_id == first.pk

    published("shipping", "## Costs\n\nShipping is free over 99 yuan.", title="Shipping")
    second = indexing.index_rebuild()

    reloaded = indexing.index_current()
    assert reloaded is not None
    assert reloaded.build_id == second.pk
    assert [row["slug"] for row in reloaded.chunks].count("shipping") == 1


@pytest.mark.django_db
def test_it_looks_for_a_newer_build_at_most_every_check_interval(
    knowledge_index: Path, settings: Any, counting_embedder: CountingEmbedder
) -> None:
    published("returns", ARTICLE)
    first = indexing.index_rebuild()
    settings.KNOWLEDGE_INDEX_CHECK_SECONDS = 3600
    assert indexing.index_current().build_id == first.pk  # type: ignore[union-attr]

    indexing.index_rebuild()

    assert indexing.index_current().build_id == first.pk  # type: ignore[union-attr]


@pytest.mark.django_db
def test_it_serves_the_loaded_build_while_another_thread_looks_for_a_newer_one(
    knowledge_index: Path, counting_embedder: CountingEmbedder
) -> None:
    published("returns", ARTICLE)
    first = indexing.index_rebuild()
    assert indexing.index_current().build_id == first.pk  # type: ignore[union-attr]
    indexing.index_rebuild()

    with indexing._load_lock:
        started = time.perf_counter()
        served = indexing.index_current()
        elapsed = time.perf_counter() - started

    assert served is not None
    assert served.build_id == first.pk
    assert elapsed < 0.1


@pytest.mark.django_db
def test_it_writes_the_files_of_a_build_made_elsewhere_from_the_database(
    knowledge_index: Path, monkeypatch: pytest.MonkeyPatch, counting_embedder: CountingEmbedder
) -> None:
    published("returns", ARTICLE)
    build = indexing.index_rebuild()
    made_here = json.loads((knowledge_index / str(build.pk) / "meta.json").read_text())
    vectors_here = np.load(knowledge_index / str(build.pk) / "chunk_vectors.npy")
    # Another machine built it: this one has no folder, and must not embed anything.
    import shutil

    shutil.rmtree(knowledge_index / str(build.pk))
    indexing.forget_loaded_index()
    monkeypatch.setattr(indexing, "embedder_get", lambda: RefusingEmbedder())

    loaded = indexing.index_current()

    assert loaded is not None
    assert loaded.build_id == build.pk
    assert loaded.chunks == made_here["chunks"]
    assert np.array_equal(np.asarray(loaded.chunk_vectors), vectors_here)
    assert (knowledge_index / str(build.pk) / "chunks_bm25").is_dir()


@pytest.mark.django_db
def test_it_keeps_serving_the_loaded_build_when_a_newer_one_cannot_be_read_and_says_so_once(
    knowledge_index: Path, counting_embedder: CountingEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    published("returns", ARTICLE)
    first = indexing.index_rebuild()
    assert indexing.index_current().build_id == first.pk  # type: ignore[union-attr]
    second = indexing.index_rebuild()
    (knowledge_index / str(second.pk) / "meta.json").write_text("{")

    builds = [indexing.index_current().build_id for _ in range(3)]  # type: ignore[union-attr]

    assert builds == [first.pk, first.pk, first.pk]
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        f"Could not load knowledge index build {second.pk}; serving the one before"
    ]


@pytest.mark.django_db
def test_it_keeps_the_folders_of_the_last_two_builds(
    knowledge_index: Path, monkeypatch: pytest.MonkeyPatch, counting_embedder: CountingEmbedder
) -> None:
    monkeypatch.setattr(indexing, "PRUNE_AFTER_SECONDS", 0.0)
    published("returns", ARTICLE)

    builds = [indexing.index_rebuild().pk for _ in range(4)]

    assert sorted(int(path.name) for path in knowledge_index.iterdir()) == builds[-2:]


# Queueing -----------------------------------------------------------------------------------------


def test_it_coalesces_queued_builds_into_one_task(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    cache.delete(indexing.PENDING_KEY)
    queued: list[int] = []
    monkeypatch.setattr(tasks.knowledge_index_rebuild, "delay", lambda: queued.append(1))

    for _ in range(5):
        tasks.index_rebuild_enqueue()

    assert queued == [1]
    cache.delete(indexing.PENDING_KEY)
    tasks.index_rebuild_enqueue()
    assert queued == [1, 1]
    cache.delete(indexing.PENDING_KEY)


def test_it_builds_on_a_thread_when_celery_is_eager_and_once_more_for_changes_meanwhile(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    started = threading.Event()
    release = threading.Event()
    threads: list[str] = []

    def slow_build() -> None:
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(5)

    monkeypatch.setattr(indexing, "index_rebuild", slow_build)
    indexing.index_rebuild_enqueue()
    assert started.wait(5)
    for _ in range(3):
        indexing.index_rebuild_enqueue()
    release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (len(threads) < 2 or indexing._thread_running):
        time.sleep(0.01)

    assert threads == ["knowledge-index-rebuild", "knowledge-index-rebuild"]
    assert indexing._thread_running is False


@pytest.mark.django_db
def test_it_runs_the_task_as_one_build(knowledge_index: Path, counting_embedder: CountingEmbedder) -> None:
    published("returns", ARTICLE)
    cache.delete(indexing.RUNNING_KEY)

    build_id = tasks.knowledge_index_rebuild.apply().get()

    assert IndexBuild.objects.get(pk=build_id).status == "ready"
    assert cache.get(indexing.RUNNING_KEY) is None


# Embedders ----------------------------------------------------------------------------------------


class EmbeddingsServer:
    """A scripted OpenAI-compatible /v1/embeddings server: records requests, answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        self.body: bytes | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                request = json.loads(self.rfile.read(length))
                server.requests.append(
                    {"path": self.path, "json": request, "authorization": self.headers.get("Authorization")}
                )
                time.sleep(server.delay)
                if server.body is not None:
                    payload = server.body
                elif server.status != 200:
                    payload = b'{"error": {"message": "model not loaded"}}'
                else:
                    data = [
                        {"index": index, "embedding": [float(len(text)), 1.0, 0.0]}
                        for index, text in reversed(list(enumerate(request["input"])))
                    ]
                    payload = json.dumps({"data": data, "model": request["model"]}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def embeddings_server() -> Iterator[EmbeddingsServer]:
    server = EmbeddingsServer()
    yield server
    server.stop()


def test_it_embeds_through_an_openai_compatible_endpoint_in_batches(
    embeddings_server: EmbeddingsServer,
) -> None:
    embedder = OpenAIEmbedder(base_url=embeddings_server.url, model="bge-m3", api_key="sk-test", batch_size=2)

    vectors = embedder.encode(["a", "bbb", "cccc"])

    assert [request["json"] for request in embeddings_server.requests] == [
        {"model": "bge-m3", "input": ["a", "bbb"]},
        {"model": "bge-m3", "input": ["cccc"]},
    ]
    assert {request["path"] for request in embeddings_server.requests} == {"/v1/embeddings"}
    assert {request["authorization"] for request in embeddings_server.requests} == {"Bearer sk-test"}
    assert vectors.dtype == np.float32
    assert np.allclose(vectors[1], np.array([3.0, 1.0, 0.0]) / np.sqrt(10.0))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def test_it_accepts_an_embeddings_url_ending_in_v1(embeddings_server: EmbeddingsServer) -> None:
    OpenAIEmbedder(base_url=f"{embeddings_server.url}/v1/", model="m").encode(["x"])

    assert embeddings_server.requests[0]["path"] == "/v1/embeddings"
    assert embeddings_server.requests[0]["authorization"] is None


def test_it_says_what_went_wrong_with_the_endpoint(embeddings_server: EmbeddingsServer) -> None:
    embedder = OpenAIEmbedder(base_url=embeddings_server.url, model="m", timeout_seconds=0.3)
    url = f"{embeddings_server.url}/v1/embeddings"

    embeddings_server.status = 503
    with pytest.raises(EmbedderError, match=f"^The embeddings endpoint {url} answered HTTP 503: "):
        embedder.encode(["x"])
    embeddings_server.status = 200
    embeddings_server.body = b'{"object": "list"}'
    with pytest.raises(EmbedderError, match="answered without a list of embeddings"):
        embedder.encode(["x"])
    embeddings_server.body = None
    embeddings_server.delay = 1.0
    with pytest.raises(EmbedderError, match=r"did not answer within 0\.3 s"):
        embedder.encode(["x"])
    unreachable = OpenAIEmbedder(base_url="http://127.0.0.1:9", model="m")
    with pytest.raises(EmbedderError, match="could not be reached"):
        unreachable.encode(["x"])


@pytest.mark.django_db
def test_it_builds_the_index_with_the_endpoint_the_settings_name(
    knowledge_index: Path, settings: Any, embeddings_server: EmbeddingsServer
) -> None:
    settings.KNOWLEDGE_EMBEDDER = "openai"
    settings.KNOWLEDGE_EMBEDDINGS_URL = embeddings_server.url
    settings.KNOWLEDGE_EMBEDDINGS_MODEL = "Qwen3-Embedding-0.6B"
    published("returns", ARTICLE)

    build = indexing.index_rebuild()

    assert (build.embedder_model, build.dimension, build.chunk_count) == ("Qwen3-Embedding-0.6B", 3, 4)
    assert embeddings_server.requests[0]["json"]["model"] == "Qwen3-Embedding-0.6B"


def test_it_embeds_locally_with_normalised_512_dimensional_vectors() -> None:
    vectors = embedders.LocalEmbedder().encode(["How do I return an item?", "如何退货？"])

    assert vectors.shape == (2, 512)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > 0.3


# Settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "sentence"),
    [
        ({"KNOWLEDGE_EMBEDDER": "word2vec"}, "KNOWLEDGE_EMBEDDER must be local"),
        ({"KNOWLEDGE_EMBEDDER": "openai"}, "KNOWLEDGE_EMBEDDINGS_URL must be the http(s) URL"),
        (
            {"KNOWLEDGE_EMBEDDER": "openai", "KNOWLEDGE_EMBEDDINGS_URL": "http://embeddings:8000"},
            "KNOWLEDGE_EMBEDDINGS_MODEL must name the embedding model",
        ),
        (
            {"KNOWLEDGE_EMBEDDINGS_TIMEOUT_SECONDS": "0"},
            "KNOWLEDGE_EMBEDDINGS_TIMEOUT_SECONDS must be a positive",
        ),
        (
            {"KNOWLEDGE_EMBEDDINGS_BATCH_SIZE": "0"},
            "KNOWLEDGE_EMBEDDINGS_BATCH_SIZE must be a positive integer.",
        ),
        ({"KNOWLEDGE_INDEX_CHECK_SECONDS": "-1"}, "KNOWLEDGE_INDEX_CHECK_SECONDS must be a positive"),
    ],
)
def test_it_refuses_to_start_with_invalid_knowledge_settings(
    environment: dict[str, str], sentence: str
) -> None:
    result = start_up(**environment)

    assert result.returncode != 0
    assert sentence in result.stderr


def test_it_starts_with_an_openai_compatible_embedder() -> None:
    result = start_up(
        KNOWLEDGE_EMBEDDER="openai",
        KNOWLEDGE_EMBEDDINGS_URL="http://embeddings:8000/v1",
        KNOWLEDGE_EMBEDDINGS_MODEL="bge-m3",
    )

    assert result.returncode == 0, result.stderr


def test_it_runs_numpys_blas_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)

    assert embedders.blas_single_threaded() is True

    with open("/proc/self/maps", encoding="utf-8") as maps:
        library = next(line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line)
    handle = ctypes.CDLL(library)
    getter = getattr(handle, "scipy_openblas_get_num_threads64_", None) or handle.openblas_get_num_threads
    assert getter() == 1


def test_it_leaves_an_openblas_thread_count_the_operator_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")

    assert embedders.blas_single_threaded() is False


@pytest.mark.django_db
def test_it_leaves_the_build_to_the_worker_already_building(
    knowledge_index: Path, counting_embedder: CountingEmbedder
) -> None:
    published("returns", ARTICLE)
    cache.set(indexing.RUNNING_KEY, "1", timeout=60)
    try:
        result = tasks.knowledge_index_rebuild.apply()
    finally:
        cache.delete(indexing.RUNNING_KEY)

    assert result.get() is None
    assert IndexBuild.objects.count() == 0


def test_it_embeds_locally_on_many_threads_at_once_as_on_one() -> None:
    embedder = embedders.LocalEmbedder()
    texts = [f"Where is order {number}? 我的订单{number}还没到" for number in range(40)]
    sequential = embedder.encode(texts)
    results: dict[int, np.ndarray] = {}

    def encode_share(first: int) -> None:
        for number in range(first, len(texts), 4):
            results[number] = embedder.encode([texts[number]])[0]

    threads = [threading.Thread(target=encode_share, args=(first,)) for first in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == list(range(40))
    assert all(np.allclose(results[number], sequential[number], atol=1e-6) for number in range(40))


def test_it_logs_a_build_it_could_not_queue_and_queues_the_next_one(
    monkeypatch: pytest.MonkeyPatch, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    cache.delete(indexing.PENDING_KEY)
    attempts: list[int] = []

    def broker_down() -> None:
        attempts.append(1)
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.knowledge_index_rebuild, "delay", broker_down)

    tasks.index_rebuild_enqueue()
    tasks.index_rebuild_enqueue()

    assert attempts == [1, 1]
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        "Could not queue a knowledge index build",
        "Could not queue a knowledge index build",
    ]
    assert cache.get(indexing.PENDING_KEY) is None
