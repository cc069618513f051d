"""Retrieval quality on labelled photos: precision@k, mAP@k, top-1 and queries/s.

Two layouts: ``DIR/train`` + ``DIR/test`` (index train, query with each test
photo; the Towhee tutorial layout) or one labelled folder (leave-one-out: every
photo queries all the others). A result is relevant when its label (the parent
folder name) equals the query's. AP@k is divided by min(k, number of relevant),
so a perfect ranking scores 1.0 whatever the class size.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.config import Settings
from lookalike.ingest.fetch import FetchError
from lookalike.ingest.sources import walk_folder
from lookalike.library import Library, LibraryError
from lookalike.models.embedder import Embedder

StageProgress = Callable[[str, int, int], None]


def average_precision_at_k(relevant: list[bool], n_relevant: int, k: int) -> float:
    """AP@k with the min(k, n_relevant) normaliser."""
    if n_relevant <= 0:
        return 0.0
    hits, total = 0, 0.0
    for rank, rel in enumerate(relevant[:k], 1):
        if rel:
            hits += 1
            total += hits / rank
    return total / min(k, n_relevant)


def eval_home(directory: Path, settings: Settings) -> Path:
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:10]
    return settings.home / "eval" / f"{directory.resolve().name}-{digest}-{settings.model}"


@dataclass
class _Scores:
    """Each answered query's numbers (a query with no other relevant photo is not scored), and the time spent."""

    precisions: list[float] = field(default_factory=list)
    aps: list[float] = field(default_factory=list)
    top1: list[float] = field(default_factory=list)
    recalls: list[float] = field(default_factory=list)
    ceilings: list[float] = field(default_factory=list)
    seconds: float = 0.0
    queries: int = 0  # labelled photos; "answered" leaves out the unreadable ones
    unlabelled: int = 0  # photos that cannot be queries (no label: nothing counts as relevant to them)

    def add(self, relevant: list[bool], n_relevant: int, k: int) -> None:
        if n_relevant <= 0:
            return
        self.precisions.append(sum(relevant[:k]) / k)
        self.aps.append(average_precision_at_k(relevant, n_relevant, k))
        self.top1.append(1.0 if relevant and relevant[0] else 0.0)
        self.recalls.append(sum(relevant[:k]) / n_relevant)
        self.ceilings.append(min(n_relevant, k) / k)

    @property
    def answered(self) -> int:
        return len(self.precisions)

    def mean(self, values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0


def _eval_settings(directory: Path, settings: Settings, fresh: bool) -> Settings:
    """The settings of the evaluation's own library: never the user's, a folder of its own (emptied first when
    ``fresh``) holding its files too (never the user's bucket), and with a shared database a schema of its own."""
    home = eval_home(directory, settings)
    if fresh and home.exists():
        import shutil

        shutil.rmtree(home)
    update: dict = {"home": home, "image_store": "local"}
    if settings.database_url is not None:
        update["database_schema"] = "lookalike_" + home.name.replace("-", "_").replace(".", "_").lower()[:50]
    return settings.model_copy(update=update)


def _query_test_photos(lib: Library, test: Path, gallery: dict[str, int], k: int, match: str, query: str,
                       scores: _Scores, on_progress: StageProgress | None) -> None:  # fmt: skip
    """Each labelled photo of ``test`` searched for (by its best subject when ``query`` is "object"), timed with
    its decoding and embedding; an unreadable one is left unanswered, not counted as a retrieval failure."""
    every = list(walk_folder(test, own=lib.home))
    queries = [q for q in every if q.label in gallery]
    scores.queries, scores.unlabelled = len(queries), len(every) - len(queries)
    for n, q in enumerate(queries, 1):
        started = time.perf_counter()
        try:
            hits = None
            if query == "object":
                groups = lib.search_objects(q.source, k=k, match=match)
                hits = groups[0][1] if groups else None
            if hits is None:
                hits = lib.search(q.source, k=k, match=match).hits
        except (LibraryError, FetchError, ValueError):
            continue
        scores.seconds += time.perf_counter() - started
        assert q.label is not None  # the queries are the labelled photos
        scores.add([h.label == q.label for h in hits], gallery[q.label], k)
        if on_progress:
            on_progress("querying", n, len(queries))


def _query_each_stored(lib: Library, gallery: dict[str, int], k: int, match: str, scores: _Scores,
                       on_progress: StageProgress | None) -> None:  # fmt: skip
    """Leave-one-out: "more like this" from each stored photo, the whole default search (copy check included)
    from its stored vector; the photo itself is not relevant to itself."""
    ids = lib.catalog.ids()
    for n, image_id in enumerate(ids.tolist(), 1):
        rec = lib.catalog.get(image_id)
        if rec is None or rec.label is None:
            scores.unlabelled += 1
            continue
        started = time.perf_counter()
        hits = lib.search(image_id, k=k, match=match).hits
        scores.seconds += time.perf_counter() - started
        scores.add([h.label == rec.label for h in hits], gallery[rec.label] - 1, k)
        if on_progress:
            on_progress("querying", n, len(ids))
    scores.queries = len(ids) - scores.unlabelled


def evaluate(
    directory: Path,
    settings: Settings,
    k: int = 10,
    fresh: bool = False,
    on_progress: StageProgress | None = None,
    embedder: Embedder | None = None,
    objects: bool = False,
    match: str = "whole",
    query: str = "whole",
) -> dict:
    """Index (incrementally) and query; ``objects`` also indexes detected subjects, ``match`` picks the
    entries queries are compared with (whole, objects, both) and ``query`` whether a query photo is
    used whole or by its best detected subject (falling back to whole when none is found)."""
    directory = directory.expanduser()
    if not directory.is_dir():
        raise LibraryError(f"{directory}: not a folder")
    train, test = directory / "train", directory / "test"
    split = train.is_dir() and test.is_dir()
    lib_settings = _eval_settings(directory, settings, fresh)
    with Library(lib_settings, embedder=embedder) as lib:
        report = lib.index(
            [str(train if split else directory)],
            prune=True,
            on_progress=(lambda d, t, _r: on_progress("indexing", d, t)) if on_progress else None,
            objects=objects or match != "whole" or query != "whole",
        )
        gallery = lib.catalog.labels()
        if not gallery:
            raise LibraryError(f"{directory}: no labelled photos indexed (labels come from folder names)")
        _ = lib.vectors  # load before timing queries
        s = _Scores()
        if split:
            _query_test_photos(lib, test, gallery, k, match, query, s, on_progress)
        else:
            _query_each_stored(lib, gallery, k, match, s, on_progress)
        counts = lib.catalog.counts()
        return {
            "dataset": str(directory),
            "mode": "train/test" if split else "leave-one-out",
            "model": lib.model_name,
            "k": k,
            "indexed": lib.catalog.count(),
            "rejected": len(report.rejected),
            "queries": s.queries,
            "answered": s.answered,
            "unlabelled": s.unlabelled,
            f"precision@{k}": s.mean(s.precisions),
            f"mAP@{k}": s.mean(s.aps),
            "top1": s.mean(s.top1),
            # relevant found in the top k / all relevant: no ceiling when a group has fewer than k photos
            f"recall@{k}": s.mean(s.recalls),
            # the best precision@k possible: below 1 when groups hold fewer than k other photos (DVD covers: 0.4)
            f"precision@{k}_ceiling": s.mean(s.ceilings),
            "queries_per_second": s.answered / s.seconds if s.seconds > 0 else 0.0,
            # what a query's time covers: train/test decodes and embeds the query photo; leave-one-out searches
            # from its stored vector, so its queries/s is the search alone
            "query_timing": "decode + embed + search" if split else "search only (stored vector)",
            "query_embeds_photo": split,
            "match": match,
            "query": query,
            "objects_indexed": counts["objects"],
            "photos_with_objects": counts["photos_with_objects"],
            "library": str(lib_settings.home),
            "catalog": lib.catalog.dialect,
        }
