"""The catalog, a library's source of truth: SQLite by default, PostgreSQL when processes share it."""

from __future__ import annotations

from lookalike.store.catalog.database import Database, DatabaseError
from lookalike.store.catalog.records import (
    COPY,
    OBJECT_BITS,
    OBJECTS,
    PHOTO,
    SOURCES,
    BatchResult,
    Change,
    ImageRecord,
    NewImage,
    NewVideo,
    ObjectRecord,
    SourceState,
    StoredTransform,
    Vectors,
    VideoState,
    object_vector_id,
    split_object_vector_id,
)
from lookalike.store.catalog.sql import Catalog

__all__ = [
    "COPY", "OBJECT_BITS", "OBJECTS", "PHOTO", "SOURCES", "BatchResult", "Catalog", "Change", "Database",
    "DatabaseError", "ImageRecord", "NewImage", "NewVideo", "ObjectRecord", "SourceState", "StoredTransform", "Vectors",
    "VideoState",
    "object_vector_id", "split_object_vector_id",
]  # fmt: skip
