"""How embeddings are stored in the catalog: losslessly, and small.

The default model's pooled feature is 1,280 uint8 values times one scale (zero point 0), so a unit
vector from it is ``codes / ||codes||`` for integer codes in 0..255. ``encode`` recovers those codes
from the float vector (any common factor is harmless: it cancels in the normalisation), checks the
round trip, and stores them zlib-compressed (about 920 bytes instead of 5,120 for float32). Vectors of
other models, or not from one quantised tensor (flip averaging, fusion), are stored as float32. Both
round trips are exact to float32 precision, so the catalog stays the lossless source of truth.

Copy descriptors (lookalike.models.copy_descriptor) are stored as int8 with one scale (``encode_int8``: 517 bytes
for 512 dimensions instead of 2,049): their cosines move by about 0.003, far below the gap between a copy and the
nearest other photo (bench/RESULTS.md, "Copies"), and the descriptor can always be computed again from the photo.
"""

from __future__ import annotations

import zlib

import numpy as np

UINT8_ZLIB = 1
FLOAT32 = 2
INT8 = 3
_CANDIDATES = np.arange(1, 256, dtype=np.float64)[:, None]


def _uint8_codes(vec: np.ndarray) -> np.ndarray | None:
    """Integer codes (0..255) proportional to ``vec``, or None when there are none."""
    top = float(vec.max()) if vec.size else 0.0
    if top <= 0 or float(vec.min()) < 0:
        return None
    ratio = vec.astype(np.float64) / top
    probe = ratio[np.flatnonzero(ratio)[:64]]
    scaled = _CANDIDATES * probe[None, :]
    fits = np.flatnonzero(np.abs(scaled - np.round(scaled)).max(axis=1) < 1e-3)
    if not len(fits):
        return None
    codes = ratio * float(fits[0] + 1)
    if np.abs(codes - np.round(codes)).max() >= 1e-3:
        return None
    return np.round(codes).astype(np.uint8)


def _unit(codes: np.ndarray) -> np.ndarray:
    vec = codes.astype(np.float32)
    return vec / np.float32(max(float(np.linalg.norm(vec)), 1e-12))


def encode(vec: np.ndarray) -> bytes:
    vec = np.ascontiguousarray(vec, dtype=np.float32).reshape(-1)
    codes = _uint8_codes(vec)
    if codes is not None and np.abs(_unit(codes) - vec).max() < 2e-6:
        return bytes([UINT8_ZLIB]) + zlib.compress(codes.tobytes(), 6)
    return bytes([FLOAT32]) + vec.tobytes()


def encode_int8(vec: np.ndarray) -> bytes:
    """A unit vector as int8 values times one float32 scale (lossy: see the module docstring)."""
    vec = np.ascontiguousarray(vec, dtype=np.float32).reshape(-1)
    top = float(np.abs(vec).max()) if vec.size else 0.0
    scale = top / 127.0 if top > 0 else 1.0
    codes = np.clip(np.round(vec / scale), -127, 127).astype(np.int8)
    return bytes([INT8]) + np.float32(scale).tobytes() + codes.tobytes()


def decode(blob: bytes | memoryview) -> np.ndarray:
    blob = bytes(blob)
    tag, body = blob[0], blob[1:]
    if tag == INT8:
        return _unit(np.frombuffer(body[4:], dtype=np.int8))
    if tag == UINT8_ZLIB:
        return _unit(np.frombuffer(zlib.decompress(body), dtype=np.uint8))
    if tag == FLOAT32:
        return np.frombuffer(body, dtype=np.float32).copy()
    raise ValueError(f"unknown embedding encoding {tag}")


def decode_many(blobs: list) -> np.ndarray:
    if not blobs:
        return np.empty((0, 0), dtype=np.float32)
    return np.stack([decode(b) for b in blobs])
