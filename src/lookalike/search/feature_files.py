"""A candidate's local features, kept beside its thumbnail in the image store.

Finding a candidate's ORB features on its thumbnail (decode, scale to ``copies.SIDE`` px, detect, describe) takes
about 8 ms of CPU, most of a geometric check (bench/RESULTS.md, "Candidates' features, stored"). A photo's features
never change, so the first check of a photo stores them (39 KB) under its sha256, and every later check, in any
process, reads them back (decoding them takes 5 microseconds). They are a cache, not a record: photos never checked
cost nothing, and a file that is missing, damaged, of another recipe or of another size is found again from the
thumbnail (and written again). Kept in the image store rather than in a process's memory: shared by every process
and bounded by the store, not by the library's size.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import struct

import numpy as np

from lookalike.search import copies
from lookalike.store.images import ImageStore

log = logging.getLogger(__name__)
_said: set[str] = set()  # the failures already logged as warnings by this process (see _failed)

MAGIC = b"LKFEAT1\0"
CODE = 1  # raise when lookalike.search.copies finds features differently with the same constants


@functools.cache
def _recipe() -> bytes:
    """What the stored features were found with (the constants, this code, OpenCV's and Pillow's versions): a file
    of another recipe is found again, never matched against features found now. Worked out on first use: importing
    OpenCV takes 140 ms, which a process that never checks geometry (most CLI commands) should not pay."""
    import cv2
    import PIL

    return hashlib.sha256(repr((CODE, copies.QUERY_FEATURES, copies.STORED_OVERSAMPLE, copies.SIDE, copies.SMALL,
                                cv2.__version__, PIL.__version__)).encode()).digest()[:8]  # fmt: skip

_HEADER = struct.Struct("<8s8sIIIII")  # magic, recipe, width, height, keypoints, small's height and width
_MAX_SIDE = 1 << 16


def encode(features: copies.Features) -> bytes:
    """The features as bytes: a header, then the points (float32), descriptors (uint8) and the small grey picture."""
    small = np.zeros((0, 0), np.uint8) if features.small is None else features.small
    header = _HEADER.pack(MAGIC, _recipe(), features.width, features.height, len(features.points), *small.shape)
    return b"".join([header, np.ascontiguousarray(features.points, np.float32).tobytes(),
                     np.ascontiguousarray(features.descriptors, np.uint8).tobytes(),
                     np.ascontiguousarray(small).astype(np.uint8).tobytes()])  # fmt: skip


def decode(data: bytes, width: int, height: int) -> copies.Features | None:
    """The features in ``data`` if they are whole, of this recipe and of a photo of this size; else None."""
    if len(data) < _HEADER.size:
        return None
    magic, recipe, w, h, n, sh, sw = _HEADER.unpack_from(data)
    if magic != MAGIC or recipe != _recipe() or (w, h) != (width, height) or max(sh, sw) > _MAX_SIDE:
        return None
    sizes = (n * 8, n * 32, sh * sw)
    if len(data) != _HEADER.size + sum(sizes):
        return None
    at = _HEADER.size
    points = np.frombuffer(data, np.float32, n * 2, at).reshape(n, 2)
    descriptors = np.frombuffer(data, np.uint8, n * 32, at + sizes[0]).reshape(n, 32)
    small = np.frombuffer(data, np.uint8, sh * sw, at + sizes[0] + sizes[1]).reshape(sh, sw).astype(np.float32)
    return copies.Features(points, descriptors, w, h, small if small.size else None)


def candidate_features(images: ImageStore, sha256: str, width: int, height: int,
                       keep: bool = True) -> copies.Features | None:  # fmt: skip
    """A stored photo's features for geometry: from its features file, else found on its thumbnail and stored for
    the next check (a store that cannot take them only costs the next check the same work). None without a
    thumbnail. ``keep`` false (``LOOKALIKE_KEEP_FEATURES``): found on the thumbnail, no file read or written."""
    data = _read(images, sha256) if keep else None
    found = decode(data, width, height) if data is not None else None
    if found is not None:
        return found
    thumbnail = images.get("thumbnail", sha256)
    if thumbnail is None:
        return None
    features = copies.from_jpeg(thumbnail, width, height, copies.QUERY_FEATURES)
    if not keep:
        return features
    encoded = encode(features)  # outside the store's try: a fault here is a bug, not a store that refuses
    try:
        if data is not None:
            images.delete("features", sha256)  # of another recipe, or damaged: a local store keeps what it holds
        images.put("features", sha256, encoded)
    except Exception as exc:  # noqa: BLE001 - a cache: a store that refuses (read-only, no delete right) costs time only
        _failed("stored", sha256, exc)
    return features


def _read(images: ImageStore, sha256: str) -> bytes | None:
    """The features file, or None when there is none or it cannot be read (found again from the thumbnail then)."""
    try:
        return images.get("features", sha256)
    except Exception as exc:  # noqa: BLE001 - a cache: any store error (S3 access denied, I/O) falls back
        _failed("read", sha256, exc)
        return None


def _failed(what: str, sha256: str, exc: Exception) -> None:
    """A warning the first time for each kind of failure, then debug lines: a store that refuses (a read-only folder,
    a bucket without the write right) refuses every check of every search, and one line says so as well as
    thousands; a failure of another kind later (a full disk after a timeout) is said once too."""
    kind = f"{what}:{type(exc).__name__}"
    first = kind not in _said
    _said.add(kind)
    log.log(logging.WARNING if first else logging.DEBUG, "the features of %s could not be %s: %s%s", sha256[:12],
            what, exc, " (said once: later ones are logged at debug level)" if first else "")  # fmt: skip
