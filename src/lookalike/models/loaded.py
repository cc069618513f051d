"""The models a library runs, loaded once on first use and shared by every thread of the process.

The similarity embedder, the copy descriptor and the subject detector each take seconds and tens of megabytes to
load, so each is loaded the first time something needs it (a CLI command that only lists photos loads none);
all three are thread-safe once loaded (like immich's ``InferenceModel``: one instance per process, loaded lazily).
Here too are the steps from a photo's bytes to what the models take, shared by indexing and searching: one decode
path for both, so an indexed photo and the same photo as a query become the same input.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
from PIL import Image

from lookalike.config import Settings
from lookalike.errors import LibraryError
from lookalike.imaging import Decoded, decode
from lookalike.models import copy_descriptor
from lookalike.models.detectors import Detection, Detector
from lookalike.models.embedder import Embedder
from lookalike.models.registry import ModelSpec, load_detector
from lookalike.search.results import Box

DETECT_SIDE = 640  # twice the detectors' input side: boxes stay precise


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


class Models:
    """The library's embedder (given, or loaded from its spec), copy descriptor and detector."""

    def __init__(self, settings: Settings, spec: ModelSpec, embedder: Embedder | None = None) -> None:
        self.settings, self.spec = settings, spec
        self._lock = threading.Lock()  # loading only; never held while a model runs
        self._embedder = embedder
        self._copy_model: copy_descriptor.CopyDescriptor | None = None
        self._detector: Detector | None = None

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = self.spec.load(self.settings)
            return self._embedder

    @property
    def copy_model(self) -> copy_descriptor.CopyDescriptor | None:
        """The copy descriptor; None when the copy stage is off (``copy_candidates`` 0)."""
        if not self.settings.copy_candidates:
            return None
        with self._lock:
            if self._copy_model is None:
                s = self.settings
                self._copy_model = copy_descriptor.load(s.resolved_models_dir, s.copy_side)
            return self._copy_model

    @property
    def detector(self) -> Detector:
        with self._lock:
            if self._detector is None:
                self._detector = load_detector(self.settings)
            return self._detector

    # --- photos into model inputs ------------------------------------------------------
    def decode_side(self) -> int:
        """JPEGs are decoded at the smallest scale that still serves the model, the thumbnail and the copy
        descriptor's centre; a query as an indexed photo is (the same photo must give the same vectors)."""
        s = self.settings
        copies = copy_descriptor.decode_side(s.copy_side) if s.copy_candidates else 0
        return max(self.embedder.input_size, s.thumbnail_size, copies)

    def decode(self, data: bytes, box: Box | None = None) -> Decoded:
        """A photo decoded for the models; for a region query, at the scale that serves the region."""
        return decode(data, self.settings.max_pixels, self.decode_side(), box)

    def decode_for_detector(self, data: bytes) -> Decoded:
        """Decoded for the detector (320 px) and drawing: the embedding model is not needed."""
        return decode(data, self.settings.max_pixels, max(DETECT_SIDE, self.settings.thumbnail_size))

    def prepare_pixels(self, data: bytes) -> tuple[Decoded, np.ndarray]:
        """Bytes -> (decoded photo, model input); the one path for indexed and query photos alike."""
        decoded = self.decode(data)
        return decoded, self.embedder.prepare(decoded.image)

    def embed(self, picture: Image.Image) -> np.ndarray:
        """One photo (or a region of one) -> its raw similarity vector."""
        return self.embedder.embed(self.embedder.prepare(picture)[None])[0]

    def detect_decoded(self, decoded: Decoded) -> list[Detection]:
        """Detections scaled to original pixels, small ones dropped (they embed poorly)."""
        sx, sy = decoded.width / decoded.image.width, decoded.height / decoded.image.height
        out = []
        for det in self.detector.detect(decoded.image):
            x1, y1, x2, y2 = det.box
            box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
            if min(box[2] - box[0], box[3] - box[1]) >= self.settings.min_object_side:
                out.append(replace(det, box=box))
        return out

    def embed_objects(self, decoded: Decoded, detections: list[Detection]) -> np.ndarray:
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
