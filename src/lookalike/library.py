"""The core library: the typed parts of one library, wired in one place, and the facade the CLI, the HTTP
service, the workers and the benchmarks call.

A library is a catalog (the source of truth: SQLite in ``settings.home`` or the PostgreSQL database of
``LOOKALIKE_DATABASE_URL``), an image store (a local folder or a bucket) and a vector space (the active transform
and its collections, in the embedded index or a shared engine). ``Library.__init__`` builds the parts from the
settings: the models (``lookalike.models.loaded``), the reader of photo bytes (``lookalike.ingest.reading``), the
spaces (``lookalike.spaces``), the searcher (``lookalike.search.searcher``); each part gets what it needs and no
part gets the library. The process holds nothing that another process must agree with: the space is opened from
the catalog's pointer and kept up to date by following the catalog's change feed. Like rclip's ``RClip``, the
embedder can be passed in, so tests and tools can share one loaded model across libraries.

The process's role is given when the library is opened: ``cli`` (refreshes on a stale search, maintains after a
run), ``service`` (a thread follows the catalog and maintains: ``maintenance.Background``), ``worker`` (writes the
catalog only: keeps no index of its own, so it never checks new photos against one).
"""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lookalike import doctor, maintenance
from lookalike.config import Settings
from lookalike.errors import BusyError, LibraryError, ModelMismatchError, NotFoundError, TextSearchError
from lookalike.fields import FieldValue
from lookalike.filters import Filter
from lookalike.imaging import Decoded
from lookalike.ingest.backfill import BackfillReport, backfill
from lookalike.ingest.pipeline import IndexingParts, IndexReport, Pipeline, ProgressFn, upload_in_use
from lookalike.ingest.reading import Reader
from lookalike.ingest.sources import SourceSet, changed_files, expand, mark_library_folder
from lookalike.jobs import JobQueue, Worker
from lookalike.models import copy_descriptor
from lookalike.models.detectors import Detection, Detector
from lookalike.models.embedder import Embedder
from lookalike.models.loaded import Models, crop_box
from lookalike.models.registry import get_spec
from lookalike.moments import moment
from lookalike.search import duplicates, verification
from lookalike.search.results import Box, Hit, SearchResult
from lookalike.search.searcher import Searcher, SearchRequest
from lookalike.search.whitening import Whitening
from lookalike.spaces import Spaces
from lookalike.store.catalog import Catalog, ImageRecord
from lookalike.store.catalog.cache import RecordCache
from lookalike.store.catalog.database import PATIENCE, redact
from lookalike.store.images import ImageStore, LocalImageStore
from lookalike.store.s3 import S3ImageStore, S3Location, is_s3, s3_client
from lookalike.store.vectors import VectorIndex
from lookalike.vectorspace import Space, SpaceKey

__all__ = ["Box", "BusyError", "Hit", "Library", "LibraryError", "ModelMismatchError", "NotFoundError",
           "Role", "SearchResult", "TextSearchError", "crop_box"]  # fmt: skip
Role = Literal["cli", "service", "worker"]


@dataclass(frozen=True)
class PlayableVideo:
    """A frame's video as it can be played: its source (a file, or ``upload:<sha256>/<name>``), the frame's second,
    a local file to send (None: an upload kept in a bucket) and the sha256 an upload is stored under."""

    source: str
    t: float
    path: str | None
    stored: str | None
ROLES: tuple[Role, ...] = ("cli", "service", "worker")


class Library:
    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None, role: Role = "cli") -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self._settings = settings or Settings()
        self._role: Role = role
        self.home = self.settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        mark_library_folder(self.home)  # never indexed itself, even inside the folder it indexes
        # a command's reads wait out a database that blinks, as its writes do: a failover must not end an index run
        # half-way; the service answers 503 at once and a worker runs its chunk again (they read without waiting)
        self.catalog = Catalog.open(self.settings.catalog_url, self.settings.database_schema,
                                    read_patience=PATIENCE if role == "cli" else 0.0)  # fmt: skip
        self.library_id = self.catalog.setdefault_meta("library_id", uuid.uuid4().hex)
        self._lock = threading.Lock()  # the job queue, made on first use
        self._jobs: JobQueue | None = None
        s3 = None
        if self.settings.image_store == "local":
            self.images: ImageStore = LocalImageStore(self.home / "images")
        else:
            s3 = s3_client(self.settings)
            self.images = S3ImageStore(s3, S3Location.parse(self.settings.image_store))
        doctor.claim_store(self.images, self.library_id)
        self.reader = Reader(self.settings, self.images, s3, self.catalog.video_states)
        self.model_name = self._check_model()
        self.spec = get_spec(self.model_name, self.settings)
        if embedder is not None and (embedder.name != self.model_name or embedder.dim != self.spec.dim):
            raise ModelMismatchError(f"embedder {embedder.name} given for a library of model {self.model_name}")
        self.models = Models(self.settings, self.spec, embedder)
        self.records = RecordCache(self.catalog)  # hits' records, kept true by the change feed
        self.spaces = Spaces(self.catalog, self.settings, self.home, self.library_id, self.model_name, self.spec.dim,
                             self.records, following=role == "service")  # fmt: skip
        self.searcher = Searcher(self.settings, self.models, self.spaces, self.catalog, self.records, self.images,
                                 self.reader, follows_index=self.follows_index)  # fmt: skip
        self.maintenance_due = threading.Event()  # set after writes, for the service's maintenance thread
        self.active_key()  # a new library gets its first space now, not in the middle of maintenance
        self._check_backend()

    @property
    def settings(self) -> Settings:
        """What the parts were built with: read-only, since each part keeps the settings it was given (open another
        library to serve other settings)."""
        return self._settings

    @property
    def role(self) -> Role:
        return self._role

    @property
    def background(self) -> bool:
        """A thread of this process follows the catalog and maintains the library (the service)."""
        return self.role == "service"

    @property
    def follows_index(self) -> bool:
        """This process keeps the index current; a worker writes the catalog only."""
        return self.role != "worker"

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

    # --- the parts, as the callers before the split knew them ---------------------------
    @property
    def embedder(self) -> Embedder:
        return self.models.embedder

    @property
    def copy_model(self) -> copy_descriptor.CopyDescriptor | None:
        """The copy descriptor, loaded on first use; None when the copy stage is off (``copy_candidates`` 0)."""
        return self.models.copy_model

    @property
    def detector(self) -> Detector:
        return self.models.detector

    def detect(self, query: str | Path | bytes) -> tuple[list[Detection], Decoded]:
        return self.searcher.detect(query)

    def embed_bytes(self, data: bytes, box: Box | None = None) -> tuple[np.ndarray, Decoded]:
        """Embed a photo, or the ``box`` (x1, y1, x2, y2 in original pixels) of it."""
        with self.reader.decoding():
            decoded = self.models.decode(data)
            return self.models.embed(crop_box(decoded, box) if box is not None else decoded.image), decoded

    def s3(self) -> Any:
        return self.reader.s3()

    def read_query(self, query: str | Path) -> bytes:
        return self.reader.read_query(query)

    # --- the vector space ----------------------------------------------------------
    def active_key(self) -> SpaceKey:
        return self.spaces.active_key()

    def names_for(self, key: SpaceKey) -> tuple[str, str, str, str]:
        return self.spaces.names_for(key)

    @property
    def space(self) -> Space:
        return self.spaces.space

    def refresh(self, wait: bool = True) -> Space:
        return self.spaces.refresh(wait)

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

    def save_index(self) -> None:
        self.spaces.save()

    # --- writes and maintenance ------------------------------------------------------
    def after_write(self) -> None:
        """Make this process's writes searchable before they are acknowledged: in this process's index, and
        in a shared engine (every process searches that one). A worker process without an index of its own
        leaves an embedded space to the processes that search it: they follow the feed."""
        self.maintenance_due.set()
        if self.follows_index or self.active_key().shared:
            self.refresh(wait=True)

    @property
    def jobs(self) -> JobQueue:
        """The durable job queue in this library's catalog database."""
        with self._lock:
            if self._jobs is None:
                self._jobs = JobQueue(self.catalog.db, self.settings.job_lease, self.settings.job_chunk)
            return self._jobs

    def maintain(self, wait: bool = False) -> None:
        """Re-learn when the rule says so, then tidy. The CLI calls it after a run; the service from its
        maintenance thread, never on a request."""
        maintenance.rebuild(self.spaces, wait=wait)
        maintenance.tidy(self.spaces)

    def indexing_parts(self) -> IndexingParts:
        """What an indexing run needs of this library."""
        return IndexingParts(self.settings, self.catalog, self.images, self.reader, self.models,
                             self.searcher.copy_of, self.after_write, self.delete_orphans)  # fmt: skip

    def worker(self, name: str | None = None, queue: JobQueue | None = None) -> Worker:
        """A worker running this library's index jobs (from ``queue``, default its own); it maintains the library
        once a minute unless this process's background thread does (the service)."""
        return Worker(self.indexing_parts(), queue or self.jobs, None if self.background else self.maintain, name)

    def index(
        self,
        paths: list[str],
        label: str | None = None,
        prune: bool = False,
        on_progress: ProgressFn | None = None,
        objects: bool = False,
        include_removed: bool = False,
        kinds: dict[str, str] | None = None,
        prune_empty: bool = False,
    ) -> IndexReport:
        """Index folders, CSVs, manifests, URL lists, files and URLs; incremental and safe to interrupt.

        With ``objects`` each photo is also indexed as each subject the detector finds. Files a user removed
        (``remove``) stay out unless ``include_removed``. ``kinds`` gives the types of CSV field columns
        (``{"price": "float"}``; else inferred). ``prune`` leaves a folder, named or below it, that lists no file
        at all alone (an unmounted disk's mount point) unless ``prune_empty``.
        """
        sets: list[SourceSet] = [expand(p, label, s3=self.s3 if is_s3(p) else None, kinds=kinds, own=self.home)
                                 for p in paths]
        _ = self.embedder  # a missing model fails here, once, not as one rejection per photo
        _ = self.copy_model  # likewise
        if self.settings.copy_candidates and self.follows_index:
            _ = self.space  # new photos are checked against the library for near-duplicates as they come
        if objects:
            _ = self.detector
        pipeline = Pipeline(self.indexing_parts(), on_progress, objects=objects, include_removed=include_removed)
        report = pipeline.run(sets, prune=prune or prune_empty, prune_empty=prune_empty)
        self._after_run()
        return report

    def _after_run(self) -> None:
        if self.background:
            self.maintenance_due.set()  # the service's maintenance thread re-learns and tidies
        else:
            self.maintain(wait=False)

    def delete_images(self, ids: list[int], remember: bool = False, orphans_only: bool = False,
                      keeping: Mapping[int, int] | None = None) -> list[ImageRecord]:  # fmt: skip
        removed = self.catalog.remove_images(ids, remember=remember, orphans_only=orphans_only, keeping=keeping)
        for rec in removed:
            if self.catalog.id_for_sha(rec.sha256) is None:  # the same bytes may have been added again meanwhile
                for kind in ("thumbnail", "original", "features"):
                    self.images.delete(kind, rec.sha256)
        self._forget_uploaded_videos(removed)
        if removed:
            self.after_write()
        return removed

    def _forget_uploaded_videos(self, removed: list[ImageRecord]) -> None:
        """An uploaded video none of whose frames is left is forgotten (uploaded again, it is indexed anew), and its
        bytes leave the image store once no upload of them has a frame left."""
        videos = {m[0] for rec in removed for src in rec.sources if (m := moment(src)) and m[0].startswith("upload:")}
        for video in sorted(videos):
            if self.catalog.frame_sources(video):
                continue
            self.catalog.forget_videos([video])
            digest = video.removeprefix("upload:").split("/", 1)[0]
            if not upload_in_use(self.catalog, digest):
                self.images.delete("original", digest)

    def set_fields(self, image_id: int, changes: Mapping[str, FieldValue | None]) -> ImageRecord:
        """Change a photo's fields without touching its vectors (a None removes a field): FieldError when the
        result is not a valid record, NotFoundError when there is no such photo."""
        rec = self.catalog.set_fields(image_id, changes)
        if rec is None:
            raise NotFoundError(f"no image with id {image_id}")
        self.after_write()
        return rec

    def delete_orphans(self, ids: list[int]) -> list[ImageRecord]:
        """Delete those of these photos no source points at, as the delete finds them (another run may have given
        one a source since it was found sourceless)."""
        return self.delete_images(ids, orphans_only=True)

    def remove(self, ids: list[int], keeping: Mapping[int, int] | None = None) -> list[ImageRecord]:
        """Delete images by id, for good: their files stay out of later index runs (``index(include_removed=True)``
        takes them back). Unknown ids are ignored (the caller reports them). ``keeping``: each id is a copy of the
        photo it maps to, removed only while that photo is still in the library with a file (a duplicates report is
        acted on after it was made: had a run written other bytes over the kept photo's file since, removing its
        copies left the picture with no photo at all)."""
        return self.delete_images(ids, remember=True, keeping=keeping)

    # --- search ----------------------------------------------------------------------
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
        where: Filter | None = None,
    ) -> SearchResult:
        """Search by photo bytes, a file path or URL, or an indexed image id: ``Searcher.search``."""
        request = SearchRequest(k, min_score, label, box, match, detected_label, copies_only, hide_copies, where)
        return self.searcher.search(query, request)

    def search_text(
        self, text: str, k: int = 10, min_score: float | None = None, label: str | None = None,
        where: Filter | None = None,
    ) -> SearchResult:
        return self.searcher.search_text(text, k, min_score, label, where)

    def search_vector(self, vec: np.ndarray, k: int = 10, min_score: float | None = None, label: str | None = None,
                      exclude: int | None = None, match: str = "whole", detected_label: str | None = None,
                      plain: bool = False) -> list[Hit]:  # fmt: skip
        return self.searcher.search_vector(vec, k, min_score, label, exclude, match, detected_label, plain)

    def search_objects(self, query: str | Path | bytes, k: int = 10, min_score: float | None = None,
                       label: str | None = None, match: str = "both",
                       where: Filter | None = None) -> list[tuple[Detection, list[Hit]]]:  # fmt: skip
        return self.searcher.search_objects(query, k, min_score, label, match, where)

    def check(self) -> doctor.Findings:
        """What differs between the catalog, the vector engine and the image store (lookalike.doctor)."""
        return doctor.check(self.spaces, self.images)

    def repair(self, found: doctor.Findings) -> doctor.Findings:
        """Repair what ``check`` found, the catalog being the truth; photos no source points at any more (still
        none now) are removed as a run removes the old version of a changed file."""
        fixed = doctor.fix(self.spaces, self.images, self.reader, found)
        sourceless = self.catalog.orphans(found.photos_without_source) if found.photos_without_source else []
        fixed.fixed["photos_removed"] = len(self.delete_orphans(sourceless))
        return fixed

    def duplicates(self, min_confidence: float = 0.0, on_progress: Callable[[int, int], None] | None = None
                   ) -> dict[str, Any]:  # fmt: skip
        """The duplicates report (lookalike.search.duplicates), as the CLI prints it and the API returns it."""
        def changed(sources: list[str]) -> set[str]:
            states = self.catalog.source_states(sources)
            return changed_files({src: (st.size, st.mtime_ns) for src, st in states.items()})

        return duplicates.report(self.space.copies, self.catalog, self.images, min_confidence, on_progress,
                                 self.settings.keep_features, changed)  # fmt: skip

    def copy_of(self, query: verification.CopyQuery) -> tuple[int, float] | None:
        return self.searcher.copy_of(query)

    def original_bytes(self, image_id: int) -> bytes:
        return self.searcher.original_bytes(image_id)

    def video_file(self, image_id: int) -> PlayableVideo:
        """The video a frame is from, for playing it from the frame's second: the first of its videos still as indexed
        (a file: its size and modification time as recorded; an upload: its bytes in the image store)."""
        rec = self.get(image_id)
        if not any(moment(source) for source in rec.sources):
            raise NotFoundError(f"image {image_id} is a photo, not a video's frame: it has no video to play")
        for source in rec.sources:
            found = moment(source)
            state = self.catalog.video_states([found[0]]).get(found[0]) if found else None
            if found is None or state is None:
                continue
            video, t = found
            if video.startswith("upload:"):
                if self.images.exists("original", state.sha256):
                    store = self.images
                    kept = store.path("original", state.sha256) if isinstance(store, LocalImageStore) else None
                    return PlayableVideo(video, t, str(kept) if kept else None, state.sha256)
                continue
            try:
                st = os.stat(video)
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (state.size, state.mtime_ns):
                return PlayableVideo(video, t, video, None)
        raise NotFoundError(f"image {image_id} is not a frame of a video still in its place")

    # --- information and maintenance -------------------------------------------------
    def get(self, image_id: int) -> ImageRecord:
        return self.searcher.get(image_id)

    def stats(self) -> dict[str, Any]:
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
            "videos": counts["videos"],  # each one item; its chosen frames are among the images
            "video_frames": counts["frames"],
            "model": self.model_name,
            "text_search": self.spec.text,
            "dim": self.spec.dim,
            "index_dim": space.dim,
            "backend": space.key.backend,
            **maintenance.describe(self.spaces),
            "query_expansion": self.settings.query_expansion,
            "rerank_depth": self.settings.rerank_depth,
            "index": space.photos.kind,
            "vectors": len(space.photos),
            "copy_candidates": self.settings.copy_candidates,
            "copy_vectors": len(space.copies),
            "part_vectors": len(space.parts),
            # photos whose copy descriptors are missing or incomplete (indexed before them, or before the centres of
            # schema version 8): what `lookalike copies` would describe
            "copies_to_describe": self.catalog.count_without_copy_vector() if self.settings.copy_candidates else 0,
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
                return self.reader.original_bytes(rec)
            except NotFoundError:
                return None

        report = backfill(self.catalog, model, original, lambda rec: self.images.get("thumbnail", rec.sha256),
                          self.settings.max_pixels, self.settings.resolved_workers, recompute, on_progress)  # fmt: skip
        self.after_write()
        return report

    def reindex(self, to: str | None = None) -> dict[str, Any]:
        """Re-learn the whitening and build a new space from the catalog's embeddings (no re-embedding),
        beside the active one, then switch every process to it.

        ``to`` moves the library to another vector engine (embedded, a Milvus URI, elasticsearch+URL).
        """
        started = time.perf_counter()
        maintenance.rebuild(self.spaces, backend=to, force=True)
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

    def close(self) -> None:
        """Finish a tier switch in progress and save the embedded index, so the next process loads it."""
        self.spaces.close()
        self.reader.close()
        self.searcher.close()
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
