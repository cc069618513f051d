"""PCA whitening learned from the library's own photos (no labels).

Centring removes what all photos share, the projection keeps the directions in which this
collection varies (as many as explain ``variance`` of it: a function of the library's own
spectrum), and dividing by the shrunk singular values to a small power stops a few dominant
directions from deciding every ranking without blowing up the noisy small ones. The rule and
its constants were chosen by leave-one-set-out over the four shared sets (bench/defaults.py,
bench/RESULTS.md: "Retrieval defaults chosen across sets").
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Whitening:
    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, d)
    fitted_on: int  # number of photos it was learned from
    recipe: str = ""  # the settings it was learned with (maintenance re-learns when they change); "" before

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def to_bytes(self) -> bytes:
        """The form stored in the catalog (``transforms.data``), versioned there."""
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, projection=self.projection, fitted_on=np.int64(self.fitted_on),
                 recipe=np.array(self.recipe))  # fmt: skip
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Whitening:
        with np.load(io.BytesIO(data)) as arrays:
            recipe = str(arrays["recipe"]) if "recipe" in arrays.files else ""
            return cls(arrays["mean"], arrays["projection"], int(arrays["fitted_on"]), recipe)

    @classmethod
    def fit(
        cls,
        chunks: Iterable[np.ndarray],
        dim: int,
        power: float = 0.5,
        variance: float | None = None,
        shrink: float = 0.0,
    ) -> Whitening:
        """Learn from vectors given in chunks: only D x D sums are kept, so millions of rows fit in memory.

        ``dim`` caps the dimensions kept; with ``variance`` the leading directions that explain that share of
        the variance are kept (at most ``dim``). ``shrink`` adds that multiple of the mean eigenvalue to each
        one before the power (regularised whitening: small directions are not blown up)."""
        total = 0
        sums: np.ndarray | None = None
        outer: np.ndarray | None = None
        for chunk in chunks:
            x = np.asarray(chunk, dtype=np.float64)
            if sums is None or outer is None:
                sums, outer = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
            total += len(x)
            sums += x.sum(axis=0)
            outer += x.T @ x
        if not total or sums is None or outer is None:
            raise ValueError("no vectors to learn a whitening from")
        mean = sums / total
        cov = outer / total - np.outer(mean, mean)
        eigvals, eigvecs = np.linalg.eigh(cov)
        # n photos span at most n - 1 directions: never keep (and blow up) directions with no variance
        dim = max(1, min(dim, total - 1))
        ranked = np.argsort(eigvals)[::-1]
        positive = np.maximum(eigvals[ranked], 0.0)
        if variance is not None and positive.sum() > 0:
            share = np.cumsum(positive) / positive.sum()
            dim = min(dim, int(np.searchsorted(share, variance)) + 1)
        order = ranked[:dim]
        mean_eig = float(positive[: max(1, min(total - 1, len(positive)))].mean())
        lam = np.maximum(eigvals[order], 0.0) + shrink * mean_eig
        floor = max(float(lam[0]), 1e-12) * 1e-6
        scale = np.sqrt(np.maximum(lam, floor)) ** power  # singular values to the power
        projection = eigvecs[:, order] / scale
        return cls(mean.astype(np.float32), projection.astype(np.float32), total)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        out = (np.asarray(vectors, dtype=np.float32) - self.mean) @ self.projection
        return (out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)).astype(np.float32)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".whitening-", suffix=".npz")
        os.close(fd)
        try:
            np.savez(tmp, mean=self.mean, projection=self.projection, fitted_on=np.int64(self.fitted_on))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path) -> Whitening | None:
        try:
            with np.load(path) as data:
                return cls(data["mean"], data["projection"], int(data["fitted_on"]))
        except (OSError, KeyError, ValueError):
            return None
