"""The library's duplicates: exact ones (the same bytes under several paths, stored once) and near ones
(the same picture resized, recompressed, cropped, captioned ...), grouped.

Each photo's nearest neighbours in the copy collection (the vector engine's index of copy descriptors) are judged
as a search judges its candidates (lookalike.search.verification: the descriptor where it is sure, geometry on
the thumbnails in between); photos joined by a "copy" verdict form a group (union-find). A report proposes removals
and one false pair merges two groups, so a geometric copy joins only when the pixels agree in the overlap's centre
too (copies.Verdict.same_picture_throughout: two photos of different covers on the same printed page, or two
screenshots in the same app frame, are copies to geometry and to the pixels all around), only when one photo lies
(nearly) whole in the other (two photos of a scene taken a step apart share a part of each), and a copy the
descriptor is sure of only when geometry finds it too (two photos of one shoot can lie above COPY_SURE); the pixels
must agree more than a search asks (copies.SAME_PICTURE: shots of one scene a moment apart agree in most cells).
Groups are chains, so a group keeps the photo that shows its picture best and proposes removing only the photos
lying whole in that one (keep_and_remove), and none while a file of it changed since it was indexed. Each
photo's centre is searched too, as a search's views are (a photo in a screenshot frame is nearer other framed
photos than its original). Cost: two searches of the copy collection per photo, so a report grows with the library
like the index does, never quadratically (bench/RESULTS.md, "Copies"). Photos without a copy descriptor
(`lookalike copies` fills them in) are skipped, and so are videos' frames: frames a second apart in a pan are nearly
the same picture, but they are moments of a video, not copies to remove.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.moments import FRAME_FORMAT
from lookalike.search import feature_files, verification
from lookalike.search.copies import NESTED, Verdict, area, share
from lookalike.search.results import Hit
from lookalike.store.catalog import Catalog, ImageRecord, Vectors
from lookalike.store.images import ImageStore
from lookalike.store.vectors import MISSING, VectorIndex

PER_PHOTO = 5  # neighbours judged per photo
SHOWN_TIE = 0.9  # photos showing a group's picture with this share of the most pixels show it as well (keep_and_remove)
# the least pixel agreement, overall and in the centre, of a pair by which a photo may be proposed for removal: a
# report groups two photos at copies.SAME_PICTURE (0.7), but two shots of one scene reach that too (a burst, an
# animal that moved); of the pairs bench/dupquality.py's reports joined, 91-95 % of known copies' agree at 0.85 on
# each of the four shared sets, 15-37 % of the other pairs (bench/RESULTS.md): removing is what cannot be undone
REMOVABLE = 0.85


@dataclass
class Group:
    ids: list[int]  # the one kept first (see keep_and_remove), then the others, largest first
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (id, id, copy confidence)
    remove: list[int] = field(default_factory=list)  # proposed for removal: each lies whole in the kept photo
    changed: list[int] = field(default_factory=list)  # files changed or gone since indexed: nothing is proposed


@dataclass(frozen=True)
class Pair:
    """Two photos the report joined: how sure, which of the two lie whole in the other (both for an edited copy of
    the whole picture; the crop alone for a crop) and how many pixels of each show what they share."""

    a: int
    b: int
    confidence: float
    inside: frozenset[int]
    shown: tuple[float, float]  # the matched region's area in a's pixels, in b's
    agreement: float | None = None  # the lower of the pixels' agreement overall and in the centre; None: not looked

    def merged(self, other: Pair) -> Pair:
        """The pair as judged from both of its photos: the surer confidence, inside by either look."""
        shown = (max(self.shown[0], other.shown[0]), max(self.shown[1], other.shown[1]))
        looks = [x for x in (self.agreement, other.agreement) if x is not None]
        return Pair(self.a, self.b, max(self.confidence, other.confidence), self.inside | other.inside, shown,
                    max(looks) if looks else None)  # fmt: skip

    def removable(self) -> bool:
        """Whether one photo of the pair may be proposed for removal by it (REMOVABLE; a pair geometry could not
        look at, a plain or blurred picture, as before)."""
        return self.agreement is None or self.agreement >= REMOVABLE


def judged_pair(image_id: int, other: int, verdict: Verdict, size: tuple[int, int], other_size: tuple[int, int]
                ) -> Pair:  # fmt: skip
    """The pair a verdict joins. A photo lies inside the other when its matched region covers copies.NESTED of its
    frame; a verdict without regions (the descriptor alone decided) is the same whole picture both ways."""
    if verdict.query_box is None or verdict.match_box is None:
        inside, shown = {image_id, other}, (float(size[0] * size[1]), float(other_size[0] * other_size[1]))
    else:
        inside = {i for i, box, (w, h) in ((image_id, verdict.query_box, size), (other, verdict.match_box, other_size))
                  if share(box, w, h) >= NESTED}  # fmt: skip
        shown = (area(verdict.query_box), area(verdict.match_box))  # pixels of each photo the pair shares
    if image_id > other:
        shown = (shown[1], shown[0])
    return Pair(min(image_id, other), max(image_id, other), verdict.confidence, frozenset(inside), shown,
                verdict.least_agreement)  # fmt: skip


def _find(parent: dict[int, int], i: int) -> int:
    while parent.setdefault(i, i) != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def near_duplicates(copies: VectorIndex, catalog: Catalog, images: ImageStore, min_confidence: float = 0.0,
                    on_progress: Callable[[int, int], None] | None = None,
                    keep_features: bool = True) -> list[Group]:  # fmt: skip
    """Groups of two or more photos that are the same picture: ``copies`` is the active space's copy collection;
    ``keep_features``: candidates' local features are kept in ``images`` (lookalike.search.feature_files)."""
    total = len(copies)
    parent: dict[int, int] = {}
    pairs: list[Pair] = []
    done = 0
    for chunk in catalog.iter_copy_vectors(chunk=256):
        found, scores = copies.search(chunk.matrix, PER_PHOTO + 1)
        by_centre = _reached_by_centres(copies, catalog.copy_vectors(chunk.ids.tolist(), parts=True))
        near = {int(i) for row in found for i in row if i != MISSING} | {j for r in by_centre.values() for j in r}
        records = catalog.get_many(sorted(near | set(chunk.ids.tolist())))
        records = {i: r for i, r in records.items() if r.format != FRAME_FORMAT}
        for image_id, vec, row, cos in zip(chunk.ids.tolist(), chunk.matrix, found, scores, strict=True):
            cosines = {int(i): float(c) for i, c in zip(row, cos, strict=True)
                       if i != MISSING and int(i) != image_id and c >= verification.CHECK_FLOOR and int(i) in records}
            reach = {i: c for i, c in by_centre.get(image_id, {}).items() if i in records}
            extra = np.asarray([i for i in reach if i not in cosines], dtype=np.int64)
            if len(extra):  # their whole photo's cosine, which the copy verdict is calibrated on
                cosines |= dict(zip(extra.tolist(), (copies.vectors(extra) @ vec).tolist(), strict=True))
            if not cosines or image_id not in records:
                continue
            reach = {i: max(c, reach.get(i, -1.0)) for i, c in cosines.items()}
            for other, verdict in _judge(images, records, image_id, vec, cosines, reach, keep_features).items():
                if verdict.same_picture_throughout() and verdict.confidence >= min_confidence:
                    size = (records[image_id].width, records[image_id].height)
                    other_size = (records[other].width, records[other].height)
                    pairs.append(judged_pair(image_id, other, verdict, size, other_size))
                    parent[_find(parent, image_id)] = _find(parent, other)
        done += len(chunk)
        if on_progress:
            on_progress(min(done, total), total)
    return _groups(catalog, parent, pairs)


def _reached_by_centres(copies: VectorIndex, centres: Vectors) -> dict[int, dict[int, float]]:
    """Per photo, the photos whose whole descriptor its centre's reaches at VIEW_FLOOR, as a search's views do. A
    photo shown inside a screenshot frame is nearer the other framed photos than its original by its whole
    descriptor (on Corel-1k its original was among the 5 nearest for 19 of 30), by its centre within them for 29."""
    if not len(centres):
        return {}
    found, scores = copies.search(centres.matrix, PER_PHOTO + 1)
    return {image_id: {int(j): float(c) for j, c in zip(row, cos, strict=True)
                       if j != MISSING and int(j) != image_id and c >= verification.VIEW_FLOOR}
            for image_id, row, cos in zip(centres.ids.tolist(), found, scores, strict=True)}  # fmt: skip


def _judge(images: ImageStore, records: dict[int, ImageRecord], image_id: int, vec: np.ndarray,
           cosines: dict[int, float], reach: dict[int, float], keep_features: bool) -> dict[int, Verdict]:  # fmt: skip
    rec = records[image_id]
    hits = [Hit(i, cosines[i], records[i].label, records[i].sources, records[i].width, records[i].height,
                records[i].sha256) for i in cosines]  # fmt: skip
    # its thumbnail, for geometry on the undecided pairs and the matched regions the duplicates view shows
    query = verification.CopyQuery(vec, lambda: verification.thumbnail_picture(images.get("thumbnail", rec.sha256)),
                                   rec.width, rec.height)  # fmt: skip
    return verification.judge(query, hits, cosines,
                              lambda h: feature_files.candidate_features(images, h.sha256, h.width, h.height,
                                                                         keep_features), reach=reach,
                              check_sure=True)  # fmt: skip


def _groups(catalog: Catalog, parent: dict[int, int], pairs: list[Pair]) -> list[Group]:
    members: dict[int, list[int]] = {}
    for i in parent:
        members.setdefault(_find(parent, i), []).append(i)
    records = catalog.get_many([i for m in members.values() for i in m])
    joined: dict[tuple[int, int], Pair] = {}
    for p in pairs:
        seen = joined.get((p.a, p.b))
        joined[(p.a, p.b)] = p if seen is None else p.merged(seen)
    by_group: dict[int, list[Pair]] = {}
    for _, p in sorted(joined.items()):  # each pair to its group once: a pass over all pairs per group was quadratic
        by_group.setdefault(_find(parent, p.a), []).append(p)
    groups = []
    for root, group in members.items():
        if len(group) < 2:
            continue
        own = by_group.get(root, [])
        keep, remove = keep_and_remove(group, own, {i: records[i].width * records[i].height for i in group})
        rest = sorted((i for i in group if i != keep), key=lambda i: (-records[i].width * records[i].height, i))
        groups.append(Group([keep, *rest], [(p.a, p.b, p.confidence) for p in own], remove))
    groups.sort(key=lambda g: g.ids[0])
    return groups


def keep_and_remove(group: list[int], pairs: list[Pair], pixels: dict[int, int]) -> tuple[int, list[int]]:
    """The photo a group keeps, and those proposed for removal. Kept: of the photos that show the shared picture
    with the most pixels (their matched regions), the largest, then the oldest: the original rather than a screenshot
    of it, which is larger but shows the picture smaller inside its frame (the largest photo was a screenshot in every
    known group of bench/dupquality.py's layouts; the original is kept in 23-27 of 30 on Towhee, Corel-1k and the DVD
    covers now, bench/RESULTS.md). Removed: only photos that lie whole in the kept one by a pair of their own whose
    pixels agree at REMOVABLE. Groups are chains (A copies B, B copies C), and a photo joined through another may
    show what the kept one does not: a photo's two halves, each cropped and enlarged, are one group with it, and
    removing by the group alone lost one half. A screenshot holds more than the photo it shows (its frame), so it
    stays too."""
    shown: dict[int, float] = {}
    for p in pairs:
        shown[p.a], shown[p.b] = max(shown.get(p.a, 0.0), p.shown[0]), max(shown.get(p.b, 0.0), p.shown[1])
    most = max(shown.get(i, 0.0) for i in group)
    # within SHOWN_TIE of the most: the same (the matched regions are estimated, a crop's to a pixel or two)
    keep = max(group, key=lambda i: (shown.get(i, 0.0) >= SHOWN_TIE * most, pixels[i], -i))
    order = sorted(group, key=lambda i: (-pixels[i], i))
    remove = [i for i in order if i != keep and any({p.a, p.b} == {i, keep} and i in p.inside and p.removable()
                                                    for p in pairs)]  # fmt: skip
    return keep, remove


def exact_duplicates(catalog: Catalog) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Photos stored once but found under several paths: (id, its paths)."""
    ids = catalog.ids().tolist()
    for start in range(0, len(ids), 1000):
        for image_id, rec in sorted(catalog.get_many(ids[start : start + 1000]).items()):
            if len(rec.sources) > 1:
                yield image_id, rec.sources


def as_rows(groups: list[Group], records: dict[int, ImageRecord]) -> list[dict[str, Any]]:
    """Groups as rows: each photo with whether it is kept, and how sure the check is that it is a copy of another
    photo of its group (its best pair's confidence)."""
    rows = []
    for n, g in enumerate(groups, 1):
        sure: dict[int, float] = {}
        for a, b, c in g.pairs:
            sure[a], sure[b] = max(sure.get(a, 0.0), c), max(sure.get(b, 0.0), c)
        photos = [{"id": i, "keep": i not in g.remove, "confidence": round(sure.get(i, 0.0), 3),
                   "source": records[i].sources[0] if records[i].sources else None, "width": records[i].width,
                   "height": records[i].height} for i in g.ids]  # fmt: skip
        rows.append({"group": n, "keep": g.ids[0], "remove": g.remove, "changed": g.changed, "photos": photos,
                     "pairs": [{"a": a, "b": b, "confidence": round(c, 3)} for a, b, c in g.pairs]})  # fmt: skip
    return rows


def report(copies: VectorIndex, catalog: Catalog, images: ImageStore, min_confidence: float = 0.0,
           on_progress: Callable[[int, int], None] | None = None, keep_features: bool = True,
           changed: Callable[[list[str]], set[str]] | None = None) -> dict[str, Any]:  # fmt: skip
    """The whole duplicates report, as the CLI prints it and the API returns it: the near-duplicate groups (``groups``:
    keep, remove, photos with their confidence) and the exact ones (``exact``: a photo's several paths).
    ``changed``: which of some sources differ on disk from what was indexed; a group holding one proposes no
    removal (its verdicts judged the photos as indexed: a file since replaced by another picture made the report
    remove the last copy of the first)."""
    groups = near_duplicates(copies, catalog, images, min_confidence, on_progress, keep_features)
    records = catalog.get_many([i for g in groups for i in g.ids])
    if changed is not None and groups:
        differ = changed([s for g in groups for i in g.ids for s in records[i].sources])
        for g in groups:
            # a photo no source points at (debris of a run killed before it removed the old version of a
            # changed file: `lookalike doctor` reports it) is no photo to keep either
            g.changed = [i for i in g.ids if differ.intersection(records[i].sources) or not records[i].sources]
            g.remove = [] if g.changed else g.remove
    exact = [{"id": i, "sources": list(sources)} for i, sources in exact_duplicates(catalog)]
    return {"groups": as_rows(groups, records), "exact": exact}
