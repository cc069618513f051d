"""The core library: one object that the CLI, the HTTP service, the workers and the benchmarks call.

A ``Library`` is a catalog (the source of truth: SQLite in ``settings.home`` or the PostgreSQL database
of ``LOOKALIKE_DATABASE_URL``), an image store (a local folder or a bucket) and a vector space (the
active transform and its collections, in the embedded index or a shared engine). The process holds
nothing that another process must agree with: the space is opened from the catalog's pointer and kept
up to date by following the catalog's change feed (``lookalike.vectorspace``). Like rclip's ``RClip``,
the embedder can be passed in, so tests and tools can share one loaded model across libraries.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.config import Settings
from lookalike.imaging import BadImage, Decoded, decode
from lookalike.ingest.backfill import BackfillReport, backfill
from lookalike.ingest.fetch import FetchError, UrlFetcher, read_file
from lookalike.ingest.pipeline import IndexReport, Pipeline, ProgressFn
from lookalike.ingest.sources import SourceSet, expand, is_url
from lookalike.models import copy_descriptor
from lookalike.models.embedder import Embedder, TextEmbedder
from lookalike.models.registry import get_spec, load_detector
from lookalike.search import copies, ranking, verification
from lookalike.search.results import Box, Hit, SearchResult
from lookalike.search.whitening import Whitening
from lookalike.store.catalog import Catalog, ImageRecord
from lookalike.store.catalog.cache import RecordCache
from lookalike.store.catalog.database import redact
from lookalike.store.images import ImageStore, LocalImageStore
from lookalike.store.s3 import S3ImageStore, S3Location, is_s3, s3_client
from lookalike.store.s3 import read as s3_read
from lookalike.store.vectors import MISSING, EmbeddedIndex, VectorIndex
from lookalike.vectorspace import IDENTITY, WHITENING, Follower, Space, SpaceKey, collection_names, open_engine

__all__ = ["Box", "BusyError", "Hit", "Library", "LibraryError", "ModelMismatchError", "NotFoundError",
           "SearchResult"]  # fmt: skip
log = logging.getLogger("lookalike")
MATCHES = ranking.MATCHES
DETECT_SIDE = 640  # twice the detectors' input side: boxes stay precise


def set_switch_interval(seconds: float) -> None:
    """A photo search finds the query's local features in a helper thread while the model embeds it, then both
    threads do short steps of Python between calls that release the interpreter lock (OpenCV, faiss, the model).
    With Python's default 5 ms switch interval one thread can hold the lock that long while the other waits: the
    copy check cost 1.56x the plain search's p50, 1.31x with 1 ms (bench/RESULTS.md, "Copies"). Process-wide."""
    if seconds:
        import sys

        sys.setswitchinterval(seconds)


def limit_blas_threads(threads: int) -> None:
    """Exact search multiplies one query by the index in numpy; OpenBLAS would spread that over every core,
    where the model runtime and the decoders already work (bench/RESULTS.md, "Threads"). Process-wide."""
    if threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")


def _given(picture: Image.Image) -> Callable[[], Image.Image | None]:
    return lambda: picture


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


class TextSearchError(LibraryError):
    """A text search on a library whose model has no text tower."""


class BusyError(LibraryError):
    """Too much work in flight: the caller should retry (HTTP 503)."""


class Library:
    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None) -> None:
        self.settings = settings or Settings()
        self.home = self.settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog.open(self.settings.catalog_url, self.settings.database_schema)
        self.library_id = self.catalog.setdefault_meta("library_id", uuid.uuid4().hex)
        self._lock = threading.RLock()  # lazy loading of models and clients; never held while searching
        self._decodes = threading.BoundedSemaphore(self.settings.resolved_decodes)
        limit_blas_threads(self.settings.blas_threads)
        set_switch_interval(self.settings.switch_interval)
        self._s3 = None
        if self.settings.image_store == "local":
            self.images: ImageStore = LocalImageStore(self.home / "images")
        else:
            self.images = S3ImageStore(self.s3(), S3Location.parse(self.settings.image_store))
        self.model_name = self._check_model()
        self.spec = get_spec(self.model_name, self.settings)
        if embedder is not None and (embedder.name != self.model_name or embedder.dim != self.spec.dim):
            raise ModelMismatchError(f"embedder {embedder.name} given for a library of model {self.model_name}")
        self._embedder = embedder
        self._detector = None
        self._side: ThreadPoolExecutor | None = None
        self._fetcher: UrlFetcher | None = None
        self.follower = Follower(self.catalog)
        self.records = RecordCache(self.catalog)  # hits' records, kept true by the change feed
        self._copy_model: copy_descriptor.CopyDescriptor | None = None  # loaded on first use
        self._space: Space | None = None
        self._space_lock = threading.RLock()
        self._last_refresh = 0.0
        self.background = False  # set by the service: a thread follows the feed, so searches need not look
        self.follows_index = True  # a worker process writes the catalog only: it keeps no embedded index
        self.maintenance_due = threading.Event()  # set after writes, for the service's maintenance thread
        self.active_key()  # a new library gets its first space now, not in the middle of maintenance
        self._check_backend()

    # --- setup ---------------------------------------------------------------------
    def _check_model(self) -> str:
        asked = self.settings.model
        get_spec(asked, self.settings)  # unknown names and broken manifests fail before anything is written
        stored = self.catalog.get_meta("model")
        if stored is None:
            stored = self.catalog.setdefault_meta("model", asked)  # the first process to create it wins
            self.catalog.setdefault_meta("dim", str(get_spec(stored, self.settings).dim))
            self.catalog.setdefault_meta("created_at", str(time.time()))
        if stored != asked and "model" in self.settings.model_fields_set:
            raise ModelMismatchError(
                f"this library ({self.where}) was indexed with model {stored!r}, not {asked!r}; "
                f"vectors of different models cannot be compared. Use the library's model (drop --model / "
                f"LOOKALIKE_MODEL), or index with {asked!r} into a new library (--home DIR)"
            )
        return stored

    def _check_backend(self) -> None:
        """The catalog says where the vectors are; a setting that disagrees is refused, not obeyed, since
        processes that disagreed would write to different engines."""
        if "vector_backend" not in self.settings.model_fields_set:
            return
        active = self.active_key().backend
        if active != self.settings.vector_backend:
            raise LibraryError(
                f"this library's vectors are in {active!r} (recorded in its catalog), not in "
                f"{self.settings.vector_backend!r} as LOOKALIKE_VECTOR_BACKEND says: unset it, or move the "
                f"library with `lookalike reindex --to {self.settings.vector_backend}`"
            )

    @property
    def where(self) -> str:
        """The catalog, for messages: the library folder, or the database (password hidden)."""
        if self.settings.database_url is None:
            return str(self.home)
        return redact(self.settings.catalog_url)

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = self.spec.load(self.settings)
            return self._embedder

    # --- the vector space ----------------------------------------------------------
    def active_key(self) -> SpaceKey:
        """The catalog's pointer to the space every process searches; created with the library."""
        text = self.catalog.get_meta("space")
        if text is None:
            with self.catalog.lock("first-space"):
                text = self.catalog.get_meta("space")
                if text is None:
                    key = SpaceKey(self.settings.vector_backend, self._first_transform())
                    text = self.catalog.setdefault_meta("space", key.to_json())
        return SpaceKey.from_json(text)

    def _first_transform(self) -> int:
        """The identity, or the whitening a library directory of an earlier version learned."""
        legacy = Whitening.load(self.home / "whitening.npz") if self.settings.whiten else None
        if legacy is not None and legacy.mean.shape[0] == self.spec.dim:
            return self.catalog.add_transform(WHITENING, legacy.dim, legacy.fitted_on, legacy.to_bytes())
        return self.catalog.add_transform(IDENTITY, self.spec.dim, 0, b"")

    def names_for(self, key: SpaceKey) -> tuple[str, str, str, str]:
        return collection_names(self.library_id, self.model_name, key.version)

    def open_engine(self, backend: str, name: str, dim: int) -> VectorIndex:
        return open_engine(backend, name, dim, self.settings, self.home)

    @property
    def space(self) -> Space:
        """The active space, opened on first use and brought up to date with the catalog."""
        space = self._space
        if space is None:
            with self._space_lock:
                if self._space is None:
                    self._space = self.open_space(self.active_key())
                space = self._space
        return space

    def open_space(self, key: SpaceKey) -> Space:
        """Open a space's collections: load (embedded) or find (shared) them, fill them from the catalog when
        new, then apply the change feed."""
        from lookalike.vectorspace import load_transform

        transform = load_transform(self.catalog, key.version)
        dim = transform.dim if transform is not None else self.spec.dim
        names = self.names_for(key)
        photos, objects = (self.open_engine(key.backend, name, dim) for name in names[:2])
        copies_index, parts = (self.open_engine(key.backend, name, copy_descriptor.DIM) for name in names[2:])
        space = Space(key, names, transform, photos, objects, copies_index, parts)
        if not key.shared:
            embedded = [index for index in space.indexes() if isinstance(index, EmbeddedIndex)]
            assert len(embedded) == len(space.indexes())  # a space that is not shared is embedded
            loaded = all([index.load() for index in embedded])
            cursors = [index.cursor for index in embedded]
            if not loaded or min(cursors) == 0:
                space.drop()
                cursors = [self.follower.fill(space)]
            for index in embedded:
                index.cursor = min(cursors)
        else:
            self._fill_shared(space)
        self.follower.catch_up(space)
        return space

    def _fill_shared(self, space: Space) -> None:
        """New shared collections are filled once, by the first process that opens them; so are the copy collections
        of a space made before they existed."""
        names, catalog = space.names, self.catalog
        later = ((space.copies_filled_key, space.copies), (space.parts_filled_key, space.parts))
        if catalog.get_meta(space.cursor_key) is not None and all(catalog.get_meta(k) is not None for k, _ in later):
            return
        with catalog.lock(f"apply:{names[0]}"):
            if catalog.get_meta(space.cursor_key) is None:
                start = self.follower.fill(space)
                catalog.set_metas({space.cursor_key: str(start)} | {key: "1" for key, _ in later})
                return
            for key, index in later:
                if catalog.get_meta(key) is None:
                    self.follower.fill_copies(space, only=index)
                    catalog.set_meta(key, "1")

    def build_space(self, key: SpaceKey) -> Space:
        """A new space, filled and saved, not yet active."""
        space = self.open_space(key)
        space.wait()
        space.save()
        return space

    def activate(self, space: Space) -> None:
        """Point every process at ``space``; the one it replaces is dropped after ``retire_grace``."""
        old = self.active_key()
        self.catalog.set_metas({"space": space.key.to_json(), f"retired:{old.to_json()}": str(time.time())})
        with self._space_lock:
            self._space = space
        self.follower.catch_up(space)

    def refresh(self, wait: bool = True) -> Space:
        """Follow the catalog: switch to a new active space, apply the change feed. A process that
        searches calls this at least every ``sync_interval`` (the service from a thread of its own)."""
        key = self.active_key()
        space = self.space
        if key != space.key:
            with self._space_lock:
                if self._space is None or self._space.key != key:
                    self._space = self.open_space(key)
                space = self._space
        self.follower.catch_up(space, wait)
        self.records.follow()
        self._last_refresh = time.monotonic()
        return space

    def _fresh_space(self) -> Space:
        if not self.background and time.monotonic() - self._last_refresh > self.settings.sync_interval:
            return self.refresh(wait=False)
        return self.space

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Raw model vectors -> the vectors the active space holds."""
        return self.space.apply_transform(vectors)

    @property
    def vectors(self) -> VectorIndex:
        """Whole-photo vectors of the active space, keyed by image id."""
        return self.space.photos

    @property
    def object_vectors(self) -> VectorIndex:
        """Detected-object vectors of the active space, keyed by image_id << 10 | object index."""
        return self.space.objects

    @property
    def whitening(self) -> Whitening | None:
        return self.space.transform

    @property
    def copy_model(self) -> copy_descriptor.CopyDescriptor | None:
        """The copy descriptor, loaded on first use; None when the copy stage is off (``copy_candidates`` 0)."""
        if not self.settings.copy_candidates:
            return None
        with self._lock:
            if self._copy_model is None:
                s = self.settings
                self._copy_model = copy_descriptor.load(s.resolved_models_dir, s.copy_side)
            return self._copy_model

    def after_write(self) -> None:
        """Make this process's writes searchable before they are acknowledged: in this process's index, and
        in a shared engine (every process searches that one). A worker process without an index of its own
        leaves an embedded space to the processes that search it: they follow the feed."""
        self.maintenance_due.set()
        if self.follows_index or self.active_key().shared:
            self.refresh(wait=True)

    @property
    def jobs(self):
        """The durable job queue in this library's catalog database."""
        from lookalike.jobs import JobQueue

        with self._lock:
            if getattr(self, "_jobs", None) is None:
                self._jobs = JobQueue(self.catalog.db, self.settings.job_lease, self.settings.job_chunk)
            return self._jobs

    def maintain(self, wait: bool = False) -> None:
        """Re-learn when the rule says so, then tidy. The CLI calls it after a run; the service from its
        maintenance thread, never on a request."""
        from lookalike import maintenance

        maintenance.rebuild(self, wait=wait)
        maintenance.tidy(self)

    @property
    def detector(self):
        with self._lock:
            if self._detector is None:
                self._detector = load_detector(self.settings)
            return self._detector

    def detect(self, query: str | Path | bytes) -> tuple[list, Decoded]:
        """Detected subjects of a photo (boxes in its own pixels)."""
        data = query if isinstance(query, bytes) else self.read_query(query)
        with self.decoding():  # decoded for the detector (320 px) and drawing: the embedding model is not needed
            decoded = decode(data, self.settings.max_pixels, max(DETECT_SIDE, self.settings.thumbnail_size))
            return self.detect_decoded(decoded), decoded

    def detect_decoded(self, decoded: Decoded) -> list:
        """Detections scaled to original pixels, small ones dropped (they embed poorly)."""
        sx, sy = decoded.width / decoded.image.width, decoded.height / decoded.image.height
        out = []
        for det in self.detector.detect(decoded.image):
            x1, y1, x2, y2 = det.box
            box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
            if min(box[2] - box[0], box[3] - box[1]) >= self.settings.min_object_side:
                out.append(replace(det, box=box))
        return out

    def embed_objects(self, decoded: Decoded, detections: list) -> np.ndarray:
        """Embed each detection's crop (box widened by ``object_margin``), like a photo."""
        if not detections:
            return np.empty((0, self.spec.dim), dtype=np.float32)
        m = self.settings.object_margin
        pixels = []
        for det in detections:
            x1, y1, x2, y2 = det.box
            dx, dy = (x2 - x1) * m / 2, (y2 - y1) * m / 2
            box = (max(0.0, x1 - dx), max(0.0, y1 - dy), min(decoded.width, x2 + dx), min(decoded.height, y2 + dy))
            pixels.append(self.embedder.prepare(crop_box(decoded, box)))
        return self.embedder.embed(np.stack(pixels))

    def s3(self):
        """One boto3 client (thread-safe) for S3 sources and the S3 image store."""
        with self._lock:
            if self._s3 is None:
                self._s3 = s3_client(self.settings)
            return self._s3

    def url_fetcher(self) -> UrlFetcher:
        with self._lock:
            if self._fetcher is None:
                s = self.settings
                self._fetcher = UrlFetcher(s.url_timeout, s.url_max_bytes, s.url_max_redirects, s.url_allow_private)
            return self._fetcher

    def close(self) -> None:
        """Finish a tier switch in progress and save the embedded index, so the next process loads it."""
        if self._space is not None:
            self._space.wait()
        self.save_index()
        if self._fetcher is not None:
            self._fetcher.close()
        if self._side is not None:
            self._side.shutdown(wait=True)
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- photos in -----------------------------------------------------------------
    def decode_side(self) -> int:
        """JPEGs are decoded at the smallest scale that still serves the model and the thumbnail."""
        return max(self.embedder.input_size, self.settings.thumbnail_size)

    def decode_for_model(self, data: bytes) -> Decoded:
        return decode(data, self.settings.max_pixels, self.decode_side())

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
        objects: bool = False,
        include_removed: bool = False,
    ) -> IndexReport:
        """Index folders, CSVs, URL lists, files and URLs; incremental and safe to interrupt.

        With ``objects`` each photo is also indexed as each subject the detector finds. Files a user removed
        (``remove``) stay out unless ``include_removed``.
        """
        sets: list[SourceSet] = [expand(p, label, s3=self.s3 if is_s3(p) else None) for p in paths]
        _ = self.embedder  # a missing model fails here, once, not as one rejection per photo
        _ = self.copy_model  # likewise
        if self.settings.copy_candidates and self.follows_index:
            _ = self.space  # new photos are checked against the library for near-duplicates as they come
        if objects:
            _ = self.detector
        report = Pipeline(self, on_progress, objects=objects, include_removed=include_removed).run(sets, prune=prune)
        self._after_run()
        return report

    def _after_run(self) -> None:
        if self.background:
            self.maintenance_due.set()  # the service's maintenance thread re-learns and tidies
        else:
            self.maintain(wait=False)

    def save_index(self) -> None:
        """Embedded index: write its files when they changed (a cache the next process loads)."""
        if self._space is not None:
            self._space.save()

    def delete_images(self, ids: list[int], remember: bool = False) -> list[ImageRecord]:
        removed = self.catalog.remove_images(ids, remember=remember)
        for rec in removed:
            if self.catalog.id_for_sha(rec.sha256) is None:  # the same bytes may have been added again meanwhile
                self.images.delete("thumbnail", rec.sha256)
                self.images.delete("original", rec.sha256)
        if removed:
            self.after_write()
        return removed

    def remove(self, ids: list[int]) -> list[ImageRecord]:
        """Delete images by id, for good: their files stay out of later index runs (``index(include_removed=True)``
        takes them back). Unknown ids are ignored (the caller reports them)."""
        return self.delete_images(ids, remember=True)

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
        with self.decoding():
            if box is None:
                decoded, pixels = self.prepare_pixels(data)
            else:
                decoded = decode(data, self.settings.max_pixels, self.decode_side())
                pixels = self.embedder.prepare(crop_box(decoded, box))
            return self.embedder.embed(pixels[None])[0], decoded

    @contextlib.contextmanager
    def decoding(self):
        """At most ``max_concurrent_decodes`` query photos are decoded at once: a flood of huge photos waits
        here (then gets 503) instead of holding a decoded photo each in memory."""
        if not self._decodes.acquire(timeout=self.settings.decode_wait):
            raise BusyError(f"too many photos being decoded at once; retry (LOOKALIKE_MAX_CONCURRENT_DECODES="
                            f"{self.settings.resolved_decodes})")  # fmt: skip
        try:
            yield
        finally:
            self._decodes.release()

    def search(
        self,
        query: str | Path | bytes | int,
        k: int = 10,
        min_score: float | None = None,
        label: str | None = None,
        box: Box | None = None,
        match: str | None = None,
        detected_label: str | None = None,
        copies_only: bool = False,
        hide_copies: bool = False,
    ) -> SearchResult:
        """Search by photo bytes, a file path or URL, or an indexed image id (more like this).

        The top hits are checked for being the same picture as the query (an edited copy): copies come
        first, each with its verdict and matched region; ``copies_only`` returns only them.

        ``box`` restricts the query to a region of the photo (x1, y1, x2, y2 in original pixels).
        ``match`` None (auto) compares whole photos, except for a region query on a library with
        indexed subjects, where subjects compete too: bench/objects.py finds the source photo of a
        cropped subject top-1 in 99 % of cases that way against 75 % with whole photos only, while on
        whole-photo queries whole photos alone rank best (eval, bench/RESULTS.md).
        """
        if match is None:
            match = "both" if box is not None and len(self.object_vectors) else "whole"
        if k < 1:
            raise LibraryError("k must be at least 1")
        started = time.perf_counter()
        exclude: int | None = None
        cropped_from = query if isinstance(query, int) and box is not None else None
        if cropped_from is not None:  # a region of an indexed photo: searched as a photo, reported as that id
            query = self.original_bytes(cropped_from)
        depth = self.settings.copy_candidates if match != "objects" and detected_label is None else 0
        copy_queries: list[tuple[verification.CopyQuery, Box | None]] = []
        if isinstance(query, int):
            vec = self.catalog.embedding(query)
            if vec is None:
                raise NotFoundError(f"no image with id {query}")
            info: dict = {"image_id": query}
            exclude = query
            if depth:
                copy_queries.append((self._stored_copy_query(query), None))
        else:
            if isinstance(query, bytes):
                data, info = query, ({"source": "upload"} if cropped_from is None else {"image_id": cropped_from})
            else:
                try:
                    data = self.read_query(query)
                except FetchError as exc:
                    raise LibraryError(f"{query}: {exc}") from None
                info = {"source": str(query)}
            with self.decoding():
                decoded = decode(data, self.settings.max_pixels, self.decode_side())
                picture = crop_box(decoded, box) if box is not None else decoded.image
                # the copy descriptor runs in a helper thread while the similarity model embeds the photo: both
                # release the GIL (bench/copies.py: latency)
                # a region is judged as itself and with its whole photo (see _copies_first)
                model = self.copy_model if depth else None
                whole = decoded.image
                shown = [(picture, None)] + ([(whole, box)] if box is not None else [])
                described = [self._side_work().submit(model.describe_views, p) for p, _ in shown] if model else []
                vec = self.embedder.embed(self.embedder.prepare(picture)[None])[0]
                for (image, region), future in zip(shown, described, strict=False):
                    views = future.result()
                    parts = views[1:] if len(views) > 1 and self.settings.copy_views else None
                    w, h = ((box[2] - box[0], box[3] - box[1]) if region is None and box is not None
                            else (decoded.width, decoded.height))  # fmt: skip
                    copy_queries.append((verification.CopyQuery(views[0], _given(image), int(w), int(h),
                                                                views=parts), region))  # fmt: skip
            info |= {"width": decoded.width, "height": decoded.height}
            if box is not None:
                info["box"] = list(box)
        want = 2 * k if hide_copies else k  # spares for the copies left out
        hits = self.search_vector(vec, max(want, depth) if depth else want, min_score, label, exclude, match,
                                  detected_label)  # fmt: skip
        if copy_queries:
            hits = self._copies_first(hits, copy_queries, vec, depth, min_score, label, exclude)
        if copies_only:
            hits = [h for h in hits if h.copy]
        if hide_copies:
            hits = self._one_per_picture(hits)
        return SearchResult(hits[:k], time.perf_counter() - started, info)

    def _one_per_picture(self, hits: list[Hit]) -> list[Hit]:
        """The hits with the copies of a better hit's picture left out, so a library holding a photo several times
        (resized, recompressed, captioned) shows it once: of the query's own copies (verified by the copy stage) the
        first; of the other hits, those whose copy descriptor is a copy's of a better one (cosine >= COPY_SURE,
        where the descriptor alone calls a copy). Photos without a copy descriptor are kept."""
        collection = self.space.copies
        ids = np.asarray([h.id for h in hits], np.int64)
        held = ids[[p is not None for p in collection.payloads(ids)]] if len(ids) else ids
        vectors = dict(zip(held.tolist(), collection.vectors(held), strict=True)) if len(held) else {}
        kept: list[Hit] = []
        seen: list[np.ndarray] = []
        query_copy = False
        for hit in hits:
            vector = vectors.get(hit.id)
            if hit.copy and query_copy:
                continue
            if vector is not None and seen and float(np.max(np.stack(seen) @ vector)) >= verification.COPY_SURE:
                continue
            query_copy = query_copy or hit.copy
            kept.append(hit)
            if vector is not None:
                seen.append(vector)
        return kept

    def _stored_copy_query(self, image_id: int) -> verification.CopyQuery:
        """An indexed photo as a copy query: its stored copy descriptor, and for geometry (when it is needed) its
        original, decoded as a query photo is, when it can still be read, else its thumbnail."""
        rec = self.get(image_id)
        found = self.catalog.copy_vectors([image_id])

        def picture() -> Image.Image | None:
            try:
                with self.decoding():
                    return decode(self.original_bytes(image_id), self.settings.max_pixels, self.decode_side()).image
            except (NotFoundError, BadImage):
                return verification.thumbnail_picture(self.images.get("thumbnail", rec.sha256))

        vector = found.matrix[0] if len(found) else None
        return verification.CopyQuery(vector, picture, rec.width, rec.height, views=self._stored_views(rec, vector))

    def _stored_views(self, rec: ImageRecord, vector: np.ndarray | None) -> np.ndarray | None:
        """The descriptors of an indexed photo's parts, for candidates: from its thumbnail (one small decode and
        pass of the copy model; its original is read only if geometry needs it)."""
        model = self.copy_model
        if vector is None or model is None or not self.settings.copy_views:
            return None
        picture = verification.thumbnail_picture(self.images.get("thumbnail", rec.sha256))
        if picture is None:
            return None
        views = model.describe_views(picture)
        return views[1:] if len(views) > 1 else None

    def _copies_first(self, hits: list[Hit], queries: list[tuple[verification.CopyQuery, Box | None]],
                      vec: np.ndarray, depth: int, min_score: float | None, label: str | None,
                      exclude: int | None) -> list[Hit]:  # fmt: skip
        """The copy collection's nearest photos and the global search's first hits judged (search.verification):
        copies first, then photos of the same object, then the rest of the global search's hits. A region query
        is judged twice: as the crop (a photo shown inside a collage or a screenshot) and with its whole photo
        where the box lies (a small region of a copy: verification.within_region); the crop's verdict stands
        unless only the whole photo's found a copy."""
        verdicts: dict[int, copies.Verdict] = {}
        extra: dict[int, Hit] = {}
        for query, region in queries:
            found, judged = self._judged(hits, query, vec, depth, min_score, label, exclude)
            if region is not None:
                judged = verification.within_region(judged, region)
            for image_id, verdict in judged.items():
                if image_id not in verdicts or (verdict.copy and not verdicts[image_id].copy):
                    verdicts[image_id] = verdict
            extra |= {h.id: h for h in found if h.id not in extra}
        shown = {h.id for h in hits}
        more = [h for h in extra.values() if h.id in verdicts and h.id not in shown]
        return verification.order(hits + more, verdicts)

    def _judged(self, hits: list[Hit], query: verification.CopyQuery, vec: np.ndarray, depth: int,
                min_score: float | None, label: str | None, exclude: int | None
                ) -> tuple[list[Hit], dict[int, copies.Verdict]]:  # fmt: skip
        """One copy query's candidates beyond the global search's hits, and the verdicts on them and on the global
        search's first hits."""
        space = self.space
        cosines: dict[int, float] = {}
        reach: dict[int, float] = {}  # the best cosine of any view of the query (the whole photo or a part)
        top = hits[: verification.GLOBAL_CANDIDATES]
        if query.vector is not None:
            where = {"label": label} if label is not None else None
            views = query.vector[None] if query.views is None else np.vstack([query.vector[None], query.views])
            # the query's views against the photos' whole descriptors and their centres' (the parts collection)
            for index in (space.copies, space.parts) if query.views is not None else (space.copies,):
                if not len(index):
                    continue
                ids, scores = index.search(views, depth + (exclude is not None), where=where)
                if index is space.copies:
                    cosines = {int(i): float(c) for i, c in zip(ids[0], scores[0], strict=True)
                               if i != MISSING and i != exclude}  # fmt: skip
                for row_ids, row_scores in zip(ids, scores, strict=True):
                    for i, c in zip(row_ids.tolist(), row_scores.tolist(), strict=True):
                        if i != MISSING and i != exclude and c > reach.get(i, -1.0):
                            reach[i] = float(c)
            # the global search's first hits, and photos only a part of the query reached: their whole photo's
            # cosine from the copy collection itself (no catalog round trip); a photo it does not hold (indexed
            # before copy descriptors) is judged by geometry
            first = np.asarray([h.id for h in top if h.id not in cosines] + [i for i in reach if i not in cosines],
                               dtype=np.int64)  # fmt: skip
            first = np.unique(first)
            held = first[[p is not None for p in space.copies.payloads(first)]] if len(first) else first
            if len(held):
                cosines |= dict(zip(held.tolist(), (space.copies.vectors(held) @ query.vector).tolist(), strict=True))
        known = {h.id for h in top}
        floor = verification.VIEW_FLOOR if query.views is not None else verification.CHECK_FLOOR
        best = sorted((i for i in reach if i not in known), key=lambda i: -reach[i])[:depth]
        wanted = [i for i in best if reach[i] >= floor]
        extra = self._candidate_hits(wanted, hits, vec, min_score, label)
        verdicts = verification.judge(query, top + extra, cosines, self._thumbnail_of,
                                      reach=reach if query.views is not None else None)  # fmt: skip
        return extra, verdicts

    def _candidate_hits(self, candidates: list[int], hits: list[Hit], vec: np.ndarray, min_score: float | None,
                        label: str | None) -> list[Hit]:  # fmt: skip
        """Hits for the copy collection's candidates, with the search's filters applied; those the global search
        returned keep their hit. Their similarity is read from the index the global search used: a photo newer
        than it is skipped (the global search could not have found it either)."""
        known = {h.id: h for h in hits}
        wanted = [i for i in candidates if i not in known]
        records = self.records.get_many(wanted) if wanted else {}
        space = self.space
        ids = np.asarray([i for i in wanted if i in records], np.int64)
        present = ids[[p is not None for p in space.photos.payloads(ids)]] if len(ids) else ids
        cosine = space.photos.vectors(present) @ space.apply_transform(vec[None])[0] if len(present) else []
        similarity = dict(zip(present.tolist(), np.asarray(cosine, np.float64).tolist(), strict=True))
        out = []
        for i in candidates:
            if i in known:
                out.append(known[i])
            elif i in similarity and (label is None or records[i].label == label) and (
                min_score is None or similarity[i] >= min_score
            ):
                rec = records[i]
                out.append(Hit(i, similarity[i], rec.label, rec.sources, rec.width, rec.height, rec.sha256,
                               similarity=similarity[i]))  # fmt: skip
        return out

    def copy_of(self, query: verification.CopyQuery) -> tuple[int, float] | None:
        """The indexed photo a new photo is an (edited) copy of: its nearest one in the copy collection, judged like
        a search's candidate (geometry only where the descriptor cannot decide: rare while indexing, bench/ingest.py);
        None when none is, or when this process keeps no index (a worker)."""
        if query.vector is None or not self.follows_index or self._space is None or not len(self._space.copies):
            return None
        ids, scores = self._space.copies.search(query.vector[None], 1)
        if ids[0, 0] == MISSING or scores[0, 0] < verification.CHECK_FLOOR:
            return None
        found = int(ids[0, 0])
        rec = self.records.get_many([found]).get(found)
        if rec is None:
            return None
        hit = Hit(found, 0.0, rec.label, rec.sources, rec.width, rec.height, rec.sha256)
        verdict = verification.judge(query, [hit], {found: float(scores[0, 0])}, self._thumbnail_of, regions=False)
        judged = verdict.get(found)
        return (found, judged.confidence) if judged is not None and judged.copy else None

    def _side_work(self) -> ThreadPoolExecutor:
        """Threads for work a search does beside the similarity model (the query's copy descriptor)."""
        with self._lock:
            if self._side is None:
                self._side = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lookalike-search")
            return self._side

    def _thumbnail_of(self, hit: Hit) -> bytes | None:
        return self.images.get("thumbnail", hit.sha256)

    def search_text(
        self, text: str, k: int = 10, min_score: float | None = None, label: str | None = None
    ) -> SearchResult:
        """Photos that match a description, with a CLIP-style model (photos and text in one space)."""
        if not self.spec.text:
            raise TextSearchError(
                f"this library's model {self.model_name!r} embeds photos only, so it cannot be searched by text. "
                "Text search needs a CLIP-style model folder (visual + textual ONNX and a tokenizer, in immich's "
                "layout) in the models directory: `lookalike models` shows which can (column 'text'), and a "
                "library indexed with one (--model NAME, into a new --home) answers text searches"
            )
        if k < 1:
            raise LibraryError("k must be at least 1")
        started = time.perf_counter()
        embedder = self.embedder
        assert isinstance(embedder, TextEmbedder)  # spec.text: the model embeds text
        try:
            vec = embedder.embed_text([text])[0]
        except ValueError as exc:
            raise LibraryError(str(exc)) from None
        hits = self.search_vector(vec, k, min_score, label, plain=True)
        return SearchResult(hits, time.perf_counter() - started, {"text": text})

    def search_vector(
        self,
        vec: np.ndarray,
        k: int = 10,
        min_score: float | None = None,
        label: str | None = None,
        exclude: int | None = None,
        match: str = "whole",
        detected_label: str | None = None,
        plain: bool = False,
    ) -> list[Hit]:
        """Nearest photos to ``vec``, one hit per photo.

        ``match`` says which entries compete: whole photos, detected objects, or both (the best
        entry of a photo wins and its box is reported). ``detected_label`` keeps only photos with
        a detected object of that COCO label, matched through that object.
        """
        if match not in MATCHES:
            raise LibraryError(f"match must be one of {', '.join(MATCHES)}")
        if detected_label is not None:
            match = "objects"
        space = self._fresh_space()  # one transform and one pair of collections for the whole search
        return ranking.rank(space, self.catalog, self.records, self.settings, vec, k, min_score, label, exclude,
                            match, detected_label, plain)  # fmt: skip

    def search_objects(
        self,
        query: str | Path | bytes,
        k: int = 10,
        min_score: float | None = None,
        label: str | None = None,
        match: str = "both",
    ) -> list[tuple]:
        """Detect the subjects of the query photo and search with each: [(detection, hits), ...]."""
        data = query if isinstance(query, bytes) else self.read_query(query)
        with self.decoding():
            decoded = decode(data, self.settings.max_pixels, self.decode_side())
            detections = self.detect_decoded(decoded)
            vectors = self.embed_objects(decoded, detections)
        return [
            (det, self.search_vector(vec, k, min_score, label, match=match))
            for det, vec in zip(detections, vectors, strict=True)
        ]

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
                if is_s3(src):
                    data = s3_read(self.s3(), src, self.settings.max_file_bytes)
                else:
                    data = read_file(src, self.settings.max_file_bytes)
            except FetchError:
                continue
            if hashlib.sha256(data).hexdigest() == rec.sha256:
                return data
        raise NotFoundError(f"the original of image {image_id} is no longer available (its files moved or changed)")

    # --- information and maintenance -------------------------------------------------
    def get(self, image_id: int) -> ImageRecord:
        rec = self.catalog.get(image_id)
        if rec is None:
            raise NotFoundError(f"no image with id {image_id}")
        return rec

    def stats(self) -> dict:
        from lookalike import maintenance

        space = self.space
        counts = self.catalog.counts()
        return {
            "home": str(self.home),
            "catalog": self.catalog.dialect if self.settings.database_url is None else self.where,
            "images": counts["images"],
            "sources": counts["sources"],
            "labels": len(self.catalog.labels()),
            "objects": counts["objects"],
            "photos_with_objects": counts["photos_with_objects"],
            "model": self.model_name,
            "text_search": self.spec.text,
            "dim": self.spec.dim,
            "index_dim": space.dim,
            "backend": space.key.backend,
            **maintenance.describe(self),
            "query_expansion": self.settings.query_expansion,
            "rerank_depth": self.settings.rerank_depth,
            "index": space.photos.kind,
            "vectors": len(space.photos),
            "copy_candidates": self.settings.copy_candidates,
            "copy_vectors": len(space.copies),
            "part_vectors": len(space.parts),
            "disk_bytes": {
                "catalog": self.catalog.disk_bytes(),
                "images": self.images.disk_bytes(),
                "vectors": sum(index.disk_bytes() for index in space.indexes()),
            },
        }

    def backfill_copies(self, recompute: bool = False, on_progress: Callable[[int, int], None] | None = None
                        ) -> BackfillReport:  # fmt: skip
        """Copy descriptors for the photos that have none (all photos with ``recompute``): lookalike.ingest.backfill."""
        model = self.copy_model
        if model is None:
            raise LibraryError("the copy stage is off (LOOKALIKE_COPY_CANDIDATES=0): there is nothing to backfill")

        def original(rec: ImageRecord) -> bytes | None:
            try:
                return self.original_bytes(rec.id)
            except NotFoundError:
                return None

        report = backfill(self.catalog, model, original, lambda rec: self.images.get("thumbnail", rec.sha256),
                          self.settings.max_pixels, self.settings.resolved_workers, recompute, on_progress)  # fmt: skip
        self.after_write()
        return report

    def reindex(self, to: str | None = None) -> dict:
        """Re-learn the whitening and build a new space from the catalog's embeddings (no re-embedding),
        beside the active one, then switch every process to it.

        ``to`` moves the library to another vector engine (embedded, a Milvus URI, elasticsearch+URL).
        """
        from lookalike import maintenance

        started = time.perf_counter()
        maintenance.rebuild(self, backend=to, force=True)
        space = self.space
        w = space.transform
        return {
            "vectors": len(space.photos),
            "index": space.photos.kind,
            "backend": space.key.backend,
            "dim": space.dim,
            "whitening": f"{self.spec.dim} -> {w.dim}" if w else "off",
            "collections": list(space.names),
            "seconds": round(time.perf_counter() - started, 3),
        }
