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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.config import Settings
from lookalike.imaging import Decoded, decode
from lookalike.ingest.fetch import FetchError, UrlFetcher, read_file
from lookalike.ingest.pipeline import IndexReport, Pipeline, ProgressFn
from lookalike.ingest.sources import SourceItem, SourceSet, expand, is_url
from lookalike.models.embedder import Embedder
from lookalike.models.registry import get_spec, load_detector
from lookalike.search.rerank import expand_query, k_reciprocal_order
from lookalike.search.whitening import Whitening, whiten_dim
from lookalike.store.catalog import Catalog, ImageRecord, ObjectRecord, object_vector_id, split_object_vector_id
from lookalike.store.images import ImageStore, LocalImageStore
from lookalike.store.s3 import S3ImageStore, S3Location, is_s3, s3_client
from lookalike.store.s3 import read as s3_read
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
    box: tuple[float, float, float, float] | None = None  # the matched object, when an object matched best
    detected_label: str | None = None

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "label": self.label,
            "sources": list(self.sources),
            "width": self.width,
            "height": self.height,
            "box": [round(v, 1) for v in self.box] if self.box else None,
            "detected_label": self.detected_label,
        }


MATCHES = ("whole", "objects", "both")


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
        # one lock for every mutation of catalog/index/store and for index searches: the service
        # runs searches, uploads and index jobs on different threads
        self.write_lock = threading.RLock()
        self.home = self.settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.home / "catalog.sqlite")
        self._s3 = None
        if self.settings.image_store == "local":
            self.images: ImageStore = LocalImageStore(self.home / "images")
        else:
            self.images = S3ImageStore(self.s3(), S3Location.parse(self.settings.image_store))
        self.model_name = self._check_model()
        # the vector backend a library was moved to (reindex --to) sticks, unless a setting overrides it
        explicit = "vector_backend" in self.settings.model_fields_set
        stored = self.catalog.get_meta("vector_backend")
        self.vector_backend = self.settings.vector_backend if explicit or not stored else stored
        self.spec = get_spec(self.model_name)
        if embedder is not None and (embedder.name != self.model_name or embedder.dim != self.spec.dim):
            raise ModelMismatchError(f"embedder {embedder.name} given for a library of model {self.model_name}")
        self._embedder = embedder
        self._vectors: EmbeddedIndex | None = None
        self._object_vectors: EmbeddedIndex | None = None
        self._detector = None
        self._whitening: Whitening | None | bool = False  # False: not loaded yet
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
        """Whole-photo vectors, keyed by image id."""
        with self.write_lock:
            if self._vectors is None:
                self._vectors = self._open_index(
                    "vectors", self.catalog.ids(), self.catalog.embeddings_for, self.catalog.payloads_for
                )
            return self._vectors

    @property
    def object_vectors(self) -> EmbeddedIndex:
        """Detected-object vectors, keyed by image_id << 10 | object index."""
        with self.write_lock:
            if self._object_vectors is None:
                self._object_vectors = self._open_index(
                    "object_vectors",
                    self.catalog.object_vector_ids(),
                    self.catalog.object_embeddings_for,
                    self.catalog.object_payloads_for,
                )
            return self._object_vectors

    def _open_index(self, name: str, truth: np.ndarray, fetch, fetch_payloads) -> EmbeddedIndex:
        s = self.settings
        w = self.whitening
        dim, tag = (w.dim, w.tag) if w else (self.spec.dim, "raw")
        hnsw = {"m": s.hnsw_m, "ef_construction": s.hnsw_ef_construction, "ef_search": s.hnsw_ef_search}
        backend = self.vector_backend
        if backend == "embedded":
            index = EmbeddedIndex(self.home / name, dim, s.ann_threshold, hnsw, tag, s.ivf_threshold, s.ivf_nprobe,
                                  s.ivf_storage)  # fmt: skip
            index.load()
        elif backend.startswith("elasticsearch+"):
            from lookalike.store.elastic import ElasticsearchIndex
            from lookalike.store.milvus import collection_name

            key = s.es_api_key.get_secret_value() if s.es_api_key else None
            index = ElasticsearchIndex(backend.removeprefix("elasticsearch+"),
                                       collection_name(name, dim, tag + str(self.home)).lower(), dim, key)  # fmt: skip
        else:
            from lookalike.store.milvus import MilvusIndex, collection_name

            token = s.milvus_token.get_secret_value() if s.milvus_token else None
            index = MilvusIndex(backend, collection_name(name, dim, tag + str(self.home)), dim, token, **hnsw,
                                index_type=s.milvus_index, nlist=s.milvus_nlist, nprobe=s.ivf_nprobe)  # fmt: skip
        added, removed = index.sync(truth, lambda ids: self.transform(fetch(ids)), fetch_payloads)
        if added or removed:
            index.save()
        return index

    @property
    def whitening(self) -> Whitening | None:
        if not self.settings.whiten:
            return None
        if self._whitening is False:
            self._whitening = Whitening.load(self.home / "whitening.npz")
        return self._whitening

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Raw model vectors -> the vectors the indexes hold (whitened when learned)."""
        w = self.whitening
        return w.apply(vectors) if w is not None else np.asarray(vectors, dtype=np.float32)

    def maybe_refit(self, force: bool = False) -> bool:
        """(Re)learn the whitening when the library has grown or shrunk by 2x since it was learned."""
        s = self.settings
        if not s.whiten:
            return False
        with self.write_lock:
            n = self.catalog.count()
            current = self.whitening
            if n < s.whiten_min_photos:
                if current is None:
                    return False
                (self.home / "whitening.npz").unlink(missing_ok=True)
                self._whitening = None
            elif force or current is None or n >= 2 * current.fitted_on or 2 * n <= current.fitted_on:
                chunks = (vecs for _, vecs in self.catalog.iter_embeddings())
                fitted = Whitening.fit(chunks, whiten_dim(n, s.whiten_max_dim), s.whiten_power)
                fitted.save(self.home / "whitening.npz")
                self._whitening = fitted
            else:
                return False
            self._vectors = self._object_vectors = None  # reopened with the new transform, rebuilt from the catalog
            return True

    @property
    def detector(self):
        with self.write_lock:
            if self._detector is None:
                self._detector = load_detector(self.settings)
            return self._detector

    def detect(self, query: str | Path | bytes) -> tuple[list, Decoded]:
        """Detected subjects of a photo (boxes in its own pixels)."""
        data = query if isinstance(query, bytes) else self.read_query(query)
        decoded = decode(data, self.settings.max_pixels, self.decode_side())
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

    def catalog_reader(self) -> Catalog:
        """A per-thread catalog connection, for lookups from worker threads."""
        cat = getattr(self._local, "catalog", None)
        if cat is None:
            cat = self._local.catalog = Catalog(self.catalog.path)
        return cat

    def s3(self):
        """One boto3 client (thread-safe) for S3 sources and the S3 image store."""
        with self.write_lock:
            if self._s3 is None:
                self._s3 = s3_client(self.settings)
            return self._s3

    def url_fetcher(self) -> UrlFetcher:
        with self.write_lock:
            if self._fetcher is None:
                s = self.settings
                self._fetcher = UrlFetcher(s.url_timeout, s.url_max_bytes, s.url_max_redirects, s.url_allow_private)
            return self._fetcher

    def close(self) -> None:
        self.save_index()
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
    ) -> IndexReport:
        """Index folders, CSVs, URL lists, files and URLs; incremental and safe to interrupt.

        With ``objects`` each photo is also indexed as each subject the detector finds.
        """
        sets: list[SourceSet] = [expand(p, label, s3=self.s3 if is_s3(p) else None) for p in paths]
        _ = self.embedder  # a missing model fails here, once, not as one rejection per photo
        if objects:
            _ = self.detector
        return Pipeline(self, on_progress, objects=objects).run(sets, prune=prune)

    def add_bytes(
        self, files: list[tuple[str, bytes]], label: str | None = None, objects: bool = False
    ) -> tuple[IndexReport, list[str]]:
        """Index uploaded photos (name, bytes); originals are kept, since there is no other copy.

        Returns the report and the source string given to each file, in order.
        """
        items = [
            SourceItem(f"upload:{hashlib.sha256(data).hexdigest()}/{Path(name).name or 'photo'}", label, data=data)
            for name, data in files
        ]
        _ = self.embedder
        if objects:
            _ = self.detector
        return Pipeline(self, objects=objects).run([SourceSet(items)]), [i.source for i in items]

    def save_index(self) -> None:
        with self.write_lock:
            for index in (self._vectors, self._object_vectors):
                if index is not None and index.dirty:
                    index.save()

    def delete_images(self, ids: list[int]) -> list[ImageRecord]:
        object_ids = [object_vector_id(o.image_id, o.idx) for i in ids for o in self.catalog.objects(int(i))]
        removed = self.catalog.remove_images(ids)
        if removed:
            self.vectors.remove(np.asarray([r.id for r in removed], dtype=np.int64))
            if object_ids:
                self.object_vectors.remove(np.asarray(object_ids, dtype=np.int64))
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
        match: str | None = None,
        detected_label: str | None = None,
    ) -> SearchResult:
        """Search by photo bytes, a file path or URL, or an indexed image id (more like this).

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
        hits = self.search_vector(vec, k, min_score, label, exclude, match, detected_label)
        return SearchResult(hits, time.perf_counter() - started, info)

    def search_vector(
        self,
        vec: np.ndarray,
        k: int = 10,
        min_score: float | None = None,
        label: str | None = None,
        exclude: int | None = None,
        match: str = "whole",
        detected_label: str | None = None,
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
        reader = self.catalog_reader()
        with self.write_lock:  # one transform and one index generation for the whole search
            return self._ranked(vec, k, min_score, label, exclude, match, detected_label, reader)

    def _ranked(self, vec, k, min_score, label, exclude, match, detected_label, reader) -> list[Hit]:
        original = self.transform(vec[None])[0]
        # query expansion helps "photos like this" (whole photos) but pulls an instance query (a subject,
        # a region) towards whole-photo neighbours: bench/objects.py top-1 0.94 with it, 0.99 without
        expand = self.settings.query_expansion and match == "whole"
        query = self._expand(original) if expand else original
        # ranked by the (expanded) query; reported with the cosine to the photo actually given,
        # so a score keeps meaning "how similar to my photo" (1.0 for the same photo)
        best: dict[int, tuple[float, float, ObjectRecord | None]] = {}
        extra = 1 if exclude is not None else 0

        def scored(index: EmbeddedIndex, ids: np.ndarray, scores: np.ndarray) -> list[tuple[int, float, float]]:
            found = ids != MISSING
            ids, scores = ids[found], scores[found]
            given = scores if query is original else index.vectors(ids) @ original
            return list(zip(ids.tolist(), scores.tolist(), np.asarray(given).tolist(), strict=True))

        # filters run inside the vector backend, on the payload written from the catalog
        where = {"label": label} if label is not None else None
        if match in ("whole", "both"):
            depth = self.settings.rerank_depth if match == "whole" else 0
            with self.write_lock:
                ids, scores = self.vectors.search(query[None], max(k + extra, depth), where=where)
                ranked = scored(self.vectors, ids[0], scores[0])
                if depth and len(ranked) > 1:
                    ranked = self._rerank(query, ranked)
                for i, rank_score, score in ranked:
                    best[i] = (rank_score, score, None)
        if match in ("objects", "both"):
            object_where = dict(where or {}) | ({"detected_label": detected_label} if detected_label else {})
            # several objects of one photo can rank high: ask for more to fill k photos
            with self.write_lock:
                ids, scores = self.object_vectors.search(query[None], 4 * (k + extra), where=object_where or None)
                for vid, rank_score, score in scored(self.object_vectors, ids[0], scores[0]):
                    image_id = split_object_vector_id(vid)[0]
                    if image_id not in best or best[image_id][0] < rank_score:
                        best[image_id] = (rank_score, score, reader.object_record(vid))
        hits = []
        for i, (_, score, obj) in sorted(best.items(), key=lambda kv: -kv[1][0]):
            if i == exclude or (min_score is not None and score < min_score):
                continue
            rec = reader.get(i)
            if rec is None:
                continue
            box, det_label = (obj.box, obj.label) if obj is not None else (None, None)
            hits.append(Hit(i, float(score), rec.label, rec.sources, rec.width, rec.height, rec.sha256, box, det_label))
            if len(hits) == k:
                break
        return hits

    def refresh_payloads(self, image_ids: list[int]) -> int:
        """Rewrite index payloads whose photo label changed in the catalog (a first label given later)."""
        ids = np.asarray(sorted(set(image_ids)), dtype=np.int64)
        if not len(ids):
            return 0
        with self.write_lock:
            truth = self.catalog.payloads_for(ids)
            current = self.vectors.payloads(ids)
            stale = np.asarray([t["photo_id"] for t, c in zip(truth, current, strict=True)
                                if c is not None and c["label"] != t["label"]], dtype=np.int64)  # fmt: skip
            if len(stale):
                self.vectors.add(stale, self.vectors.vectors(stale), self.catalog.payloads_for(stale))
                vids = np.asarray([object_vector_id(o.image_id, o.idx) for i in stale.tolist()
                                   for o in self.catalog.objects(i)], dtype=np.int64)  # fmt: skip
                if len(vids):
                    objects = self.object_vectors
                    objects.add(vids, objects.vectors(vids), self.catalog.object_payloads_for(vids))
        return len(stale)

    def _rerank(self, query: np.ndarray, ranked: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
        """k-reciprocal re-ranking of the candidates; the rank score becomes 1 - blended distance."""
        ids = np.array([i for i, _, _ in ranked], dtype=np.int64)
        s = self.settings
        order, distance = k_reciprocal_order(
            query, self.vectors.vectors(ids), s.rerank_k1, s.rerank_k2, s.rerank_lambda
        )
        return [(ranked[j][0], 1.0 - float(d), ranked[j][2]) for j, d in zip(order, distance, strict=True)]

    def _expand(self, vec: np.ndarray) -> np.ndarray:
        """alpha query expansion over the whole-photo index (unfiltered: neighbours, not results)."""
        n = self.settings.query_expansion
        with self.write_lock:
            ids, scores = self.vectors.search(vec[None], n)
            found = ids[0] != MISSING
            if not found.any():
                return vec
            neighbours = self.vectors.vectors(ids[0][found])
        return expand_query(vec, neighbours, scores[0][found], self.settings.qe_alpha)

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
            "index_dim": vectors.dim,
            "backend": self.vector_backend,
            "whitening": f"learned from {self.whitening.fitted_on} photos" if self.whitening else "off",
            "query_expansion": self.settings.query_expansion,
            "rerank_depth": self.settings.rerank_depth,
            "index": vectors.kind,
            "vectors": len(vectors),
            "disk_bytes": {
                "catalog": self.catalog.disk_bytes(),
                "images": self.images.disk_bytes(),
                "vectors": vectors.disk_bytes(),
            },
        }

    def reindex(self, to: str | None = None) -> dict:
        """Re-learn the whitening and rebuild the vector indexes from the catalog (no re-embedding).

        ``to`` moves the library to another vector backend (embedded, a Milvus URI, elasticsearch+URL):
        the catalog's embeddings fill it, and the library remembers the choice.
        """
        started = time.perf_counter()
        with self.write_lock:
            if to is not None:
                self.catalog.set_meta("vector_backend", to)
                self.vector_backend = to
            self.maybe_refit(force=True)
            for name in ("vectors", "object_vectors"):
                shutil.rmtree(self.home / name, ignore_errors=True)
            for index in (self._vectors, self._object_vectors):
                if index is not None and hasattr(index, "drop"):
                    index.drop()  # a server-side index is rebuilt too, not only synced
            self._vectors = self._object_vectors = None
            vectors = self.vectors
            vectors.save()
            self.object_vectors.save()
        w = self.whitening
        return {
            "vectors": len(vectors),
            "index": vectors.kind,
            "backend": self.vector_backend,
            "dim": vectors.dim,
            "whitening": f"{self.spec.dim} -> {w.dim}" if w else "off",
            "seconds": round(time.perf_counter() - started, 3),
        }
