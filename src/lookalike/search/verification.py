"""Copies first, then the same object: a search's candidates judged by the copy descriptor, and by geometry only
where the descriptor cannot decide.

Candidates come from two searches of the shared vector engine: the copy collection (the photos whose copy
descriptor is nearest the query's, lookalike.models.copy_descriptor) and the global search's first few hits.
Nothing here depends on an index held in one process's memory, so it works the same in every process and at any
library size. Each candidate's copy cosine decides where it can:

- at or above ``COPY_SURE`` it is a copy: an edited copy of the same picture (resized, cropped, captioned,
  recoloured, in a screenshot) and nothing else scores that high (bench/RESULTS.md, "Copies");
- below ``CHECK_FLOOR`` it is neither a copy nor a photo of the same object, and nothing more is done: the cost of
  an ordinary search is one more small embedding, computed while the similarity model runs;
- in between, local features decide (lookalike.search.copies): the query's ORB features against the candidate's,
  found on its stored thumbnail once and kept beside it (lookalike.search.feature_files); a similarity transform
  means a copy, a homography the same flat object in another photo (a phone photo of a cover or a package),
  nothing means merely alike.

Copies move above everything (score 1 + confidence), same-object photos above every merely similar photo (1 +
confidence / 2), so the scores shown still agree with the order. A copy the descriptor decided is checked by
geometry too when it is among the first ``REGION_CHECKS``, for its matched region (where a crop lies in its
original); the verdict stands either way.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lookalike.search import copies
from lookalike.search.results import Hit

# Cosines of the copy descriptor (sscd_distilled at 160 px), from 10 edits of 100 photos and of 100 outsiders each in
# Towhee and Corel-1k (bench/copies.py prints them; bench/RESULTS.md, "Calibration"). COPY_SURE lies above every
# outsider's nearest photo in both sets (Towhee at most 0.40; Corel-1k, whose held-out photos have twins from the same
# shoot, 0.82); CHECK_FLOOR was chosen on Towhee (0.1 % of its copies below it, 3 % of its outsiders above) and holds
# on Corel-1k (0.5 % of copies below it)
COPY_SURE = 0.85
CHECK_FLOOR = 0.30
# The same floor for the best cosine of any of the query's rows (its whole, corners and centre, pooled and in pixels,
# against the photos' whole and centre descriptors): geometry runs when a candidate reaches it. The best of more
# comparisons is higher than one cosine: 9.5 % of Towhee's 1,000 edited outsiders reach 0.35 (4.2 % 0.40, 3.0 % pass
# CHECK_FLOOR), and none of the 10 standard edits of Towhee's or Corel-1k's photos lie below 0.40 (harder ones do: a
# candidate whose whole cosine reaches CHECK_FLOOR is checked too, see reaches). 0.35 rather than 0.40 since a
# candidate's features are stored (lookalike.search.feature_files) and a check costs a third of what it did: a clean
# scan of a cover often reaches its phone photos first of all its candidates but only at 0.30-0.40; DVD covers' top-1
# goes from 0.836 to 0.872 (mAP@10 0.604 -> 0.626), grocery a little up, Towhee's and Corel-1k's evals unchanged, for
# geometry on 10 % of Towhee's ordinary searches instead of 4 % (bench/RESULTS.md, "The floor again, with stored
# features")
VIEW_FLOOR = 0.35
# Once one candidate reaches VIEW_FLOOR, geometry runs and the query's own features are found: the fixed part of its
# cost (~7 ms). A further candidate then costs ~1-3 ms, its features read from their file
# (lookalike.search.feature_files), so every candidate whose best row reaches this lower floor is checked too: 0, all
# of them (bench/RESULTS.md, "Candidates' features, stored": 0.30 and 0.15 measured too). Searches that reach no
# candidate at VIEW_FLOOR (90 % of Towhee's) pay nothing more. None: only the candidates at VIEW_FLOOR.
WITH_GEOMETRY_FLOOR: float | None = 0.0
GLOBAL_CANDIDATES = 3  # the global search's first hits are candidates too (photos without a copy descriptor)
REGION_CHECKS = 1  # descriptor-decided copies checked by geometry for their matched region


def descriptor_confidence(cosine: float) -> float:
    """How sure a copy verdict from the cosine alone is: 0.9 at COPY_SURE (no outsider of the calibration sets
    reached it), rising towards 1 (the same picture re-encoded), so that copies order by how close they are."""
    return float(1.0 / (1.0 + math.exp(-(cosine - COPY_SURE) * 20.0 - math.log(9.0))))


@dataclass
class CopyQuery:
    """The query as the copy stage sees it: its copy descriptor, and its picture for geometry, loaded on first need
    (most searches never need it: a stored photo's original is then never read, nor a thumbnail decoded)."""

    vector: np.ndarray | None
    load_picture: Callable[[], Image.Image | None]
    width: int
    height: int
    views: np.ndarray | None = None  # descriptors of parts of the query (CopyDescriptor.describe_views): candidates
    _local: copies.Query | None = field(default=None, repr=False)
    _loaded: bool = field(default=False, repr=False)

    def local(self) -> copies.Query | None:
        """The query's local features, found on first need."""
        if not self._loaded:
            self._loaded = True
            picture = self.load_picture()
            if picture is not None:
                self._local = copies.Query(picture, self.width, self.height)
        return self._local


def thumbnail_picture(data: bytes | None) -> Image.Image | None:
    """A stored thumbnail as an RGB picture (None when there is none)."""
    if data is None:
        return None
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def reaches(i: int, cosines: dict[int, float], reach: dict[int, float], least: float) -> bool:
    """Whether candidate ``i`` is worth geometry at floor ``least``: one of the query's rows reaches it there, or its
    whole photo's cosine reaches CHECK_FLOOR, the floor the whole cosine was calibrated for. The views only add
    candidates: a small crop of a photo (20 % of it) can lie at 0.30-0.35 of its original on every row, under
    VIEW_FLOOR (bench/RESULTS.md, "Harder edits")."""
    cosine = cosines.get(i, -1.0)
    return reach.get(i, cosine) >= least or cosine >= CHECK_FLOOR


def _unsure(ids: list[int], cosines: dict[int, float], reach: dict[int, float], least: float) -> list[int]:
    """The candidates geometry decides at floor ``least``: those without a copy descriptor, and those that reach it
    (``reaches``) whose whole cosine is not sure."""
    return [i for i in ids if i not in cosines or reaches(i, cosines, reach, least) and cosines[i] < COPY_SURE]


def view_floor(ids: list[int], cosines: dict[int, float], reach: dict[int, float]) -> float:
    """How far down a search with views checks its candidates ``ids``: to WITH_GEOMETRY_FLOOR when geometry runs
    anyway (one of them is unsure at VIEW_FLOOR), else VIEW_FLOOR. The searcher asks it to know which candidates to
    fetch, ``judge`` to know which to check."""
    also = WITH_GEOMETRY_FLOOR
    if also is not None and also < VIEW_FLOOR and _unsure(ids, cosines, reach, VIEW_FLOOR):
        return also
    return VIEW_FLOOR


def judge(query: CopyQuery, candidates: list[Hit], cosines: dict[int, float],
          features: Callable[[Hit], copies.Features | None], regions: bool = True,
          reach: dict[int, float] | None = None, check_sure: bool = False) -> dict[int, copies.Verdict]:  # fmt: skip
    """Verdicts for the candidates that are copies or the same object (see the module docstring); ``regions``: find
    the matched region of the surest copy too (a search shows it; indexing does not need it). ``reach``: the best
    cosine of any of the query's views to a candidate, which decides whether geometry is worth a try (the verdict
    of the descriptor itself stays with the whole photo's cosine, on which it was calibrated). ``check_sure``: every
    copy the descriptor decided is checked by geometry too, and its verdict says what geometry found
    (``Verdict.confirmed``): the duplicates report, which proposes removals, asks it."""
    ids = [h.id for h in candidates]
    floor, reach = (view_floor(ids, cosines, reach), reach) if reach else (CHECK_FLOOR, cosines)
    sure = sorted((h for h in candidates if cosines.get(h.id, -1.0) >= COPY_SURE), key=lambda h: -cosines[h.id])
    decided_by_geometry = set(_unsure(ids, cosines, reach, floor))
    unsure = [h for h in candidates if h.id in decided_by_geometry]
    wanted = unsure + (sure if check_sure else sure[:REGION_CHECKS] if regions else [])
    # a mirrored copy is looked for only where it could stand: below CHECK_FLOOR a copy verdict is not kept (below)
    mirrorable = {h.id for h in wanted if h.id not in cosines or cosines[h.id] >= CHECK_FLOOR}
    geometry, looked = _geometry(query, wanted, features, mirrorable) if wanted else ({}, set())
    out: dict[int, copies.Verdict] = {}
    cosine: float | None  # of the copy descriptors: None when the candidate has none
    for h in sure:
        cosine = cosines[h.id]
        seen = geometry.get(h.id, copies.NO_MATCH)
        confidence = max(descriptor_confidence(cosine), seen.confidence if seen.copy else 0.0)
        boxes = (seen.query_box, seen.match_box) if seen.copy else (None, None)
        out[h.id] = copies.Verdict(True, confidence, seen.inliers, *boxes, mirrored=seen.mirrored and seen.copy,
                                   cosine=cosine, agreement=seen.agreement if seen.copy else None,
                                   centre_agreement=seen.centre_agreement if seen.copy else None,
                                   confirmed=seen.copy if h.id in looked else None,
                                   nested=seen.nested if seen.copy else None)  # fmt: skip
    for h in unsure:
        seen = geometry.get(h.id, copies.NO_MATCH)
        cosine = cosines.get(h.id)
        if seen.copy and cosine is not None and cosine < CHECK_FLOOR:
            # reached through a view only: a picture whose whole descriptor is this far is not an edited copy (1 % of
            # the calibration sets' copies lie below 0.32-0.49), but it may show the same object
            seen = dataclasses.replace(seen, copy=False, same_object=not seen.mirrored
                                       and seen.inliers >= copies.OBJECT_MIN_INLIERS)  # fmt: skip
        if seen.copy or seen.same_object:
            out[h.id] = dataclasses.replace(seen, cosine=cosine)
    return out


def _geometry(query: CopyQuery, hits: list[Hit], features_of: Callable[[Hit], copies.Features | None],
              mirrorable: set[int]) -> tuple[dict[int, copies.Verdict], set[int]]:  # fmt: skip
    """Local features of the query against each hit's (lookalike.search.feature_files: stored beside its thumbnail);
    a mirrored copy through the mirror image, for the ``mirrorable`` hits that are not copies as they are (matching
    against the mirror image is half of the matching's cost). Also the hits geometry could look at: where both
    photos have ``copies.LOOKABLE`` features (a blurred or nearly flat picture has a handful, and geometry finding
    nothing there says nothing of the pair)."""
    local = query.local()
    if local is None:
        return {}, set()
    features = {h.id: f for h in hits if (f := features_of(h)) is not None}
    looked = set()
    if len(local.features.descriptors) >= copies.LOOKABLE:
        looked = {i for i, f in features.items() if len(f.descriptors) >= copies.LOOKABLE}
    verdicts = copies.verify_many(local.features, features)
    missed = {i: f for i, f in features.items() if not verdicts[i].copy and i in mirrorable}
    if missed:
        for i, flipped in copies.verify_many(local.mirror(), missed, objects=False).items():
            if flipped.copy:
                qb = flipped.query_box  # in the mirror image: mapped back to the query's own pixels
                box = (query.width - qb[2], qb[1], query.width - qb[0], qb[3]) if qb is not None else None
                verdicts[i] = dataclasses.replace(flipped, query_box=box, mirrored=True)
    return verdicts, looked


REGION_COVER = 0.5  # of a region query's box that a copy's matched region must cover (see within_region)


def within_region(verdicts: dict[int, copies.Verdict], box: tuple[float, float, float, float]
                  ) -> dict[int, copies.Verdict]:  # fmt: skip
    """A region query is judged with its whole photo (a small crop has too few pixels for the descriptor or for
    geometry): a photo is the same picture as the region when the whole query is a copy of it and the box lies in
    the part that matched (at least ``REGION_COVER`` of it); its matched region is then the box carried over into
    the photo. A copy the descriptor alone decided (no region: the whole photo is the same) keeps its verdict."""
    kept = {}
    for image_id, v in verdicts.items():
        if v.query_box is None or v.match_box is None:
            kept[image_id] = v
            continue
        qx1, qy1, qx2, qy2 = v.query_box
        ix1, iy1, ix2, iy2 = max(box[0], qx1), max(box[1], qy1), min(box[2], qx2), min(box[3], qy2)
        area = max(box[2] - box[0], 1e-9) * max(box[3] - box[1], 1e-9)
        if max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1) < REGION_COVER * area:
            continue  # the box shows something the two photos do not share
        mx1, my1, mx2, my2 = v.match_box
        sx, sy = (mx2 - mx1) / max(qx2 - qx1, 1e-9), (my2 - my1) / max(qy2 - qy1, 1e-9)
        xs = sorted(mx2 - (x - qx1) * sx if v.mirrored else mx1 + (x - qx1) * sx for x in (ix1, ix2))
        match = (xs[0], my1 + (iy1 - qy1) * sy, xs[1], my1 + (iy2 - qy1) * sy)
        kept[image_id] = dataclasses.replace(v, query_box=(ix1, iy1, ix2, iy2), match_box=match)
    return kept


def order(hits: list[Hit], verdicts: dict[int, copies.Verdict]) -> list[Hit]:
    """Copies first (most confident first), then same-object photos, then the rest in their order."""
    judged = [dataclasses.replace(h, verdict=verdicts[h.id]) for h in hits if h.id in verdicts]
    judged.sort(key=lambda h: -verdicts[h.id].confidence)
    copied = [dataclasses.replace(h, score=1.0 + verdicts[h.id].confidence) for h in judged if h.copy]
    same = [dataclasses.replace(h, score=1.0 + verdicts[h.id].confidence / 2) for h in judged if h.same_object]
    return copied + same + [h for h in hits if h.id not in verdicts]
