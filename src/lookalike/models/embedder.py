"""The embedder interface and the TFLite implementation behind the default models.

An embedder turns RGB pixels into unit-length vectors; everything that compares
photos (index, search, eval) goes through ``prepare`` then ``embed`` so that a
query is embedded exactly as the indexed photos were.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    input_size: int

    def prepare(self, image: Image.Image) -> np.ndarray:
        """RGB image of any size -> model input (input_size x input_size x 3, uint8)."""
        ...

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(n, input_size, input_size, 3) uint8 -> (n, dim) float32, each row of unit length."""
        ...


@runtime_checkable
class TextEmbedder(Embedder, Protocol):
    """The embedder of a CLIP-style model (``ModelSpec.text``): descriptions land in the photos' space."""

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Descriptions -> (n, dim) float32 unit vectors; ValueError for an empty or too long one."""
        ...


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def native_stderr_silenced():
    """The TFLite runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ when an
    interpreter is made, whatever TF_CPP_MIN_LOG_LEVEL says: file descriptor 2 points at /dev/null meanwhile.
    Errors still surface, as Python exceptions."""
    with _STDERR_LOCK:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(devnull)
            os.close(saved)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def square_input(
    image: Image.Image, size: int, crop: float = 1.0, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> np.ndarray:
    """Centre square of side ``crop`` x the short side, resized to the model input.

    Keeping the aspect ratio (instead of squashing the whole photo into a square)
    is what the ImageNet models were trained on; on the shared Towhee set it lifts
    precision@10 from 0.572 (squash) to 0.617 (see bench/RESULTS.md).
    """
    w, h = image.size
    side = min(w, h) * crop
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.asarray(image.resize((size, size), resample, box=box), dtype=np.uint8)


class TFLiteEmbedder:
    """A quantised TFLite image model read at one of its tensors (the pooled feature).

    The models we ship have a fixed batch of one (XNNPACK refuses to reshape their
    final squeeze), so a batch is run image by image. An interpreter is not
    thread-safe, so the embedder keeps a small pool (up to ``instances``, created
    on demand): worker threads embed concurrently, and since ``invoke`` releases
    the GIL, decoding on one core overlaps inference on the other.
    """

    def __init__(
        self,
        path: Path,
        name: str,
        dim: int,
        feature_tensor: str | None = None,
        threads: int = 0,
        crop: float = 1.0,
        instances: int = 2,
        gem_p: float | None = None,
        flip: bool = False,
    ) -> None:
        """``gem_p``: read a feature map and GeM-pool it with that p; ``flip``: average with the mirror image."""
        self.name, self.dim, self.crop, self.gem_p, self.flip = name, dim, crop, gem_p, flip
        self._path, self._threads, self._feature_tensor = path, threads, feature_tensor
        self._pool: queue.Queue = queue.Queue()
        self._created, self._instances = 0, max(1, instances)
        self._pool_lock = threading.Lock()
        first = self._new_interpreter()
        self._pool.put(first)
        inp = first.get_input_details()[0]
        self._input_index = inp["index"]
        self.input_size = int(inp["shape"][1])
        if feature_tensor is None:
            out = first.get_output_details()[0]
        else:
            matches = [
                d for d in first.get_tensor_details()
                if d["name"] == feature_tensor or d["name"].startswith(feature_tensor + ";")
            ]  # fmt: skip
            if not matches:
                raise ValueError(f"{path.name} has no tensor named {feature_tensor!r}")
            out = matches[0]
        self._output_index = out["index"]
        self._scale, self._zero = out["quantization"]
        if (int(out["shape"][-1]) if gem_p else int(np.prod(out["shape"]))) != dim:
            raise ValueError(f"{path.name} tensor {out['name']} has shape {out['shape']}, expected {dim} values")

    def _new_interpreter(self):
        from ai_edge_litert.interpreter import Interpreter

        with warnings.catch_warnings(), native_stderr_silenced():
            # preserving tensors is how the pooled feature is reached; the memory cost is small here
            warnings.simplefilter("ignore")
            interpreter = Interpreter(
                model_path=str(self._path),
                num_threads=self._threads or 1,
                experimental_preserve_all_tensors=self._feature_tensor is not None,
            )
            interpreter.allocate_tensors()
        self._created += 1
        return interpreter

    def _acquire(self):
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            with self._pool_lock:
                if self._created < self._instances:
                    return self._new_interpreter()
            return self._pool.get()

    def prepare(self, image: Image.Image) -> np.ndarray:
        return square_input(image, self.input_size, self.crop)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.uint8)
        if batch.ndim != 4 or batch.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected (n, {self.input_size}, {self.input_size}, 3) uint8, got {batch.shape}")
        views = [batch, batch[:, :, ::-1]] if self.flip else [batch]
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        interpreter = self._acquire()
        try:
            for view in views:
                for i, pixels in enumerate(view):
                    interpreter.set_tensor(self._input_index, np.ascontiguousarray(pixels[None]))
                    interpreter.invoke()
                    raw = interpreter.get_tensor(self._output_index).astype(np.float32)
                    raw = (raw - self._zero) * self._scale if self._scale else raw
                    if self.gem_p:  # generalised mean over the spatial cells of the feature map
                        cells = np.maximum(raw.reshape(-1, self.dim), 1e-6)
                        raw = np.power(np.mean(cells**self.gem_p, axis=0), 1.0 / self.gem_p)
                    out[i] += l2_normalize(raw.reshape(1, -1))[0]
        finally:
            self._pool.put(interpreter)
        return l2_normalize(out)


class FusionEmbedder:
    """Late fusion of two models: concatenating sqrt(w)-scaled unit vectors makes the cosine of two
    fused vectors exactly w * cosine_a + (1 - w) * cosine_b, so any vector index fuses scores."""

    def __init__(self, name: str, a: Embedder, b: Embedder, weight_a: float) -> None:
        self.name, self.a, self.b, self.weight_a = name, a, b, weight_a
        self.dim = a.dim + b.dim
        self.input_size = a.input_size
        if a.input_size != b.input_size:
            raise ValueError("fused models must share their input size")

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.a.prepare(image)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        wa, wb = np.sqrt(self.weight_a), np.sqrt(1.0 - self.weight_a)
        return np.concatenate([wa * self.a.embed(batch), wb * self.b.embed(batch)], axis=1).astype(np.float32)
