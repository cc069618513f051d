"""The core library: one object that the CLI, the HTTP service and the benchmarks call.

A ``Library`` is a directory (``settings.home``) holding the SQLite catalog,
the image store and the vector index, plus the embedder recorded for it. Like
rclip's ``RClip``, the embedder can be passed in, so tests and tools can share
one loaded model across libraries.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.config import Settings
from lookalike.imaging import Decoded, decode
from lookalike.ingest.fetch import FetchError, UrlFetcher, read_file
from lookalike.ingest.pipeline import IndexReport, Pipeline, ProgressFn
from lookalike.ingest.sources import SourceItem, SourceSet, expand, is_url
from lookalike.models.embedder import Embedder
from lookalike.models.registry import get_spec
from lookalike.store.catalog import Catalog, ImageRecord
from lookalike.store.images import LocalImageStore
from lookalike.store.vectors import MISSING, EmbeddedIndex

Box = tuple[float, float, float, float]


def crop_box(decoded: Decoded, box: Box) -> Image.Image:
    """Crop a decoded photo to a box given in original pixels (the decode may be reduced by draft)."""
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= decoded.width and 0 <= y1 < y2 <= decoded.height):
        raise LibraryError(
            f"box {list(box)} is not inside the {decoded.width}x{decoded.height} photo (need 0 <= x1 < x2 <= width)"
        )
    sx, sy = decoded.image.width / decoded.width, decoded.image.height / decoded.height
    region = decoded.image.crop((x1 * sx, y1 * sy, x2 * sx, y2 * sy))
    if min(region.size) < 1:
        raise LibraryError("box is too small")
    return region


class LibraryError(RuntimeError):
    """A request the library cannot serve, with a message for the user."""


class ModelMismatchError(LibraryError):
    pass


class NotFoundError(LibraryError):
    pass


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    label: str | None
    sources: tuple[str, ...]
    width: int
    height: int
    sha256: str

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "label": self.label,
            "sources": list(self.sources),
            "width": self.width,
            "height": self.height,
        }


@dataclass
class SearchResult:
    hits: list[Hit]
    seconds: float
    query: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "query": self.query,
            "seconds": round(self.seconds, 5),
            "hits": [h.as_dict() for h in self.hits],
        }


class Library:
    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None) -> None:
        self.settings = settings or Settings()
        self.home = self.settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.home / "catalog.sqlite")
        self.images = LocalImageStore(self.home / "images")
        self.model_name = self._check_model()
        self.spec = get_spec(self.model_name)
        if embedder is not None and (embedder.name != self.model_name or embedder.dim != self.spec.dim):
            raise ModelMismatchError(f"embedder {embedder.name} given for a library of model {self.model_name}")
        self._embedder = embedder
        self._vectors: EmbeddedIndex | None = None
        # one lock for every mutation of catalog/index/store and for index searches: the service
        # runs searches, uploads and index jobs on different threads
        self.write_lock = threading.RLock()
        self._local = threading.local()
        self._fetcher: UrlFetcher | None = None

    # --- setup ---------------------------------------------------------------------
    def _check_model(self) -> str:
        stored = self.catalog.get_meta("model")
        asked = self.settings.model
        get_spec(asked)  # unknown names fail before anything is written
        if stored is None:
            self.catalog.set_meta("model", asked)
            self.catalog.set_meta("dim", str(get_spec(asked).dim))
            self.catalog.set_meta("created_at", str(time.time()))
            return asked
        if stored != asked and "model" in self.settings.model_fields_set:
            raise ModelMismatchError(
                f"this library ({self.home}) was indexed with model {stored!r}, not {asked!r}; "
                f"vectors of different models cannot be compared. Use the library's model (drop --model / "
                f"LOOKALIKE_MODEL), or index with {asked!r} into a new library (--home DIR)"
            )
        return stored

    @property
    def embedder(self) -> Embedder:
        with self.write_lock:
            if self._embedder is None:
                self._embedder = self.spec.load(self.settings)
            return self._embedder

    @property
    def vectors(self) -> EmbeddedIndex:
        with self.write_lock:
            if self._vectors is None:
                s = self.settings
                index = EmbeddedIndex(
                    self.home / "vectors",
                    self.spec.dim,
                    s.ann_threshold,
                    {"m": s.hnsw_m, "ef_construction": s.hnsw_ef_construction, "ef_search": s.hnsw_ef_search},
                )
                index.load()
                added, removed = index.sync(self.catalog.ids(), self.catalog.embeddings_for)
                if added or removed:
                    index.save()
                self._vectors = index
            return self._vectors

    def catalog_reader(self) -> Catalog:
        """A per-thread catalog connection, for lookups from worker threads."""
        cat = getattr(self._local, "catalog", None)
        if cat is None:
            cat = self._local.catalog = Catalog(self.catalog.path)
        return cat

    def url_fetcher(self) -> UrlFetcher:
        with self.write_lock:
            if self._fetcher is None:
                s = self.settings
                self._fetcher = UrlFetcher(s.url_timeout, s.url_max_bytes, s.url_max_redirects, s.url_allow_private)
            return self._fetcher

    def close(self) -> None:
        if self._vectors is not None and self._vectors.dirty:
            self._vectors.save()
        if self._fetcher is not None:
            self._fetcher.close()
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- photos in -----------------------------------------------------------------
    def decode_side(self) -> int:
        """JPEGs are decoded at the smallest scale that still serves the model and the thumbnail."""
        return max(self.embedder.input_size, self.settings.thumbnail_size)

    def prepare_pixels(self, data: bytes) -> tuple[Decoded, np.ndarray]:
        """Bytes -> (decoded photo, model input); the one path for indexed and query photos alike."""
        decoded = decode(data, self.settings.max_pixels, self.decode_side())
        return decoded, self.embedder.prepare(decoded.image)

    def index(
        self,
        paths: list[str],
        label: str | None = None,
        prune: bool = False,
        on_progress: ProgressFn | None = None,
    ) -> IndexReport:
        """Index folders, CSVs, URL lists, files and URLs; incremental and safe to interrupt."""
        sets: list[SourceSet] = [expand(p, label) for p in paths]
        _ = self.embedder  # a missing model fails here, once, not as one rejection per photo
        return Pipeline(self, on_progress).run(sets, prune=prune)

    def add_bytes(self, files: list[tuple[str, bytes]], label: str | None = None) -> tuple[IndexReport, list[str]]:
        """Index uploaded photos (name, bytes); originals are kept, since there is no other copy.

        Returns the report and the source string given to each file, in order.
        """
        items = [
            SourceItem(f"upload:{hashlib.sha256(data).hexdigest()}/{Path(name).name or 'photo'}", label, data=data)
            for name, data in files
        ]
        _ = self.embedder
        return Pipeline(self).run([SourceSet(items)]), [i.source for i in items]

    def save_index(self) -> None:
        with self.write_lock:
            if self._vectors is not None and self._vectors.dirty:
                self._vectors.save()

    def delete_images(self, ids: list[int]) -> list[ImageRecord]:
        removed = self.catalog.remove_images(ids)
        if removed:
            self.vectors.remove(np.asarray([r.id for r in removed], dtype=np.int64))
            for rec in removed:
                self.images.delete("thumbnail", rec.sha256)
                self.images.delete("original", rec.sha256)
        return removed

    def remove(self, ids: list[int]) -> list[ImageRecord]:
        """Delete images by id; unknown ids are ignored (the caller reports them)."""
        removed = self.delete_images(ids)
        self.save_index()
        return removed

    # --- search ----------------------------------------------------------------------
    def read_query(self, query: str | Path) -> bytes:
        text = str(query)
        if is_url(text):
            return self.url_fetcher().fetch(text)
        return read_file(text, self.settings.max_file_bytes)

    def embed_bytes(
        self, data: bytes, box: tuple[float, float, float, float] | None = None
    ) -> tuple[np.ndarray, Decoded]:
        """Embed a photo, or the ``box`` (x1, y1, x2, y2 in original pixels) of it."""
        if box is None:
            decoded, pixels = self.prepare_pixels(data)
        else:
            decoded = decode(data, self.settings.max_pixels, self.decode_side())
            pixels = self.embedder.prepare(crop_box(decoded, box))
        return self.embedder.embed(pixels[None])[0], decoded

    def search(
        self,
        query: str | Path | bytes | int,
        k: int = 10,
        min_score: float | None = None,
        label: str | None = None,
        box: Box | None = None,
    ) -> SearchResult:
        """Search by photo bytes, a file path or URL, or an indexed image id (more like this).

        ``box`` restricts the query to a region of the photo (x1, y1, x2, y2 in original pixels).
        """
        if k < 1:
            raise LibraryError("k must be at least 1")
        started = time.perf_counter()
        exclude: int | None = None
        if isinstance(query, int) and box is not None:
            query = self.original_bytes(query)
        if isinstance(query, int):
            vec = self.catalog_reader().embedding(query)
            if vec is None:
                raise NotFoundError(f"no image with id {query}")
            info: dict = {"image_id": query}
            exclude = query
        else:
            if isinstance(query, bytes):
                data, info = query, {"source": "upload"}
            else:
                try:
                    data = self.read_query(query)
                except FetchError as exc:
                    raise LibraryError(f"{query}: {exc}") from None
                info = {"source": str(query)}
            vec, decoded = self.embed_bytes(data, box)
            info |= {"width": decoded.width, "height": decoded.height}
            if box is not None:
                info["box"] = list(box)
        hits = self.search_vector(vec, k, min_score, label, exclude)
        return SearchResult(hits, time.perf_counter() - started, info)

    def search_vector(
        self,
        vec: np.ndarray,
        k: int = 10,
        min_score: float | None = None,
        label: str | None = None,
        exclude: int | None = None,
    ) -> list[Hit]:
        reader = self.catalog_reader()
        allowed = reader.ids(label) if label is not None else None
        want = k + (1 if exclude is not None else 0)
        with self.write_lock:
            ids, scores = self.vectors.search(vec[None], want, allowed)
        records = reader.get_many(i for i in ids[0].tolist() if i != MISSING)
        hits = []
        for i, score in zip(ids[0].tolist(), scores[0].tolist(), strict=True):
            if i in (MISSING, exclude) or i not in records:
                continue
            if min_score is not None and score < min_score:
                break
            rec = records[i]
            hits.append(Hit(i, float(score), rec.label, rec.sources, rec.width, rec.height, rec.sha256))
        return hits[:k]

    def original_bytes(self, image_id: int) -> bytes:
        """The photo's bytes: the kept original, else the first source file still holding the same bytes."""
        rec = self.get(image_id)
        data = self.images.get("original", rec.sha256) if rec.has_original else None
        if data is not None:
            return data
        for src in rec.sources:
            if is_url(src) or src.startswith("upload:"):
                continue
            try:
                data = read_file(src, self.settings.max_file_bytes)
            except FetchError:
                continue
            if hashlib.sha256(data).hexdigest() == rec.sha256:
                return data
        raise NotFoundError(f"the original of image {image_id} is no longer available (its files moved or changed)")

    # --- information and maintenance -------------------------------------------------
    def get(self, image_id: int) -> ImageRecord:
        rec = self.catalog_reader().get(image_id)
        if rec is None:
            raise NotFoundError(f"no image with id {image_id}")
        return rec

    def stats(self) -> dict:
        vectors = self.vectors
        return {
            "home": str(self.home),
            "images": self.catalog.count(),
            "sources": self.catalog.db.execute("SELECT COUNT(*) FROM sources").fetchone()[0],
            "labels": len(self.catalog.labels()),
            "model": self.model_name,
            "dim": self.spec.dim,
            "index": vectors.kind,
            "vectors": len(vectors),
            "disk_bytes": {
                "catalog": self.catalog.disk_bytes(),
                "images": self.images.disk_bytes(),
                "vectors": vectors.disk_bytes(),
            },
        }

    def reindex(self) -> dict:
        """Rebuild the vector index from the catalog's embeddings (no re-embedding)."""
        started = time.perf_counter()
        with self.write_lock:
            directory = self.home / "vectors"
            shutil.rmtree(directory, ignore_errors=True)
            self._vectors = None
            vectors = self.vectors
            vectors.save()
        return {
            "vectors": len(vectors),
            "index": vectors.kind,
            "seconds": round(time.perf_counter() - started, 3),
        }
