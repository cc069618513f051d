"""Searching a library: a query photo (bytes, a file, a URL or an indexed photo) or a text in, ranked hits out.

A photo search embeds the query with the similarity model and ranks the active space (lookalike.search.ranking);
beside it, the copy descriptor of the query (and of its regional views) finds copy candidates in the copy
collections, and the global search's first hits and those candidates are judged for being the same picture or the
same object (lookalike.search.verification): copies first, then photos of the same object, then the rest. Every
part it reads is given to it (the models, the spaces, the catalog's records, the image store, the reader), so it
holds nothing of its own beyond a few helper threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike import filters
from lookalike.config import Settings
from lookalike.errors import LibraryError, NotFoundError, TextSearchError
from lookalike.filters import Filter
from lookalike.imaging import BadImage, Decoded
from lookalike.ingest.fetch import FetchError
from lookalike.ingest.reading import Reader
from lookalike.models.detectors import Detection
from lookalike.models.embedder import TextEmbedder
from lookalike.models.loaded import Models, crop_box
from lookalike.search import copies, feature_files, ranking, verification
from lookalike.search.results import Box, Hit, SearchResult, by_video
from lookalike.spaces import Spaces
from lookalike.store.catalog import Catalog, ImageRecord
from lookalike.store.catalog.cache import RecordCache
from lookalike.store.images import ImageStore
from lookalike.store.vectors import MISSING, present_vectors

MATCHES = ranking.MATCHES


@dataclass(frozen=True)
class SearchRequest:
    """What a photo search asks besides the photo: see ``Searcher.search``."""

    k: int = 10
    min_score: float | None = None
    label: str | None = None
    box: Box | None = None
    match: str | None = None
    detected_label: str | None = None
    copies_only: bool = False
    hide_copies: bool = False
    where: Filter | None = None  # on the photos' fields (lookalike.filters), run inside the engine


def _given(picture: Image.Image) -> Callable[[], Image.Image | None]:
    return lambda: picture


class Searcher:
    """Searches one library. ``follows_index``: this process keeps the index current (not a worker), so the copy
    check of new photos (``copy_of``) can use it."""

    def __init__(self, settings: Settings, models: Models, spaces: Spaces, catalog: Catalog, records: RecordCache,
                 images: ImageStore, reader: Reader, follows_index: bool = True) -> None:  # fmt: skip
        self.settings, self.models, self.spaces = settings, models, spaces
        self.catalog, self.records, self.images, self.reader = catalog, records, images, reader
        self.follows_index = follows_index
        self._lock = threading.Lock()
        self._side: ThreadPoolExecutor | None = None

    # --- records ---------------------------------------------------------------------
    def get(self, image_id: int) -> ImageRecord:
        rec = self.catalog.get(image_id)
        if rec is None:
            raise NotFoundError(f"no image with id {image_id}")
        return rec

    def original_bytes(self, image_id: int) -> bytes:
        """The photo's bytes: the kept original, else the first source file still holding the same bytes."""
        return self.reader.original_bytes(self.get(image_id))

    # --- photo search ----------------------------------------------------------------
    def search(self, query: str | Path | bytes | int, request: SearchRequest) -> SearchResult:
        """Search by photo bytes, a file path or URL, or an indexed image id (more like this).

        The top hits are checked for being the same picture as the query (an edited copy): copies come
        first, each with its verdict and matched region; ``copies_only`` returns only them.

        ``box`` restricts the query to a region of the photo (x1, y1, x2, y2 in original pixels).
        ``match`` None (auto) compares whole photos, except for a region query on a library with
        indexed subjects, where subjects compete too: bench/objects.py finds the source photo of a
        cropped subject top-1 in 99 % of cases that way against 75 % with whole photos only, while on
        whole-photo queries whole photos alone rank best (eval, bench/RESULTS.md).
        """
        r = request
        box = r.box
        match = r.match
        if match is None:
            match = "both" if box is not None and len(self.spaces.space.objects) else "whole"
        if r.k < 1:
            raise LibraryError("k must be at least 1")
        started = time.perf_counter()
        exclude: int | None = None
        cropped_from = query if isinstance(query, int) and box is not None else None
        if cropped_from is not None:  # a region of an indexed photo: searched as a photo, reported as that id
            query = self.original_bytes(cropped_from)
        depth = self.settings.copy_candidates if match != "objects" and r.detected_label is None else 0
        copy_queries: list[tuple[verification.CopyQuery, Box | None]] = []
        if isinstance(query, int):
            vec = self.catalog.embedding(query)
            if vec is None:
                raise NotFoundError(f"no image with id {query}")
            info: dict[str, Any] = {"image_id": query}
            exclude = query
            if depth:
                copy_queries.append((self._stored_copy_query(query), None))
        else:
            if isinstance(query, bytes):
                data, info = query, ({"source": "upload"} if cropped_from is None else {"image_id": cropped_from})
            else:
                try:
                    data = self.reader.read_query(query)
                except FetchError as exc:
                    raise LibraryError(f"{query}: {exc}") from None
                info = {"source": str(query)}
            with self.reader.decoding():
                decoded = self.models.decode(data, box=box)
                vec = self._embed_query(decoded, box, depth, copy_queries)
            info |= {"width": decoded.width, "height": decoded.height}
            if box is not None:
                info["box"] = list(box)
        want = 2 * r.k if r.hide_copies else r.k  # spares for the copies left out
        hits = self.search_vector(vec, max(want, depth) if depth else want, r.min_score, r.label, exclude, match,
                                  r.detected_label, where=r.where)  # fmt: skip
        if copy_queries:
            hits = self._copies_first(hits, copy_queries, vec, depth, r, exclude)
        if r.copies_only:
            hits = [h for h in hits if h.copy]
        if r.hide_copies:
            hits = self._one_per_picture(hits)
        return SearchResult(by_video(hits)[: r.k], time.perf_counter() - started, info)

    def _embed_query(self, decoded: Decoded, box: Box | None, depth: int,
                     copy_queries: list[tuple[verification.CopyQuery, Box | None]]) -> np.ndarray:  # fmt: skip
        """The query's similarity vector; its copy queries appended to ``copy_queries`` when ``depth``."""
        picture = crop_box(decoded, box) if box is not None else decoded.image
        # the copy descriptor runs in a helper thread while the similarity model embeds the photo: both
        # release the GIL (bench/copies.py: latency)
        # a region is judged as itself and with its whole photo (see _copies_first)
        model = self.models.copy_model if depth else None
        shown = [(picture, None)] + ([(decoded.image, box)] if box is not None else [])
        # without views the whole photo's descriptor alone (one pass, not the centre's too)
        describe = (model.describe_views if self.settings.copy_views else model.describe) if model else None
        described = [self._side_work().submit(describe, p) for p, _ in shown] if describe else []
        vec = self.models.embed(picture)
        for (image, region), future in zip(shown, described, strict=False):
            views = np.atleast_2d(future.result())
            parts = views[1:] if len(views) > 1 else None
            w, h = ((box[2] - box[0], box[3] - box[1]) if region is None and box is not None
                    else (decoded.width, decoded.height))  # fmt: skip
            copy_queries.append((verification.CopyQuery(views[0], _given(image), int(w), int(h),
                                                        views=parts), region))  # fmt: skip
        return vec

    def _one_per_picture(self, hits: list[Hit]) -> list[Hit]:
        """The hits with the copies of a better hit's picture left out, so a library holding a photo several times
        (resized, recompressed, captioned) shows it once: of the query's own copies (verified by the copy stage) the
        first; of the other hits, those whose copy descriptor is a copy's of a better one (cosine >= COPY_SURE,
        where the descriptor alone calls a copy). Photos without a copy descriptor are kept."""
        collection = self.spaces.space.copies
        ids = np.asarray([h.id for h in hits], np.int64)
        held, matrix = present_vectors(collection, ids)
        vectors = dict(zip(held.tolist(), matrix, strict=True))
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
                with self.reader.decoding():
                    return self.models.decode(self.reader.original_bytes(rec)).image
            except (NotFoundError, BadImage):
                return verification.thumbnail_picture(self.images.get("thumbnail", rec.sha256))

        vector = found.matrix[0] if len(found) else None
        return verification.CopyQuery(vector, picture, rec.width, rec.height, views=self._stored_views(rec, vector))

    def _stored_views(self, rec: ImageRecord, vector: np.ndarray | None) -> np.ndarray | None:
        """The descriptors of an indexed photo's parts, for candidates: from its thumbnail (one small decode and
        two passes of the copy model, the whole and the centre; its original is read only if geometry needs it)."""
        model = self.models.copy_model
        if vector is None or model is None or not self.settings.copy_views:
            return None
        picture = verification.thumbnail_picture(self.images.get("thumbnail", rec.sha256))
        if picture is None:
            return None
        views = model.describe_views(picture)
        return views[1:] if len(views) > 1 else None

    def _copies_first(self, hits: list[Hit], queries: list[tuple[verification.CopyQuery, Box | None]],
                      vec: np.ndarray, depth: int, request: SearchRequest,
                      exclude: int | None) -> list[Hit]:  # fmt: skip
        """The copy collection's nearest photos and the global search's first hits judged (search.verification):
        copies first, then photos of the same object, then the rest of the global search's hits. A region query
        is judged twice: as the crop (a photo shown inside a collage or a screenshot) and with its whole photo
        where the box lies (a small region of a copy: verification.within_region); the crop's verdict stands
        unless only the whole photo's found a copy."""
        verdicts: dict[int, copies.Verdict] = {}
        extra: dict[int, Hit] = {}
        for query, region in queries:
            found, judged = self._judged(hits, query, vec, depth, request, exclude)
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
                request: SearchRequest,
                exclude: int | None) -> tuple[list[Hit], dict[int, copies.Verdict]]:  # fmt: skip
        """One copy query's candidates beyond the global search's hits, and the verdicts on them and on the global
        search's first hits."""
        space = self.spaces.space
        cosines: dict[int, float] = {}
        reach: dict[int, float] = {}  # the best cosine of any view of the query (the whole photo or a part)
        top = hits[: verification.GLOBAL_CANDIDATES]
        if query.vector is not None:
            where = ranking.engine_where(request.label, request.where)
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
            held, matrix = present_vectors(space.copies, first)
            if len(held):
                cosines |= dict(zip(held.tolist(), (matrix @ query.vector).tolist(), strict=True))
        known = {h.id for h in top}
        best = sorted((i for i in reach if i not in known), key=lambda i: -reach[i])[:depth]
        floor = verification.CHECK_FLOOR
        if query.views is not None:  # lower when geometry will run anyway: those candidates are checked too (judge)
            reached = [h.id for h in top] + [i for i in best
                                             if verification.reaches(i, cosines, reach, verification.VIEW_FLOOR)]
            floor = verification.view_floor(reached, cosines, reach)
        wanted = [i for i in best if verification.reaches(i, cosines, reach, floor)]
        extra = self._candidate_hits(wanted, hits, vec, request)
        verdicts = verification.judge(query, top + extra, cosines, self._features_of,
                                      reach=reach if query.views is not None else None)  # fmt: skip
        return extra, verdicts

    def _candidate_hits(self, candidates: list[int], hits: list[Hit], vec: np.ndarray,
                        request: SearchRequest) -> list[Hit]:  # fmt: skip
        """Hits for the copy collection's candidates, with the search's filters applied; those the global search
        returned keep their hit. Their similarity is read from the index the global search used: a photo newer
        than it is skipped (the global search could not have found it either)."""
        known = {h.id: h for h in hits}
        label, min_score, where = request.label, request.min_score, request.where
        wanted = [i for i in candidates if i not in known]
        records = self.records.get_many(wanted) if wanted else {}
        space = self.spaces.space
        ids = np.asarray([i for i in wanted if i in records], np.int64)
        present, matrix = present_vectors(space.photos, ids)
        cosine = matrix @ space.apply_transform(vec[None])[0] if len(present) else []
        similarity = dict(zip(present.tolist(), np.asarray(cosine, np.float64).tolist(), strict=True))
        out = []
        for i in candidates:
            if i in known:
                out.append(known[i])
            elif i in similarity and (label is None or records[i].label == label) and (
                min_score is None or similarity[i] >= min_score
            ) and (where is None or filters.matches(where, records[i].fields)):
                rec = records[i]
                out.append(Hit(i, similarity[i], rec.label, rec.sources, rec.width, rec.height, rec.sha256,
                               similarity=similarity[i], fields=rec.fields))  # fmt: skip
        return out

    def copy_of(self, query: verification.CopyQuery) -> tuple[int, float] | None:
        """The indexed photo a new photo is an (edited) copy of: its nearest one in the copy collection, judged like
        a search's candidate (geometry only where the descriptor cannot decide: rare while indexing, bench/ingest.py);
        None when none is, or when this process keeps no index (a worker)."""
        space = self.spaces.opened
        if query.vector is None or not self.follows_index or space is None or not len(space.copies):
            return None
        ids, scores = space.copies.search(query.vector[None], 1)
        if ids[0, 0] == MISSING or scores[0, 0] < verification.CHECK_FLOOR:
            return None
        found = int(ids[0, 0])
        rec = self.records.get_many([found]).get(found)
        if rec is None:
            return None
        hit = Hit(found, 0.0, rec.label, rec.sources, rec.width, rec.height, rec.sha256)
        verdict = verification.judge(query, [hit], {found: float(scores[0, 0])}, self._features_of, regions=False)
        judged = verdict.get(found)
        return (found, judged.confidence) if judged is not None and judged.copy else None

    def _side_work(self) -> ThreadPoolExecutor:
        """Threads for work a search does beside the similarity model (the query's copy descriptor)."""
        with self._lock:
            if self._side is None:
                self._side = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lookalike-search")
            return self._side

    def _features_of(self, hit: Hit) -> copies.Features | None:
        return feature_files.candidate_features(self.images, hit.sha256, hit.width, hit.height,
                                                self.settings.keep_features)  # fmt: skip

    # --- other searches --------------------------------------------------------------
    def search_text(
        self, text: str, k: int = 10, min_score: float | None = None, label: str | None = None,
        where: Filter | None = None,
    ) -> SearchResult:
        """Photos that match a description, with a CLIP-style model (photos and text in one space)."""
        spec = self.models.spec
        if not spec.text:
            raise TextSearchError(
                f"this library's model {spec.name!r} embeds photos only, so it cannot be searched by text. "
                "Text search needs a CLIP-style model folder (visual + textual ONNX and a tokenizer, in immich's "
                "layout) in the models directory: `lookalike models` shows which can (column 'text'), and a "
                "library indexed with one (--model NAME, into a new --home) answers text searches"
            )
        if k < 1:
            raise LibraryError("k must be at least 1")
        started = time.perf_counter()
        embedder = self.models.embedder
        assert isinstance(embedder, TextEmbedder)  # spec.text: the model embeds text
        try:
            vec = embedder.embed_text([text])[0]
        except ValueError as exc:
            raise LibraryError(str(exc)) from None
        hits = self.search_vector(vec, k, min_score, label, plain=True, where=where)
        return SearchResult(by_video(hits), time.perf_counter() - started, {"text": text})

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
        where: Filter | None = None,
    ) -> list[Hit]:
        """Nearest photos to ``vec``, one hit per photo (``where``: only photos whose fields pass it).

        ``match`` says which entries compete: whole photos, detected objects, or both (the best
        entry of a photo wins and its box is reported). ``detected_label`` keeps only photos with
        a detected object of that COCO label, matched through that object.
        """
        if match not in MATCHES:
            raise LibraryError(f"match must be one of {', '.join(MATCHES)}")
        if detected_label is not None:
            match = "objects"
        space = self.spaces.fresh()  # one transform and one pair of collections for the whole search
        request = ranking.RankRequest(k, min_score, label, exclude, match, detected_label, plain, where)
        return ranking.rank(space, self.catalog, self.records, self.settings, vec, request)

    def detect(self, query: str | Path | bytes) -> tuple[list[Detection], Decoded]:
        """Detected subjects of a photo (boxes in its own pixels)."""
        data = query if isinstance(query, bytes) else self.reader.read_query(query)
        with self.reader.decoding():
            decoded = self.models.decode_for_detector(data)
            return self.models.detect_decoded(decoded), decoded

    def search_objects(
        self,
        query: str | Path | bytes,
        k: int = 10,
        min_score: float | None = None,
        label: str | None = None,
        match: str = "both",
        where: Filter | None = None,
    ) -> list[tuple[Detection, list[Hit]]]:
        """Detect the subjects of the query photo and search with each: [(detection, hits), ...]."""
        data = query if isinstance(query, bytes) else self.reader.read_query(query)
        with self.reader.decoding():
            decoded = self.models.decode(data)
            detections = self.models.detect_decoded(decoded)
            vectors = self.models.embed_objects(decoded, detections)
        return [
            (det, self.search_vector(vec, k, min_score, label, match=match, where=where))
            for det, vec in zip(detections, vectors, strict=True)
        ]

    def close(self) -> None:
        if self._side is not None:
            self._side.shutdown(wait=True)
