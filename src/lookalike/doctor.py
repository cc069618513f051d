"""``lookalike doctor``: compare the catalog with the vector engine and the image store, and repair.

The catalog is the truth. A vector whose photo the catalog no longer holds is removed (photo ids are
never reused and deletions are applied from the change feed, so such a vector is debris or a
resurrection, never a photo); a photo without its vector gets it from the catalog's stored embedding; a
payload that disagrees with the catalog is rewritten; a missing thumbnail is made again from the photo
when its bytes can still be read; a photo no source points at any more is removed (``Library.repair``), and so is
a thumbnail or features file no photo has (``unused_files``). Nothing is changed without ``--fix``, and opening a
library never does any of this: only this explicit command repairs wholesale.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lookalike.imaging import decode, thumbnail_jpeg
from lookalike.ingest.reading import Reader
from lookalike.spaces import Spaces
from lookalike.store.catalog import OBJECT_BITS, Catalog
from lookalike.store.images import ImageStore, Kind
from lookalike.store.vectors import VectorIndex

CHUNK = 4096
# a file no photo has counts as unused once written this long ago (seconds): an index run writes a batch's
# thumbnails a moment before the batch's commit, which a run still going always reaches well within it
UNUSED_AFTER = 3600.0
PAYLOAD_KEYS = ("photo_id", "object", "label", "detected_label")
log = logging.getLogger("lookalike")


@dataclass
class Findings:
    photos_missing: list[int] = field(default_factory=list)  # in the catalog, not in the engine
    photos_extra: list[int] = field(default_factory=list)  # in the engine, not in the catalog
    photos_payload: list[int] = field(default_factory=list)  # payload differs from the catalog
    objects_missing: list[int] = field(default_factory=list)  # subject vector ids
    objects_extra: list[int] = field(default_factory=list)
    objects_payload: list[int] = field(default_factory=list)
    copies_missing: list[int] = field(default_factory=list)  # copy descriptors (image ids) not in the copy collection
    copies_extra: list[int] = field(default_factory=list)
    copies_payload: list[int] = field(default_factory=list)
    parts_missing: list[int] = field(default_factory=list)  # the photos' centres' descriptors (the parts collection)
    parts_extra: list[int] = field(default_factory=list)
    parts_payload: list[int] = field(default_factory=list)
    # photos no file, URL or upload points at: the old version of a changed file, left by a run killed before
    # its end (where a run removes them), or photos a crash left between forgetting files and removing them
    photos_without_source: list[int] = field(default_factory=list)
    thumbnails_missing: list[int] = field(default_factory=list)  # image ids
    files_unused: list[str] = field(default_factory=list)  # "thumbnail/<sha256>": files no photo has (unused_files)
    originals_missing: list[int] = field(default_factory=list)
    fixed: dict[str, int] = field(default_factory=dict)
    unfixable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not looked at, and why

    @property
    def problems(self) -> int:
        return sum(len(v) for k, v in asdict(self).items() if isinstance(v, list) and k not in ("unfixable", "notes"))

    def as_dict(self) -> dict[str, Any]:
        return {"problems": self.problems, **asdict(self)}


def _compare(index: VectorIndex, truth: np.ndarray, payloads_of: Callable[[np.ndarray], list[dict[str, Any]]],
             found: Findings, kind: str) -> None:  # fmt: skip
    have = index.ids()
    getattr(found, f"{kind}_missing").extend(np.setdiff1d(truth, have).tolist())
    getattr(found, f"{kind}_extra").extend(np.setdiff1d(have, truth).tolist())
    both = np.intersect1d(truth, have)
    for start in range(0, len(both), CHUNK):
        chunk = both[start : start + CHUNK]
        want = payloads_of(chunk)
        got = index.payloads(chunk)
        for vid, w, g in zip(chunk.tolist(), want, got, strict=True):
            # the photo's record, in the engines that keep it (the embedded index, Milvus collections with fields)
            stale = g is not None and "fields" in g and g["fields"] != w.get("fields", {})
            if g is None or stale or any(w[key] != g[key] for key in PAYLOAD_KEYS):
                getattr(found, f"{kind}_payload").append(vid)


def check(spaces: Spaces, images: ImageStore) -> Findings:
    """What differs between the catalog, the active space and the image store (after catching up)."""
    catalog = spaces.catalog
    space = spaces.refresh()
    found = Findings()
    _compare(space.photos, catalog.ids(), lambda ids: catalog.vectors(ids).payloads, found, "photos")

    def object_payloads(vids: np.ndarray) -> list[dict[str, Any]]:
        rows = catalog.object_vectors(sorted({int(v) >> OBJECT_BITS for v in vids.tolist()}))
        by_id = dict(zip(rows.ids.tolist(), rows.payloads, strict=True))
        return [by_id[int(v)] for v in vids.tolist()]

    _compare(space.objects, catalog.object_vector_ids(), object_payloads, found, "objects")
    _compare(space.copies, catalog.copy_vector_ids(), lambda ids: catalog.copy_vectors(ids).payloads, found, "copies")
    _compare(space.parts, catalog.copy_vector_ids(parts=True), lambda ids: catalog.copy_vectors(ids, True).payloads,
             found, "parts")  # fmt: skip
    found.photos_without_source = catalog.orphans()
    library_id = catalog.get_meta("library_id") or ""
    claim_store(images, library_id)
    others = images.libraries() - {library_id}
    if others:
        found.notes.append(f"files unused: not looked for, the image store is used by {len(others)} other "
                               f"librar{'y' if len(others) == 1 else 'ies'} too ({', '.join(sorted(others)[:3])}): "
                               "their files are not this catalog's to judge (give each library a "
                               "LOOKALIKE_IMAGE_STORE of its own)")  # fmt: skip
    else:
        found.files_unused = unused_files(catalog, images, time.time())
    ids = catalog.ids().tolist()
    for start in range(0, len(ids), CHUNK):
        for image_id, rec in catalog.get_many(ids[start : start + CHUNK]).items():
            if not images.exists("thumbnail", rec.sha256):
                found.thumbnails_missing.append(image_id)
            if rec.has_original and not images.exists("original", rec.sha256):
                found.originals_missing.append(image_id)
    return found


def claim_store(images: ImageStore, library_id: str) -> None:
    """Note in the image store that this library keeps files there: a second library given the same store (the
    same bucket prefix) makes every library's doctor leave the files it does not know alone. A store that cannot
    be written now (down, read-only) is not a reason to refuse to open the library."""
    try:
        images.claim(library_id)
    except Exception as exc:
        log.warning("could not note this library in the image store: %s", exc)


def unused_files(catalog: Catalog, images: ImageStore, now: float) -> list[str]:
    """Thumbnails and local features that no photo of the catalog has, written over UNUSED_AFTER ago: what a process
    killed while removing photos (after the catalog's commit, before the files) or between a batch's thumbnails and
    its commit left. Kept originals are left out: an upload's bytes wait in the store until its job indexes them."""
    out: list[str] = []
    for kind in ("thumbnail", "features"):
        stale = (digest for digest, written in images.stored(kind) if now - written >= UNUSED_AFTER)
        while chunk := list(itertools.islice(stale, CHUNK)):
            known = catalog.ids_for_shas(chunk)
            out += [f"{kind}/{digest}" for digest in chunk if digest not in known]
    return out


def _still_extra(extra: list[int], truth: Callable[[], np.ndarray]) -> list[int]:
    """Those of ``extra`` the catalog still lacks (its ids read only when there is something to check)."""
    return np.setdiff1d(np.asarray(extra, dtype=np.int64), truth()).tolist() if extra else []


def fix(spaces: Spaces, images: ImageStore, reader: Reader, found: Findings) -> Findings:
    """Repair what ``check`` found, the catalog being the truth."""
    catalog, space, settings = spaces.catalog, spaces.space, spaces.settings
    lock = catalog.lock(f"apply:{space.names[0]}") if space.shared else _NoLock()
    with lock:
        # an extra is removed only if the catalog still lacks it: a run adding photos between the check's read of
        # the catalog and its read of a shared engine made its new photos "extra", and removing them left those
        # photos unsearchable (hostile probe); runs write the catalog first, and apply to the engine under this lock
        found.photos_extra = _still_extra(found.photos_extra, catalog.ids)
        found.objects_extra = _still_extra(found.objects_extra, catalog.object_vector_ids)
        found.copies_extra = _still_extra(found.copies_extra, catalog.copy_vector_ids)
        found.parts_extra = _still_extra(found.parts_extra, lambda: catalog.copy_vector_ids(parts=True))
        if found.photos_extra:
            space.photos.remove(np.asarray(found.photos_extra, dtype=np.int64))
        redo = sorted(set(found.photos_missing) | set(found.photos_payload))
        for start in range(0, len(redo), CHUNK):
            rows = catalog.vectors(redo[start : start + CHUNK])
            space.photos.add(rows.ids, space.apply_transform(rows.matrix), rows.payloads)
        if found.objects_extra:
            space.objects.remove(np.asarray(found.objects_extra, dtype=np.int64))
        photos = sorted({v >> OBJECT_BITS for v in found.objects_missing + found.objects_payload})
        for start in range(0, len(photos), CHUNK):
            rows = catalog.object_vectors(photos[start : start + CHUNK])
            space.objects.add(rows.ids, space.apply_transform(rows.matrix), rows.payloads)
        written = 0
        for index, parts, extra, redo_copies in (
            (space.copies, False, found.copies_extra, found.copies_missing + found.copies_payload),
            (space.parts, True, found.parts_extra, found.parts_missing + found.parts_payload),
        ):
            if extra:
                index.remove(np.asarray(extra, dtype=np.int64))
            todo = sorted(set(redo_copies))
            for start in range(0, len(todo), CHUNK):
                rows = catalog.copy_vectors(todo[start : start + CHUNK], parts)
                index.add(rows.ids, rows.matrix, rows.payloads)
            written += len(todo)
    removed = len(found.photos_extra) + len(found.objects_extra) + len(found.copies_extra) + len(found.parts_extra)
    found.fixed = {"vectors_removed": removed,
                   "vectors_written": len(redo) + len(found.objects_missing) + len(found.objects_payload)
                   + written}  # fmt: skip
    thumbs = 0
    for image_id in found.thumbnails_missing:
        rec = catalog.get(image_id)
        if rec is None:  # removed meanwhile: nothing to make
            continue
        try:
            decoded = decode(reader.original_bytes(rec), settings.max_pixels, settings.thumbnail_size)
        except Exception as exc:  # the photo's bytes are gone: report, do not guess
            found.unfixable.append(f"thumbnail of image {image_id}: {exc}")
            continue
        thumb = thumbnail_jpeg(decoded.image, settings.thumbnail_size, settings.thumbnail_quality)
        images.put("thumbnail", rec.sha256, thumb)
        images.delete("features", rec.sha256)  # found on the lost thumbnail: found again on this one when needed
        thumbs += 1
    found.fixed["thumbnails_made"] = thumbs
    unused, now = 0, time.time()
    for entry in found.files_unused:
        kind: Kind = "features" if entry.startswith("features/") else "thumbnail"
        digest = entry.split("/")[1]
        at = images.written(kind, digest)
        # written again since the check (a run about to commit the same bytes), or indexed meanwhile: used again
        if at is not None and now - at >= UNUSED_AFTER and catalog.id_for_sha(digest) is None:
            images.delete(kind, digest)
            unused += 1
    found.fixed["files_deleted"] = unused
    found.unfixable += [f"original of image {i} (an upload or URL: no other copy)" for i in found.originals_missing]
    spaces.save()
    return found


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
