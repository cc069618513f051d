"""Is this the same picture? Local features with geometric verification, on OpenCV.

A global embedding says "looks alike"; an edited copy (resized, recompressed, cropped, rotated, mirrored,
grayscale, recoloured, captioned, framed in a screenshot) shares with its original many small patches in
the same geometric arrangement. Where the copy descriptor cannot decide (lookalike.search.verification),
a candidate's ORB keypoints are found on its stored thumbnail and the query's on its own picture (binary
descriptors: cheap to find and to match); they are matched (Lowe's ratio test), then a similarity
transform (rotation, uniform scale, translation) is fitted with RANSAC. Enough inliers under one such
transform is the verdict "copy"; each photo's frame mapped into the other by it gives the matched regions
(a crop's place in its original). Mirrored copies are matched through the query's mirror image. A merely
similar photo (another goldfish) has no consistent transform.

Why ORB rather than SIFT: 9x faster to extract (bench/RESULTS.md, "Copies").
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

MAX_FEATURES = 300  # a mirror image's (see Query.mirror)
QUERY_FEATURES = 800
SIDE = 384  # the long side features are computed at: small enough to be fast, large enough for crops
RATIO = 0.85  # Lowe's ratio test (the geometric check that follows removes what it lets through)
MAX_DISTANCE = 64  # of 256 bits: two unrelated ORB descriptors differ in ~128, the nearest of thousands in ~90
MIN_INLIERS = 12  # a similarity transform supported by this many matches is not chance (see confidence)
COPY_SHARE = 0.8  # of a planar view's agreeing points one similarity explains in a copy (see _similarity)
# features a photo needs for geometry's "no" to count (Verdict.confirmed): a copy keeps only a share of its
# original's features through a resize and recompression, so below this a true copy seldom reaches MIN_INLIERS
# (heavily blurred photos, a line of text on a plain ground: 0-32 features and no fit)
LOOKABLE = 4 * MIN_INLIERS
OBJECT_MIN_INLIERS = 15  # a homography has more freedom than a similarity: it needs more support (see RESULTS)
RANSAC_PX = 4.0  # reprojection tolerance at SIDE px
AGREE = 0.45  # the least agreement (see agreement) of a copy: below every Towhee copy's (bench/RESULTS.md, "Copies")
OVERLAP_PX = 64  # of the small pictures: less overlap than this cannot say whether the pixels agree
GRID = 4  # the overlap is judged in GRID x GRID cells
DETAIL = 4.0  # grey levels of standard deviation a cell needs in both photos to be judged
MIN_CELLS = 4  # cells with detail needed for a verdict
QUANTILE = 0.5  # the cells' median: an overlay may spoil up to half of a copy's cells
CENTRE_CELLS = range(GRID // 4, GRID - GRID // 4)  # the rows and columns of the overlap's centre: 1-2 of 0-3
NESTED = 0.9  # of a photo's area the other's frame must cover in a nested pair (see _similarity): nearly all
# the least agreement, overall and in the centre, of two photos the duplicates report joins: two shots of one scene,
# of one shelf or of one cover a moment apart agree in most cells but less (medians 0.65-0.85), edited copies more
# (1 % of 7,000 known pairs below 0.72-0.79), on the four shared sets (bench/RESULTS.md, "Two shots of one scene")
SAME_PICTURE = 0.7
EDGE = 15  # ORB's border (edgeThreshold) in pixels, which no keypoint is found within
SMALL = 96  # the long side of the grey picture whose pixels a copy must agree with once aligned (see agreement)
# ORB finds this many times the keypoints kept, and the grid spread keeps the strongest of each cell. A candidate's
# thumbnail gives 800 of 1,600: more of them come from coarse pyramid levels, which a photo of the same object taken
# from further away needs; a query keeps 800 of 3,200: a caption's or a frame's strong corners cannot crowd out the
# picture's (bench/RESULTS.md, "Instance search": the other choices lose up to 0.4 of one kind or the other)
STORED_OVERSAMPLE, QUERY_OVERSAMPLE = 2, 4


@dataclass(frozen=True)
class Features:
    """Keypoints in the photo's own pixels (x, y) and their ORB descriptors."""

    points: np.ndarray  # (n, 2) float32, original pixel coordinates
    descriptors: np.ndarray  # (n, 32) uint8
    width: int
    height: int
    small: np.ndarray | None = None  # the photo in grey, SMALL px on its long side: for the pixels' agreement


@dataclass(frozen=True)
class Verdict:
    copy: bool
    confidence: float  # 0..1, from the inliers (1 - exp(-(inliers - 4) / 8))
    inliers: int
    query_box: tuple[float, float, float, float] | None  # the matched region, in the query's pixels
    match_box: tuple[float, float, float, float] | None  # the same region in the candidate's pixels
    mirrored: bool = False
    same_object: bool = False  # not the same picture, but the same (flat) object in another photo
    cosine: float | None = None  # of the copy descriptors (lookalike.search.verification), when both have one
    agreement: float | None = None  # of the aligned pixels (see agreement), for a geometric copy
    centre_agreement: float | None = None  # of the aligned pixels in the overlap's centre (see agreement)
    confirmed: bool | None = None  # a copy the descriptor decided: whether geometry found it too (None: not asked)
    nested: bool | None = None  # a geometric copy: whether one photo's frame lies (nearly) whole in the other

    def same_picture_throughout(self) -> bool:
        """A copy that geometry finds, one photo lying in the other (a crop in its original, a photo in its
        screenshot) and their pixels agreeing at ``SAME_PICTURE``, overall and in the centre of the overlap: what
        the duplicates report joins, since it proposes removals (a search calls a copy at ``AGREE``). Geometry is
        not asked to agree where it could not look (no thumbnail, too few features)."""
        least = self.least_agreement
        return self.copy and self.confirmed is not False and self.nested is not False and (
            least is None or least >= SAME_PICTURE)  # fmt: skip

    @property
    def least_agreement(self) -> float | None:
        """The lower of the pixels' agreement overall and in the centre, of those measured; None: not looked."""
        looks = [a for a in (self.agreement, self.centre_agreement) if a is not None]
        return min(looks) if looks else None

    def as_dict(self) -> dict:
        return {"copy": self.copy, "same_object": self.same_object, "confidence": round(self.confidence, 4),
                "inliers": self.inliers, "query_box": _rounded(self.query_box), "match_box": _rounded(self.match_box),
                "mirrored": self.mirrored,
                "cosine": round(self.cosine, 4) if self.cosine is not None else None}  # fmt: skip


NO_MATCH = Verdict(False, 0.0, 0, None, None)


def _rounded(box):
    return [round(v, 1) for v in box] if box is not None else None


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # one photo per worker thread already uses the cores
    return cv2


def from_jpeg(data: bytes, width: int, height: int, limit: int = QUERY_FEATURES) -> Features:
    """Features of a photo from its thumbnail (``width`` x ``height``: the photo's own size, for the points)."""
    with Image.open(io.BytesIO(data)) as im:
        return Query(im.convert("RGB"), width, height, limit, STORED_OVERSAMPLE).features


def extract(
    image: Image.Image, width: int | None = None, height: int | None = None, limit: int = MAX_FEATURES
) -> Features:
    """Features of a photo; ``width``/``height`` are its original size when ``image`` is a reduced decode.
    A query keeps more (``QUERY_FEATURES``) than a stored photo: a caption or a frame draws strong corners that
    would otherwise take the query's whole budget away from the picture itself."""
    return Query(image, width, height, limit, STORED_OVERSAMPLE).features


class Query:
    """A query photo's features, and on demand those of its mirror image: the same corners mirrored (corner
    detection is symmetric), described again on the mirrored pixels, so no second detection is needed."""

    def __init__(
        self, image: Image.Image, width: int | None = None, height: int | None = None, limit: int = QUERY_FEATURES,
        oversample: int = QUERY_OVERSAMPLE,
    ) -> None:
        cv2 = _cv2()
        gray = ImageOps.grayscale(image)
        self.width, self.height = width or image.width, height or image.height
        scale = SIDE / max(gray.width, gray.height)
        if abs(scale - 1) > 0.05:  # small photos too: features at the scale the stored ones were found at
            gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                               Image.Resampling.BILINEAR)  # fmt: skip
        self._pixels = np.asarray(gray, dtype=np.uint8)
        shrink = SMALL / max(self._pixels.shape)
        self._small = cv2.resize(self._pixels, (max(1, round(self._pixels.shape[1] * shrink)),
                                                max(1, round(self._pixels.shape[0] * shrink))),
                                 interpolation=cv2.INTER_AREA).astype(np.float32)  # fmt: skip
        self._orb = cv2.ORB_create(nfeatures=oversample * limit, fastThreshold=10, edgeThreshold=EDGE, patchSize=15)
        # ORB finds nothing within EDGE pixels of a border, and a picture 1 pixel thin made OpenCV assert (a search by
        # a 3 x 1200 photo or a 1-pixel box answered 500: hostile probe): too thin a picture has no features
        thin = min(self._pixels.shape) <= 2 * EDGE
        keypoints = [] if thin else _spread(self._orb.detect(self._pixels, None), self._pixels.shape, limit)
        self._keypoints = keypoints
        self.features = self._describe(self._pixels, keypoints, self._small)

    def _describe(self, pixels: np.ndarray, keypoints, small: np.ndarray) -> Features:
        descriptors = None
        if keypoints:
            keypoints, descriptors = self._orb.compute(pixels, keypoints)
        if descriptors is None or not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), self.width, self.height, small)
        pts = _cv2().KeyPoint_convert(keypoints).astype(np.float32)
        pts *= np.array([self.width / pixels.shape[1], self.height / pixels.shape[0]], dtype=np.float32)
        return Features(pts, descriptors, self.width, self.height, small)

    def mirror(self) -> Features:
        """Features of the mirror image, points in its (mirrored) coordinates: a similarity transform cannot
        fit a reflection, so the geometry is checked on the mirror image and only its box mapped back. Only the
        strongest MAX_FEATURES of each grid cell's keypoints: a mirrored copy is seldom also captioned."""
        cv2 = _cv2()
        w = self._pixels.shape[1]
        flipped = [cv2.KeyPoint(w - 1 - k.pt[0], k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave)
                   for k in self._keypoints[:MAX_FEATURES]]  # fmt: skip
        return self._describe(np.ascontiguousarray(self._pixels[:, ::-1]), flipped,
                              np.ascontiguousarray(self._small[:, ::-1]))  # fmt: skip


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


def matches(query: np.ndarray, candidates: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each candidate, its (query rows, candidate rows) matches: every candidate descriptor whose nearest query
    descriptor passes Lowe's ratio test against the second nearest and differs in at most MAX_DISTANCE bits, one
    match per query descriptor (the closest).

    Matched from the candidate's side: a descriptor's two nearest *query* descriptors do not depend on the other
    candidates, so all candidates are matched in one search and each pair still gets its own ratio test. (Matched
    the other way round against all candidates at once, two photos of the same object among the candidates take
    each other's matches away: the ratio test sees two equally good answers and rejects both.)"""
    out = [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in candidates]
    sizes = np.array([len(c) for c in candidates], dtype=np.int64)
    if len(query) < 2 or not sizes.sum():
        return out
    distance, nearest = _knn2(np.concatenate([c for c in candidates if len(c)]), query)
    good = (nearest[:, 1] >= 0) & (distance[:, 0] < RATIO * distance[:, 1]) & (distance[:, 0] <= MAX_DISTANCE)
    owner = np.repeat(np.arange(len(candidates)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for j in np.unique(owner[good]).tolist():
        rows = np.flatnonzero(good & (owner == j))
        q, d = nearest[rows, 0], distance[rows, 0]
        # one-to-one: each query point keeps its closest candidate point; many candidate points on one query
        # point would let RANSAC "fit" a transform that shrinks everything onto it
        order = np.lexsort((d, q))
        first = np.r_[True, q[order][1:] != q[order][:-1]]
        keep = order[first]
        out[j] = (q[keep].astype(np.int64), rows[keep] - starts[j])
    return out


def verify_many(query: Features, candidates: dict[int, Features], objects: bool = True) -> dict[int, Verdict]:
    """Verdicts for several candidates at the cost of about one: one matching search for all of them, and the
    geometric checks only for candidates with enough matches to pass them. ``objects``: also look for the same
    object in another photo (a homography) where the photo is not a copy."""
    verdicts = {i: NO_MATCH for i in candidates}
    usable = {i: f for i, f in candidates.items() if len(f.descriptors) >= 4}
    if len(query.descriptors) < 4 or not usable:
        return verdicts
    found = matches(query.descriptors, [f.descriptors for f in usable.values()])
    for (i, candidate), (q, t) in zip(usable.items(), found, strict=True):
        if len(q) >= MIN_INLIERS:
            verdicts[i] = _geometry(query, candidate, q, t, objects)
    return verdicts


def _knn2(query: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two nearest train descriptors of each query descriptor (Hamming): faiss's binary flat index, 3x
    faster here than OpenCV's brute-force matcher and already a dependency (the IVF tier)."""
    import faiss

    faiss.omp_set_num_threads(1)  # small searches: threads cost more than they give (and searches run in parallel)
    index = faiss.IndexBinaryFlat(train.shape[1] * 8)
    index.add(np.ascontiguousarray(train))
    distance, nearest = index.search(np.ascontiguousarray(query), 2)
    return distance.astype(np.float32), nearest


def _geometry(query: Features, candidate: Features, q: np.ndarray, t: np.ndarray, objects: bool) -> Verdict:
    """One robust fit, then two verdicts from it. A homography (a plane seen from anywhere) is fitted to the matches
    with OpenCV's USAC, ~50x faster here than its classic RANSAC, which refines every hypothesis; its inliers are the
    matches any view of the same flat picture agrees with. The same picture (resized, cropped, rotated, recoloured,
    captioned) is a similarity transform: fitted to those inliers alone, it converges at once. When it explains
    MIN_INLIERS of them and COPY_SHARE of all, the photo is a copy; else, with ``objects``, enough inliers under a
    sane homography make it the same object in another photo. One fit per candidate instead of two halves the
    check's cost."""
    cv2 = _cv2()
    src, dst = query.points[q], candidate.points[t]
    tol = _tolerance(candidate)
    h, mask = cv2.findHomography(src, dst, cv2.USAC_DEFAULT, tol, maxIters=500, confidence=0.99)
    if h is None or mask is None:
        return NO_MATCH
    keep = mask.ravel().astype(bool)
    if keep.sum() < MIN_INLIERS:
        return NO_MATCH
    src, dst = src[keep], dst[keep]
    verdict = _similarity(query, candidate, src, dst)
    if verdict.copy or not objects:
        return verdict
    same = _same_object(query, candidate, src, dst, h)
    return same if same.same_object else verdict


def _tolerance(candidate: Features) -> float:
    """The RANSAC tolerance in the candidate's pixels, as RANSAC_PX would be at SIDE px."""
    return RANSAC_PX * max(candidate.width, candidate.height) / SIDE


def _sane_scale(scale: float, query: Features, candidate: Features) -> bool:
    """A copy or a view of one object is scaled by a sane factor: photo sides over candidate sides, within 8x."""
    expected = max(candidate.width, candidate.height) / max(query.width, query.height)
    return expected / 8 <= scale <= expected * 8


def _spread_enough(box: tuple[float, ...], width: int, height: int) -> bool:
    """The agreeing points cover a region, not one spot (a logo, a repeated texture)."""
    return min((box[2] - box[0]) / width, (box[3] - box[1]) / height) >= 0.1


class Agreement(NamedTuple):
    """How well a geometric copy's aligned pixels agree (see ``agreement``)."""

    overall: float  # the cells' median: what a copy verdict needs (AGREE)
    centre: float | None  # the lower median of the centre's cells (None: none has detail): what a duplicate needs


def agreement(query: Features, candidate: Features, transform: np.ndarray) -> Agreement | None:
    """Whether the photos' own pixels agree once the query is aligned onto the candidate by ``transform`` (query
    pixels -> candidate pixels): the overlap of their small grey pictures is cut into GRID x GRID cells, and the
    answer is the median correlation over the cells with detail in both. Colour changes, grayscale, recompression
    and resizing leave it high, and an overlay (a caption) spoils only its own cells, at the picture's edges; two
    different photos that share only an overlay (the same caption, a logo) agree in those strokes and in no cell of
    the pictures themselves. None when a photo has no small picture or too few cells have detail.

    The centre's cells are answered apart: two different subjects in the same screenshot frame or laid on the same
    background (covers on one printed page) agree in most cells, all around, but not in the centre, where the
    subject is. The duplicates report asks the centre to agree too, since it proposes removals; a search does not,
    since on shop shelves the other frames of a product disagree there too (it moved), and a sibling package whose
    art agrees would then be called the copy above them (bench/RESULTS.md, "A shared frame or background")."""
    if query.small is None or candidate.small is None:
        return None
    cv2 = _cv2()
    qh, qw = query.small.shape
    ch, cw = candidate.small.shape
    into_small = np.diag([cw / candidate.width, ch / candidate.height, 1.0])
    from_small = np.diag([query.width / qw, query.height / qh, 1.0])
    m = (into_small @ np.vstack([transform, [0.0, 0.0, 1.0]]) @ from_small)[:2]
    warped = cv2.warpAffine(query.small, m, (cw, ch), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones_like(query.small), m, (cw, ch), flags=cv2.INTER_LINEAR) > 0.99
    ys, xs = np.nonzero(inside)
    if len(ys) < OVERLAP_PX:
        return None
    y_edges = np.linspace(ys.min(), ys.max() + 1, GRID + 1).astype(int)
    x_edges = np.linspace(xs.min(), xs.max() + 1, GRID + 1).astype(int)
    agree, centre = [], []
    for row, (y0, y1) in enumerate(zip(y_edges[:-1], y_edges[1:], strict=True)):
        for col, (x0, x1) in enumerate(zip(x_edges[:-1], x_edges[1:], strict=True)):
            cell = inside[y0:y1, x0:x1]
            if cell.sum() < 0.8 * cell.size or cell.size < 4:
                continue
            a, b = warped[y0:y1, x0:x1][cell], candidate.small[y0:y1, x0:x1][cell]
            if a.std() < DETAIL or b.std() < DETAIL:
                continue  # flat in either (sky, a frame's bar): says nothing
            agree.append(float(np.corrcoef(a, b)[0, 1]))
            if row in CENTRE_CELLS and col in CENTRE_CELLS:
                centre.append(agree[-1])
    if len(agree) < MIN_CELLS:
        return None
    # the centre's lower median: one cell of its four may be off (a nearly flat one at JPEG 50), two may not
    return Agreement(float(np.quantile(agree, QUANTILE)),
                     float(np.quantile(centre, 0.5, method="lower")) if centre else None)  # fmt: skip


def _confidence(inliers: int) -> float:
    return float(1.0 - np.exp(-max(0, inliers - 4) / 8.0))


def _similarity(query: Features, candidate: Features, src: np.ndarray, dst: np.ndarray) -> Verdict:
    cv2 = _cv2()
    transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=_tolerance(
        candidate), maxIters=500, confidence=0.99)  # fmt: skip
    if mask is None or transform is None:
        return NO_MATCH
    if not _sane_scale(float(np.hypot(transform[0, 0], transform[1, 0])), query, candidate):
        return NO_MATCH
    keep = mask.ravel().astype(bool)
    inliers = int(keep.sum())
    if inliers < 4:
        return NO_MATCH
    qb = _box(src[keep], query.width, query.height)
    mb = _box(dst[keep], candidate.width, candidate.height)
    if not _spread_enough(mb, candidate.width, candidate.height):
        return Verdict(False, 0.0, inliers, qb, mb)
    # the matched region: where each photo's frame falls in the other under the transform (a crop's place in
    # its original, a framed photo's place in the screenshot), not only where the agreeing points happen to be
    mb = _frame_in(transform, query.width, query.height, candidate.width, candidate.height)
    inverse = cv2.invertAffineTransform(transform)
    qb = _frame_in(inverse, candidate.width, candidate.height, query.width, query.height)
    # an edited copy keeps the picture's geometry: the similarity explains (nearly) every point a planar view agrees
    # on (at least 0.8 for 882 of 883 copies: 10 edits of 100 Towhee photos). A phone photo of a
    # printed picture is seen in perspective: a similarity fits one part of it (median 0.72 of 231 DVD cover photos
    # that pass MIN_INLIERS), so it is the same object in another photo, with its region where the points lie.
    copy = inliers >= MIN_INLIERS and inliers >= COPY_SHARE * len(src)
    agree = agreement(query, candidate, transform) if copy else None
    if agree is not None and AGREE is not None and agree.overall < AGREE:
        copy = False
    # a copy is its original cropped, framed or resized: one of the two frames lies in the other; two photos of one
    # scene taken a step apart overlap in a part of each (bench/RESULTS.md, "A shared frame or background")
    nested = max(share(qb, query.width, query.height), share(mb, candidate.width, candidate.height)) >= NESTED
    return Verdict(copy, _confidence(inliers), inliers, qb, mb, agreement=agree.overall if agree else None,
                   centre_agreement=agree.centre if agree else None, nested=nested)  # fmt: skip


def area(box: tuple[float, float, float, float]) -> float:
    """A box's area in pixels."""
    return (box[2] - box[0]) * (box[3] - box[1])


def share(box: tuple[float, float, float, float], width: int, height: int) -> float:
    """The share of a photo's area a box covers."""
    return area(box) / max(width * height, 1)


def _same_object(query: Features, candidate: Features, src: np.ndarray, dst: np.ndarray, h: np.ndarray) -> Verdict:
    """A plane seen from two viewpoints (a cover, a package, a poster, a painting): the homography's inliers
    ``src`` -> ``dst``. The matched regions are where they lie in each photo: the object, not the frame (which
    holds the rest of the scene)."""
    cv2 = _cv2()
    inliers = len(src)
    det = float(np.linalg.det(h[:2, :2]))
    if inliers < OBJECT_MIN_INLIERS or det <= 0 or not _sane_scale(np.sqrt(det), query, candidate):
        return NO_MATCH  # a mirror image (det < 0) or a collapse onto a line is no view of a flat object
    qb = _box(src, query.width, query.height)
    mb = _box(dst, candidate.width, candidate.height)
    if not (_spread_enough(qb, query.width, query.height) and _spread_enough(mb, candidate.width, candidate.height)):
        return NO_MATCH
    if not _convex(cv2.perspectiveTransform(_corners(qb)[None], h)[0]):
        return NO_MATCH  # the matched region would be folded: not a view of a plane
    return Verdict(False, _confidence(inliers), inliers, qb, mb, same_object=True)


def _corners(box: tuple[float, ...]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def _convex(quad: np.ndarray) -> bool:
    """Whether the four points (in order) turn the same way at every corner."""
    edges = np.roll(quad, -1, axis=0) - quad
    turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    return bool(np.all(turns > 0) or np.all(turns < 0))


def _frame_in(
    transform: np.ndarray, width: int, height: int, into_w: int, into_h: int
) -> tuple[float, float, float, float]:
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
    mapped = corners @ transform[:, :2].T + transform[:, 2]
    return _box(mapped, into_w, into_h)


def _box(points: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1 = np.clip(points.min(axis=0), 0, [width, height])
    x2, y2 = np.clip(points.max(axis=0), 0, [width, height])
    return float(x1), float(y1), float(x2), float(y2)
