"""What a search returns: one hit per photo, best first."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lookalike.moments import moment
from lookalike.search.copies import Verdict

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Hit:
    """``score`` orders the results (after query expansion and re-ranking); ``similarity`` is the cosine of
    the photo given and this photo (1.0: the same picture). Without expansion and re-ranking they are equal."""

    id: int
    score: float
    label: str | None
    sources: tuple[str, ...]
    width: int
    height: int
    sha256: str
    box: Box | None = None  # the matched object, when an object matched best
    detected_label: str | None = None
    similarity: float = 0.0
    verdict: Verdict | None = None  # the copy check, when this hit was checked (the top candidates are)
    detected_score: float | None = None  # how sure the detector was of ``detected_label`` (a guess, not a label)
    fields: Mapping[str, Any] = field(default_factory=dict)  # the photo's record (lookalike.fields)
    video: str | None = None  # a video's frame: the video (its source), at second ``t``
    t: float | None = None
    frames: tuple[Frame, ...] = ()  # the video's other frames among the results, in their order

    @property
    def moment(self) -> tuple[str, float] | None:
        """(video, second) when this hit is a video's frame."""
        return moment(self.sources[0]) if self.sources else None

    @property
    def copy(self) -> bool:
        return self.verdict is not None and self.verdict.copy

    @property
    def same_object(self) -> bool:
        """Not the same picture, but the same (flat) object photographed elsewhere: a cover, a package, a poster."""
        return self.verdict is not None and self.verdict.same_object

    def as_dict(self) -> dict:
        v = self.verdict
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "similarity": round(self.similarity, 6),
            "label": self.label,
            "fields": dict(self.fields),
            "sources": list(self.sources),
            "video": self.video is not None,
            "video_source": self.video,
            "t": round(self.t, 3) if self.t is not None else None,
            "frames": [{"id": f.id, "t": round(f.t, 3), "similarity": round(f.similarity, 6)} for f in self.frames],
            "width": self.width,
            "height": self.height,
            "box": [round(v, 1) for v in self.box] if self.box else None,
            "detected_label": self.detected_label,
            "detected_score": round(self.detected_score, 4) if self.detected_score is not None else None,
            "copy": self.copy,
            "copy_confidence": round(v.confidence, 4) if v is not None else None,
            "copy_region": {"query": _box(v.query_box), "match": _box(v.match_box), "mirrored": v.mirrored}
            if v is not None and self.copy else None,
            "same_object": self.same_object,
            "object_confidence": round(v.confidence, 4) if v is not None and self.same_object else None,
            "object_region": {"query": _box(v.query_box), "match": _box(v.match_box)}
            if v is not None and self.same_object else None,
        }  # fmt: skip


@dataclass(frozen=True)
class Frame:
    """Another frame of a hit's video that the search found too (less well)."""

    id: int
    t: float
    similarity: float


def by_video(hits: list[Hit]) -> list[Hit]:
    """One hit per video: its best frame, where that frame ranked, naming the video and the second, with the video's
    other frames listed on it; photos are left as they are."""
    out: list[Hit] = []
    first: dict[str, int] = {}  # video -> position of its best frame in ``out``
    for hit in hits:
        found = hit.moment
        if found is None:
            out.append(hit)
            continue
        video, t = found
        if video in first:
            best = out[first[video]]
            out[first[video]] = replace(best, frames=(*best.frames, Frame(hit.id, t, hit.similarity)))
            continue
        first[video] = len(out)
        out.append(replace(hit, video=video, t=t))
    return out


def _box(box: Box | None) -> list[float] | None:
    return [round(c, 1) for c in box] if box is not None else None


@dataclass
class SearchResult:
    hits: list[Hit]
    seconds: float
    query: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "query": self.query,
            "seconds": round(self.seconds, 5),
            "hits": [h.as_dict() for h in self.hits],
        }
