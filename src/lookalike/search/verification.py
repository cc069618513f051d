"""Copies first, then the same object: the top candidates of a search checked with local features.

Two searches propose candidates: the global one (its top ``copy_candidates`` hits) and the keypoint index (the
``instance_candidates`` photos sharing the most local features with the query, lookalike.store.keypoints), which
finds a photo of the same object that looks less alike as a whole (another angle, clutter, glare). Each candidate
is checked with local features (lookalike.search.copies): the same picture (resized, cropped, rotated, recoloured,
captioned) is a copy; the same flat object in another photo (a homography) is a same-object match. Copies move
above everything, same-object photos above every merely similar photo, and their scores become 1 + confidence and
1 + confidence / 2, so the scores shown still agree with the order (a similar photo's score is at most 1; the
similarity stays the cosine). Copies outrank same-object photos whatever their evidence: a copy's score (above
1.63) is then never reached by a photo that shows an indexed object without being a copy of it (another photo of
a product or a scene), so "this is your photo" keeps its own range. Ordering both by their agreeing points instead
gained a little on smvs_dvd_covers (top-1 0.902 -> 0.924), whose covers of one series share a frame (bench/RESULTS.md,
"Instance search"). Candidates of the keypoint index that are neither are dropped: "similar" stays the
global search's judgement. Photos indexed before local features were stored are checked from their thumbnail.

The keypoint index's side needs only the query's local features, so a photo search runs it (``prepare``) in a
thread while the model embeds the photo; the global candidates are checked once the global search returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from lookalike.search import copies
from lookalike.search.results import Hit

MIRROR_DEPTH = 1  # a mirror image is nearly the same photo to the global model: its original is the first hit


@dataclass
class LocalQuery:
    """What a search knows from the query's local features before the global search returns."""

    features: copies.Features
    mirror: copies.Features | None = None  # the mirror image's features (none for a stored photo)
    votes: list[tuple[int, int]] = field(default_factory=list)  # the keypoint index's (photo id, votes)
    candidates: dict[int, copies.Features] = field(default_factory=dict)  # features of the voted photos
    verdicts: dict[int, copies.Verdict] = field(default_factory=dict)  # and their verdicts


@dataclass
class Handoff:
    """What the side thread hands the search as soon as it knows it: the query's features, the keypoint index's
    votes."""

    features: Future = field(default_factory=Future)
    votes: Future = field(default_factory=Future)


def prepare(features: copies.Features, mirror: copies.Features | None, keypoints, n: int,
            exclude: int | None, stored: Callable[[list[int]], dict[int, bytes]],
            on_votes: Callable[[list[tuple[int, int]]], None] = lambda votes: None) -> LocalQuery:  # fmt: skip
    """The keypoint index searched with the query's strongest features (as many as a photo stores: a query's extra
    ones serve its own copy check, and would double the search), and its candidates checked."""
    local = LocalQuery(features, mirror)
    if keypoints is not None and n > 0:
        strongest = features.head(copies.MAX_FEATURES)
        local.votes = keypoints.candidates(strongest.descriptors, n, exclude)
    on_votes(local.votes)
    if not local.votes:
        return local
    found = stored([i for i, _ in local.votes])
    local.candidates = {i: copies.Features.from_bytes(data) for i, data in found.items()}
    local.verdicts = copies.verify_many(strongest, local.candidates)
    return local


@dataclass
class Checked:
    """Candidates' features and verdicts, from the keypoint index's side or the global search's."""

    candidates: dict[int, copies.Features] = field(default_factory=dict)
    verdicts: dict[int, copies.Verdict] = field(default_factory=dict)


def check_hits(hits: list[Hit], features: copies.Features, stored: Callable[[list[int]], dict[int, bytes]],
               thumbnail: Callable[[Hit], bytes | None], skip: Checked | None = None) -> Checked:  # fmt: skip
    """The global search's top hits checked with all the query's features (a caption or a frame takes many of a
    query's corners: the keypoint index's candidates are checked with its strongest only); hits already found to be
    copies in ``skip`` are not checked again."""
    out = Checked()
    todo = [h for h in hits if not (skip and h.id in skip.verdicts and skip.verdicts[h.id].copy)]
    known = skip.candidates if skip else {}
    need = [h for h in todo if h.id not in known]
    found = stored([h.id for h in need]) if need else {}
    for h in todo:
        if h.id in known:
            out.candidates[h.id] = known[h.id]
        elif (data := found.get(h.id)) is not None:
            out.candidates[h.id] = copies.Features.from_bytes(data)
        elif (thumb := thumbnail(h)) is not None:  # indexed before local features were stored
            out.candidates[h.id] = copies.from_jpeg(thumb, h.width, h.height)
    out.verdicts = copies.verify_many(features, out.candidates)
    return out


def check(
    hits: list[Hit],
    local: LocalQuery,
    stored: Callable[[list[int]], dict[int, bytes]],
    thumbnail: Callable[[Hit], bytes | None],
    depth: int,
    extra: list[Hit] | None = None,
    checked: Checked | None = None,
) -> list[Hit]:
    """``hits`` with the top ``depth`` (``checked`` already, or now) and the ``extra`` candidates (the keypoint
    index's, as hits, checked in ``local``) ordered: copies first (most inliers first), then same-object photos,
    then the rest of ``hits`` in their order."""
    query = local.features
    top = hits[:depth] if depth > 0 else []
    if checked is None:
        checked = check_hits(top, query, stored, thumbnail, Checked(local.candidates, local.verdicts))
    seen = {h.id for h in top}
    top += [h for h in extra or [] if h.id not in seen]
    if not top:
        return hits
    candidates = local.candidates | checked.candidates
    verdicts = dict(local.verdicts)
    for i, verdict in checked.verdicts.items():  # a photo both searches found: the better verdict
        if i not in verdicts or verdict.copy or verdict.inliers > verdicts[i].inliers:
            verdicts[i] = verdict
    # a mirrored copy: looked for only when nothing else is a copy, and only at the global search's first hit (the
    # global model is close to mirror-invariant: bench/copies.py finds every mirrored copy's original there)
    first = [h.id for h in hits[: min(depth, MIRROR_DEPTH)] if h.id in candidates and h.id in verdicts]
    if first and local.mirror is not None and not any(verdicts[h.id].copy for h in top if h.id in verdicts):
        for i, flipped in copies.verify_many(local.mirror, {i: candidates[i] for i in first}, objects=False).items():
            if flipped.copy and flipped.inliers > verdicts[i].inliers:
                qb = flipped.query_box  # in the mirror image: mapped back to the query's own pixels
                box = (query.width - qb[2], qb[1], query.width - qb[0], qb[3]) if qb is not None else None
                verdicts[i] = dataclasses.replace(flipped, query_box=box, mirrored=True)
    checked_hits = {h.id: dataclasses.replace(h, verdict=verdicts.get(h.id)) for h in top}
    by_inliers = sorted(checked_hits.values(), key=lambda h: -h.verdict.inliers if h.verdict else 0)
    copied = [dataclasses.replace(h, score=1.0 + h.verdict.confidence) for h in by_inliers if h.copy]
    same = [dataclasses.replace(h, score=1.0 + h.verdict.confidence / 2) for h in by_inliers if h.same_object]
    promoted = {h.id for h in copied + same}
    rest = [checked_hits.get(h.id, h) for h in hits if h.id not in promoted]
    return copied + same + rest
