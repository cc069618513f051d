"""What the library holds: its stats, its labels, and the photos it holds more than once."""

from typing import Annotated

from fastapi import APIRouter, Query

from lookalike.api import API
from lookalike.api.deps import READ, Lib, Service
from lookalike.api.schemas import DuplicatesOut, StatsOut, original_url, thumbnail_url
from lookalike.api.security import public_stats
from lookalike.errors import BusyError

router = APIRouter(prefix=API)


@router.get("/stats", dependencies=READ, summary="What the library holds", response_model=StatsOut)
def stats(lib: Lib) -> StatsOut:
    return StatsOut.model_validate(public_stats(lib.stats()))


@router.get("/duplicates", dependencies=READ, response_model=DuplicatesOut,
            summary="Groups of photos that are the same picture (the largest first: the one to keep)")  # fmt: skip
def duplicates(
    lib: Lib, state: Service, min_confidence: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0
) -> DuplicatesOut:
    # a whole-library pass: a second caller waits for nothing, it retries
    if not state.duplicates_lock.acquire(blocking=False):
        raise BusyError("a duplicates report is being computed; retry in a moment")
    try:
        found = lib.duplicates(min_confidence)
    finally:
        state.duplicates_lock.release()
    for row in found["groups"]:
        for photo in row["photos"]:
            photo["thumbnail_url"] = thumbnail_url(photo["id"])
            photo["original_url"] = original_url(photo["id"])
    return DuplicatesOut.model_validate(found)


@router.get("/fields", dependencies=READ, summary="The photos' fields: kinds, counts, ranges and few values")
def fields(lib: Lib) -> list[dict]:
    """What a filter bar offers: each field's kinds with how many photos hold them, the range of its numbers,
    and its strings with their counts when there are at most 20."""
    return [f.as_dict() for f in lib.catalog.field_summary()]


@router.get("/labels", dependencies=READ, summary="Labels with photo counts", response_model=dict[str, int])
def labels(lib: Lib) -> dict[str, int]:
    return lib.catalog.labels()
