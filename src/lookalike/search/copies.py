"""Is this the same picture? Local features with geometric verification, on OpenCV.

A global embedding says "looks alike"; an edited copy (resized, recompressed, cropped, rotated, mirrored,
grayscale, recoloured, captioned, framed in a screenshot) shares with its original many small patches in
the same geometric arrangement. Each photo keeps up to ``MAX_FEATURES`` ORB keypoints (binary
descriptors: cheap to store and to match) computed on its grayscale picture; a query's features are
matched against a candidate's (Lowe's ratio test), then a similarity transform (rotation, uniform scale,
translation) is fitted with RANSAC. Enough inliers under one such transform is the verdict "copy"; each
photo's frame mapped into the other by it gives the matched regions (a crop's place in its original).
Mirrored copies are matched through the query's mirror image. A merely similar photo (another goldfish)
has no consistent transform.

Why ORB rather than SIFT: 9x faster to extract (bench/RESULTS.md, "Copies") at 36 bytes per stored keypoint.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

MAX_FEATURES = 300  # stored per photo
QUERY_FEATURES = 800
SIDE = 384  # the long side features are computed at: small enough to be fast, large enough for crops
RATIO = 0.85  # Lowe's ratio test (the geometric check that follows removes what it lets through)
MAX_DISTANCE = 64  # of 256 bits: two unrelated ORB descriptors differ in ~128, the nearest of thousands in ~90
MIN_INLIERS = 12  # a similarity transform supported by this many matches is not chance (see confidence)
RANSAC_PX = 4.0  # reprojection tolerance at SIDE px


@dataclass(frozen=True)
class Features:
    """Keypoints in the photo's own pixels (x, y) and their ORB descriptors."""

    points: np.ndarray  # (n, 2) float32, original pixel coordinates
    descriptors: np.ndarray  # (n, 32) uint8
    width: int
    height: int

    def to_bytes(self) -> bytes:
        """The stored form: width, height (uint16 each), then per keypoint x, y (uint16, in 1/SCALE of a pixel of
        the photo scaled to SIDE) and the descriptor: 36 bytes a keypoint."""
        scale = SIDE / max(self.width, self.height, 1)
        xy = np.clip(np.round(self.points * scale * 16), 0, 65535).astype("<u2")
        head = np.array([min(self.width, 65535), min(self.height, 65535)], dtype="<u2").tobytes()
        return head + np.hstack([xy.view(np.uint8).reshape(-1, 4), self.descriptors]).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        w, h = np.frombuffer(data[:4], dtype="<u2").tolist()
        rows = np.frombuffer(data[4:], dtype=np.uint8).reshape(-1, 36)
        scale = SIDE / max(w, h, 1)
        xy = rows[:, :4].copy().view("<u2").reshape(-1, 2).astype(np.float32) / 16 / scale
        return cls(xy, np.ascontiguousarray(rows[:, 4:]), w, h)


@dataclass(frozen=True)
class Verdict:
    copy: bool
    confidence: float  # 0..1, from the inliers (1 - exp(-(inliers - 4) / 8))
    inliers: int
    query_box: tuple[float, float, float, float] | None  # the matched region, in the query's pixels
    match_box: tuple[float, float, float, float] | None  # the same region in the candidate's pixels
    mirrored: bool = False

    def as_dict(self) -> dict:
        return {"copy": self.copy, "confidence": round(self.confidence, 4), "inliers": self.inliers,
                "query_box": _rounded(self.query_box), "match_box": _rounded(self.match_box),
                "mirrored": self.mirrored}  # fmt: skip


NO_MATCH = Verdict(False, 0.0, 0, None, None)


def _rounded(box):
    return [round(v, 1) for v in box] if box is not None else None


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # one photo per worker thread already uses the cores
    return cv2


def stored(catalog, ids) -> dict[int, Features]:
    """The stored features of these photos (those indexed before version 3 have none)."""
    return {i: Features.from_bytes(data) for i, data in catalog.features(ids).items()}


def from_jpeg(data: bytes, width: int, height: int, limit: int = MAX_FEATURES) -> Features:
    """Features of a photo from its thumbnail (``width`` x ``height``: the photo's own size, for the points)."""
    with Image.open(io.BytesIO(data)) as im:
        return Query(im.convert("RGB"), width, height, limit).features


def extract(
    image: Image.Image, width: int | None = None, height: int | None = None, limit: int = MAX_FEATURES
) -> Features:
    """Features of a photo; ``width``/``height`` are its original size when ``image`` is a reduced decode.
    A query keeps more (``QUERY_FEATURES``) than a stored photo: a caption or a frame draws strong corners that
    would otherwise take the query's whole budget away from the picture itself."""
    return Query(image, width, height, limit).features


class Query:
    """A query photo's features, and on demand those of its mirror image: the same corners mirrored (corner
    detection is symmetric), described again on the mirrored pixels, so no second detection is needed."""

    def __init__(
        self, image: Image.Image, width: int | None = None, height: int | None = None, limit: int = QUERY_FEATURES
    ) -> None:
        cv2 = _cv2()
        gray = ImageOps.grayscale(image)
        self.width, self.height = width or image.width, height or image.height
        scale = SIDE / max(gray.width, gray.height)
        if abs(scale - 1) > 0.05:  # small photos too: features at the scale the stored ones were found at
            gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                               Image.Resampling.BILINEAR)  # fmt: skip
        self._pixels = np.asarray(gray, dtype=np.uint8)
        self._orb = cv2.ORB_create(nfeatures=4 * limit, fastThreshold=10, edgeThreshold=15, patchSize=15)
        keypoints = _spread(self._orb.detect(self._pixels, None), self._pixels.shape, limit)
        self._keypoints = keypoints
        self.features = self._describe(self._pixels, keypoints)

    def _describe(self, pixels: np.ndarray, keypoints) -> Features:
        keypoints, descriptors = self._orb.compute(pixels, keypoints)
        if descriptors is None or not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), self.width, self.height)
        pts = _cv2().KeyPoint_convert(keypoints).astype(np.float32)
        pts *= np.array([self.width / pixels.shape[1], self.height / pixels.shape[0]], dtype=np.float32)
        return Features(pts, descriptors, self.width, self.height)

    def mirror(self) -> Features:
        """Features of the mirror image, points in its (mirrored) coordinates: a similarity transform cannot
        fit a reflection, so the geometry is checked on the mirror image and only its box mapped back."""
        cv2 = _cv2()
        w = self._pixels.shape[1]
        flipped = [cv2.KeyPoint(w - 1 - k.pt[0], k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave)
                   for k in self._keypoints]  # fmt: skip
        return self._describe(np.ascontiguousarray(self._pixels[:, ::-1]), flipped)


def _spread(keypoints, shape: tuple[int, int], limit: int, grid: int = 4) -> list:
    """The strongest keypoints of each cell of a grid x grid split, ``limit`` in all: a caption, a logo or a
    busy corner cannot take every keypoint (and a crop still finds the ones of its part of the photo)."""
    if len(keypoints) <= limit:
        return list(keypoints)
    h, w = shape
    cv2 = _cv2()
    pts = cv2.KeyPoint_convert(keypoints)
    response = np.fromiter((k.response for k in keypoints), dtype=np.float32, count=len(keypoints))
    cell = np.minimum(grid - 1, (pts[:, 0] * grid / w).astype(int)) * grid + np.minimum(
        grid - 1, (pts[:, 1] * grid / h).astype(int)
    )
    order = np.lexsort((-response, cell))  # by cell, strongest first within a cell
    cells = cell[order]
    starts = np.searchsorted(cells, cells, side="left")
    rank = np.arange(len(order)) - starts  # 0 for a cell's strongest, 1 for its next ...
    # round robin: every cell's first, then every cell's second ...: sparse cells give up their share
    chosen = order[np.lexsort((-response[order], rank))][:limit]
    return [keypoints[i] for i in chosen]


def matches(query: np.ndarray, train: np.ndarray) -> list[tuple[int, int, float]]:
    """(query row, train row, distance) for query descriptors whose nearest train descriptor passes Lowe's ratio
    test against the second nearest and differs in at most MAX_DISTANCE bits."""
    distance, nearest = _knn2(query, train)
    good = np.flatnonzero((nearest[:, 1] >= 0) & (distance[:, 0] < RATIO * distance[:, 1])
                          & (distance[:, 0] <= MAX_DISTANCE))  # fmt: skip
    return [(q, int(nearest[q, 0]), float(distance[q, 0])) for q in good.tolist()]


def one_to_one(good: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Each train point keeps its closest match: many query points on one candidate point would let RANSAC
    "fit" a transform that shrinks everything onto it."""
    best: dict[int, tuple[int, int, float]] = {}
    for m in good:
        if m[1] not in best or m[2] < best[m[1]][2]:
            best[m[1]] = m
    return list(best.values())


def verify_many(query: Features, candidates: dict[int, Features]) -> dict[int, Verdict]:
    """Verdicts for several candidates at the cost of about one: the query is matched once against all their
    descriptors together, and the geometric check runs only for candidates with enough matches to pass it."""
    verdicts = {i: NO_MATCH for i in candidates}
    usable = {i: f for i, f in candidates.items() if len(f.descriptors) >= 4}
    if len(query.descriptors) < 4 or not usable:
        return verdicts
    owner = np.concatenate([np.full(len(f.descriptors), i, dtype=np.int64) for i, f in usable.items()])
    sizes = [len(f.descriptors) for f in usable.values()]
    offsets = dict(zip(usable, np.cumsum([0, *sizes[:-1]]).tolist(), strict=True))  # each one's first row
    per: dict[int, list[tuple[int, int, float]]] = {}
    for qi, ti, d in matches(query.descriptors, np.concatenate([f.descriptors for f in usable.values()])):
        i = int(owner[ti])
        per.setdefault(i, []).append((qi, ti - offsets[i], d))
    for i, found in per.items():
        if len(found) >= MIN_INLIERS:
            verdicts[i] = _geometry(query, candidates[i], found)
    return verdicts


def _knn2(query: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two nearest train descriptors of each query descriptor (Hamming): faiss's binary flat index, 3x
    faster here than OpenCV's brute-force matcher and already a dependency (the IVF tier)."""
    import faiss

    index = faiss.IndexBinaryFlat(train.shape[1] * 8)
    index.add(np.ascontiguousarray(train))
    distance, nearest = index.search(np.ascontiguousarray(query), 2)
    return distance.astype(np.float32), nearest


def _geometry(query: Features, candidate: Features, good: list[tuple[int, int, float]]) -> Verdict:
    """A similarity transform fitted with RANSAC to (query point, candidate point, distance) matches."""
    cv2 = _cv2()
    good = one_to_one(good)
    if len(good) < 4:
        return NO_MATCH
    src = query.points[[m[0] for m in good]]
    dst = candidate.points[[m[1] for m in good]]
    # RANSAC tolerance in the candidate's pixels, as RANSAC_PX would be at SIDE px
    tol = RANSAC_PX * max(candidate.width, candidate.height) / SIDE
    transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=tol,
                                                  maxIters=500, confidence=0.99)  # fmt: skip
    if mask is None or transform is None:
        return NO_MATCH
    # a copy is scaled by a sane factor (photo sides over candidate sides, within 8x either way)
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    expected = max(candidate.width, candidate.height) / max(query.width, query.height)
    if not expected / 8 <= scale <= expected * 8:
        return NO_MATCH
    keep = mask.ravel().astype(bool)
    inliers = int(keep.sum())
    if inliers < 4:
        return NO_MATCH
    confidence = float(1.0 - np.exp(-max(0, inliers - 4) / 8.0))
    qb = _box(src[keep], query.width, query.height)
    mb = _box(dst[keep], candidate.width, candidate.height)
    # the agreeing points must cover a region, not one spot (a logo, a repeated texture)
    spread = min((mb[2] - mb[0]) / candidate.width, (mb[3] - mb[1]) / candidate.height)
    if spread < 0.1:
        return Verdict(False, 0.0, inliers, qb, mb)
    # the matched region: where each photo's frame falls in the other under the transform (a crop's place in
    # its original, a framed photo's place in the screenshot), not only where the agreeing points happen to be
    mb = _frame_in(transform, query.width, query.height, candidate.width, candidate.height)
    inverse = cv2.invertAffineTransform(transform)
    qb = _frame_in(inverse, candidate.width, candidate.height, query.width, query.height)
    return Verdict(inliers >= MIN_INLIERS, confidence, inliers, qb, mb)


def _frame_in(transform: np.ndarray, width: int, height: int, into_w: int, into_h: int) -> tuple[float, ...]:
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
    mapped = corners @ transform[:, :2].T + transform[:, 2]
    return _box(mapped, into_w, into_h)


def _box(points: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1 = np.clip(points.min(axis=0), 0, [width, height])
    x2, y2 = np.clip(points.max(axis=0), 0, [width, height])
    return float(x1), float(y1), float(x2), float(y2)
