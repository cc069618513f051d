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
    home = eval_home(directory, settings)
    if fresh and home.exists():
        import shutil

        shutil.rmtree(home)
    # never the user's library: a folder of its own, and with a shared database a schema of its own
    update: dict = {"home": home}
    if settings.database_url is not None:
        update["database_schema"] = "lookalike_" + home.name.replace("-", "_").replace(".", "_").lower()[:50]
    lib_settings = settings.model_copy(update=update)
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
        precisions: list[float] = []
        aps: list[float] = []
        top1: list[float] = []
        recalls: list[float] = []
        ceilings: list[float] = []
        scores = (precisions, aps, top1, recalls, ceilings)
        seconds = 0.0
        unlabelled = 0  # photos that cannot be queries (no label: nothing counts as relevant to them)
        if split:
            every = list(walk_folder(test))
            queries = [q for q in every if q.label in gallery]
            unlabelled = len(every) - len(queries)
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
                    continue  # an unreadable query photo is not a retrieval failure; counted below
                seconds += time.perf_counter() - started
                assert q.label is not None  # the queries are the labelled photos
                _score([h.label == q.label for h in hits], gallery[q.label], k, *scores)
                if on_progress:
                    on_progress("querying", n, len(queries))
            n_queries = len(queries)
        else:
            ids = lib.catalog.ids()
            for n, image_id in enumerate(ids.tolist(), 1):
                rec = lib.catalog.get(image_id)
                if rec is None or rec.label is None:
                    unlabelled += 1
                    continue
                started = time.perf_counter()
                # "more like this" from the stored photo: the whole default search, copy check included
                hits = lib.search(image_id, k=k, match=match).hits
                seconds += time.perf_counter() - started
                _score([h.label == rec.label for h in hits], gallery[rec.label] - 1, k, *scores)
                if on_progress:
                    on_progress("querying", n, len(ids))
            n_queries = len(ids) - unlabelled
        answered = len(precisions)
        return {
            "dataset": str(directory),
            "mode": "train/test" if split else "leave-one-out",
            "model": lib.model_name,
            "k": k,
            "indexed": lib.catalog.count(),
            "rejected": len(report.rejected),
            "queries": n_queries,  # labelled photos; "answered" leaves out the unreadable ones
            "answered": answered,
            "unlabelled": unlabelled,
            f"precision@{k}": float(np.mean(precisions)) if answered else 0.0,
            f"mAP@{k}": float(np.mean(aps)) if answered else 0.0,
            "top1": float(np.mean(top1)) if answered else 0.0,
            # relevant found in the top k / all relevant: no ceiling when a group has fewer than k photos
            f"recall@{k}": float(np.mean(recalls)) if answered else 0.0,
            # the best precision@k possible: below 1 when groups hold fewer than k other photos (DVD covers: 0.4)
            f"precision@{k}_ceiling": float(np.mean(ceilings)) if answered else 0.0,
            "queries_per_second": answered / seconds if seconds > 0 else 0.0,
            # what a query's time covers: train/test decodes and embeds the query photo; leave-one-out searches
            # from its stored vector, so its queries/s is the search alone
            "query_timing": "decode + embed + search" if split else "search only (stored vector)",
            "query_embeds_photo": split,
            "match": match,
            "query": query,
            "objects_indexed": lib.catalog.counts()["objects"],
            "photos_with_objects": lib.catalog.counts()["photos_with_objects"],
            "library": str(home),
            "catalog": lib.catalog.dialect,
        }


def _score(
    relevant: list[bool], n_relevant: int, k: int, precisions: list, aps: list, top1: list, recalls: list,
    ceilings: list,
) -> None:  # fmt: skip
    if n_relevant <= 0:
        return
    precisions.append(sum(relevant[:k]) / k)
    aps.append(average_precision_at_k(relevant, n_relevant, k))
    top1.append(1.0 if relevant and relevant[0] else 0.0)
    recalls.append(sum(relevant[:k]) / n_relevant)
    ceilings.append(min(n_relevant, k) / k)
