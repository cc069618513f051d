"""What the catalog hands out and takes in: plain frozen records, no database handles."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from lookalike.fields import FieldValue

OBJECT_BITS = 10  # object vector id = image_id << 10 | idx: stable across re-runs, up to 1023 objects a photo

# change-feed flags: which of a photo's vectors a change concerns
PHOTO = 1  # the whole-photo vector or its payload (added, removed, relabelled)
OBJECTS = 2  # its detected subjects' vectors
SOURCES = 4  # only the paths and URLs that point at it (no vector changes: caches of records follow it)
COPY = 8  # only its copy descriptor (written later by a backfill); PHOTO changes concern the copy collection too


def object_vector_id(image_id: int, idx: int) -> int:
    return (image_id << OBJECT_BITS) | idx


def split_object_vector_id(vector_id: int) -> tuple[int, int]:
    return vector_id >> OBJECT_BITS, vector_id & ((1 << OBJECT_BITS) - 1)


class SourceState(NamedTuple):
    """What the catalog recorded of a source when it was last indexed: an unchanged file is not read again."""

    image_id: int
    size: int | None
    mtime_ns: int | None
    label: str | None
    fields: str | None = None  # the source's fields as the catalog keeps them (lookalike.fields.dumps)


class StoredTransform(NamedTuple):
    """A transform (whitening, or the identity) as the catalog keeps it, versioned."""

    kind: str
    dim: int
    fitted_on: int
    data: bytes


@dataclass(frozen=True)
class ObjectRecord:
    image_id: int
    idx: int
    box: tuple[float, float, float, float]
    label: str
    score: float


@dataclass(frozen=True)
class ImageRecord:
    id: int
    sha256: str
    label: str | None
    width: int
    height: int
    format: str
    bytes: int
    added_at: float
    has_original: bool
    sources: tuple[str, ...] = ()
    fields: Mapping[str, FieldValue] = field(default_factory=dict)  # the user's record (lookalike.fields)


@dataclass(frozen=True)
class NewImage:
    """An image ready to be written: decoded, embedded, thumbnailed."""

    sha256: str
    source: str
    label: str | None
    width: int
    height: int
    format: str
    bytes: int
    size: int | None
    mtime_ns: int | None
    embedding: np.ndarray | None  # None when the bytes are already in the catalog
    has_original: bool = False
    copy_vector: np.ndarray | None = None  # the copy descriptor (lookalike.models.copy_descriptor), when on
    part_vector: np.ndarray | None = None  # that of the photo's centre (copy_descriptor.CENTRE)
    fields: Mapping[str, FieldValue] | None = None  # what this source says of the photo's record (None: nothing)
    video: str | None = None  # a video's frame: the sha256 of the video file
    t: float = 0.0  # ... and the frame's second


class VideoState(NamedTuple):
    """What the catalog recorded of a video file once all its frames were written: an unchanged one is skipped."""

    sha256: str
    size: int | None
    mtime_ns: int | None
    frames: int
    interval: float  # LOOKALIKE_VIDEO_INTERVAL its frames were chosen with


@dataclass(frozen=True)
class NewVideo:
    """A video file whose chosen frames are all written (``Catalog.finish_video``)."""

    source: str
    sha256: str
    size: int | None
    mtime_ns: int | None
    duration: float
    width: int
    height: int
    frames: tuple[str, ...]  # the sources of its frames (video#t=second)
    interval: float = 10.0  # LOOKALIKE_VIDEO_INTERVAL they were chosen with


@dataclass
class BatchResult:
    """What ``add_batch`` did: (item, image id, new?) per written item, and the images some source
    pointed at before it was re-pointed (candidates for removal when nothing points at them now)."""

    rows: list[tuple[NewImage, int, bool]] = field(default_factory=list)
    displaced: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Vectors:
    """Vectors read from the catalog for an index: ids, a (n, dim) matrix, and one payload each."""

    ids: np.ndarray
    matrix: np.ndarray
    payloads: list[dict]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Change:
    seq: int
    image_id: int
    flags: int
