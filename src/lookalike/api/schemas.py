"""The JSON the API reads and writes: one pydantic model per body, the only description of its fields.

Responses are built with the models' constructors (``HitOut.from_hit``, ``ImageOut.from_record``,
``JobOut.from_job``) and serialised by them, so the OpenAPI document, the web page (static/app.js) and the
tests see the same field names, values and rounding.
"""

import json
from typing import Annotated, Any, Literal, Self

from fastapi import Path as PathParam
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lookalike import filters
from lookalike.api import API
from lookalike.api.security import digits_only, safe_url
from lookalike.fields import NOT_UNICODE, valid_unicode
from lookalike.filters import Filter, FilterError
from lookalike.jobs.queue import Job
from lookalike.search.results import Hit
from lookalike.store.catalog import ImageRecord

MAX_LABEL = 200  # characters in a label (searches filter by labels of this length too)
MAX_ID = 2**63 - 1  # ids are 64-bit in the catalog: larger ones are refused before any lookup
ImageId = Annotated[int, BeforeValidator(digits_only), PathParam(ge=1, le=MAX_ID, description="an indexed photo's id")]
JobId = Annotated[int, BeforeValidator(digits_only), PathParam(ge=1, le=MAX_ID, description="an index job's id")]


def unicode_text(value: str) -> str:
    """A free-text string the API stores or passes on, refused (422) when it cannot be encoded as UTF-8: a lone
    surrogate (the JSON escape "\\ud800") would fail in the database, the engine or the answer instead; nor may it
    hold a NUL character, which PostgreSQL's text refuses (a label with one failed a whole upload's job there)."""
    if not valid_unicode(value):
        raise ValueError(NOT_UNICODE)
    if "\x00" in value:
        raise ValueError("a NUL character")
    return value


Text = Annotated[str, AfterValidator(unicode_text)]  # every free-text string of a body or form is one of these


def length(max_length: int, min_length: int = 0) -> AfterValidator:
    """A text's bounds, checked after ``unicode_text`` so that a lone surrogate still gets its own 422
    (pydantic's own string bounds refuse it as "unable to parse"), in pydantic's wording (its bounds on
    ``Text | None`` would count "items")."""

    def within(value: str) -> str:
        if len(value) < min_length:
            plural = "" if min_length == 1 else "s"
            raise PydanticCustomError(
                "string_too_short",
                "String should have at least {min_length} character" + plural,
                {"min_length": min_length},
            )
        if len(value) > max_length:
            raise PydanticCustomError(
                "string_too_long", "String should have at most {max_length} characters", {"max_length": max_length}
            )
        return value

    return AfterValidator(within)


def string_schema(max_length: int, min_length: int = 0) -> WithJsonSchema:
    """The bounds of ``length`` as the OpenAPI document shows them."""
    bounds = {"maxLength": max_length} | ({"minLength": min_length} if min_length else {})
    return WithJsonSchema({"type": "string"} | bounds)


Label = Annotated[str, AfterValidator(unicode_text), length(MAX_LABEL), string_schema(MAX_LABEL)]
DetectedLabel = Annotated[str, AfterValidator(unicode_text), length(100), string_schema(100)]
UrlText = Annotated[str, AfterValidator(unicode_text), length(4096), string_schema(4096)]
QueryText = Annotated[str, AfterValidator(unicode_text), length(1000, 1), string_schema(1000, 1)]
FIELDS = "the photo's record (a CSV's extra columns, a manifest's or an upload's fields): name: value"


def not_a_boolean(value: object) -> object:
    """JSON's true is not an id: pydantic's lax int took it as 1 (web review, finding 5)."""
    if isinstance(value, bool):
        raise ValueError("an id is a number, not true or false")
    return value


def original_url(image_id: int) -> str:
    return f"{API}/images/{image_id}/original"


def thumbnail_url(image_id: int) -> str:
    return f"{API}/images/{image_id}/thumbnail"


def video_url(image_id: int) -> str:
    return f"{API}/images/{image_id}/video"


# --- search ---------------------------------------------------------------------------------------------
class SearchParams(BaseModel):
    k: int = Field(default=10, ge=1, le=1000)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0, description="minimum similarity (cosine)")
    label: Label | None = None
    box: tuple[float, float, float, float] | None = None
    match: Literal["whole", "objects", "both"] | None = Field(
        default=None, description="entries compared: whole photos (default), objects, or both (default with a box)"
    )
    detected_label: DetectedLabel | None = None
    detect: bool = Field(default=False, description="also return the query photo's detected subjects")
    mode: Literal["similar", "copies"] = Field(
        default="similar",
        description="similar: copies of the query first, then similar photos; copies: only the same picture",
    )
    hide_copies: bool = Field(
        default=False, description="one hit per picture: photos that are copies of a better hit's picture are left out"
    )
    where: str | dict[str, Any] | None = Field(
        default=None,
        description='only photos whose fields pass this filter: text (brand = "acme" and price < 100 and tags '
        'contains "red") or JSON ({"and": [{"field": "price", "op": "<", "value": 100}, ...]}; ops: =, !=, <, <=, '
        ">, >=, contains, in, exists); in a multipart form, either as a string",
        examples=['brand = "acme" and price < 100'],
    )

    def filter(self) -> Filter | None:
        """``where`` read (lookalike.filters); FilterError when it cannot be."""
        w = self.where
        if w is None or w == "":
            return None
        if isinstance(w, str) and len(w) > filters.MAX_CHARS:
            raise FilterError(f"a filter has at most {filters.MAX_CHARS} characters")
        if isinstance(w, str) and w.lstrip().startswith("{"):
            try:
                w = json.loads(w)
            except (ValueError, RecursionError) as exc:
                raise FilterError(f"the filter is not JSON: {str(exc)[:200] or 'nested too deeply'}") from None
        return filters.parse(w) if isinstance(w, str) else filters.from_json(w)


class SearchJson(SearchParams):
    url: UrlText | None = Field(
        default=None,
        examples=["https://example.com/photo.jpg"],
        description="an http(s) URL of the photo (server paths are not accepted over HTTP)",
    )
    image_id: Annotated[int | None, BeforeValidator(not_a_boolean)] = Field(
        default=None, ge=1, le=MAX_ID, description="an indexed photo: more like this"
    )
    text: QueryText | None = Field(
        default=None,
        examples=["a red bicycle at night"],
        description="a description of the photos wanted (libraries of a CLIP-style model: `stats.text_search`)",
    )

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and not safe_url(value):
            raise ValueError("give an http(s) URL: files on the server cannot be searched over HTTP")
        return value

    @model_validator(mode="after")
    def _one_query(self) -> "SearchJson":
        if sum(q is not None for q in (self.url, self.image_id, self.text)) != 1:
            raise ValueError("give exactly one of 'url', 'image_id' or 'text' (or upload a photo as multipart)")
        if self.text is not None and (self.box or self.match or self.detected_label or self.detect):
            raise ValueError("a text search compares whole photos: drop box, match, detected_label and detect")
        if self.text is not None and (self.mode == "copies" or self.hide_copies):
            raise ValueError("mode 'copies' and hide_copies need a photo: a text search does not judge copies")
        return self


class HitOut(BaseModel):
    id: int
    score: float = Field(description="what the hits are ordered by (after query expansion and re-ranking)")
    similarity: float = Field(description="cosine of the query photo and this photo (1.0: the same picture)")
    label: str | None
    fields: dict[str, Any] = Field(default_factory=dict, description=FIELDS)
    source: str | None
    sources: list[str]
    width: int
    height: int
    original_url: str
    thumbnail_url: str
    box: list[float] | None = Field(description="the matched subject (x1, y1, x2, y2), when one matched best")
    detected_label: str | None = Field(
        description="the class the detector guessed for the matched subject (COCO); a guess, not the photo's label"
    )
    detected_score: float | None = Field(default=None, description="how sure the detector was of that guess (0..1)")
    is_copy: bool = Field(  # "copy" itself would shadow BaseModel.copy
        alias="copy",
        description="the same picture as the query (an exact or edited copy), by its copy descriptor or local features",
    )
    copy_confidence: float | None = Field(description="how sure the copy check is (0..1); null when not checked")
    copy_region: dict | None = Field(
        description="for a copy: the matched region in the query ('query') and in this photo ('match'), "
        "x1, y1, x2, y2 in each photo's pixels, and whether the copy is mirrored"
    )
    same_object: bool = Field(
        description="not the same picture, but the same flat object (a cover, a package, a poster) photographed "
        "elsewhere, checked by local features under perspective"
    )
    object_confidence: float | None = Field(description="how sure the same-object check is (0..1), when it matched")
    object_region: dict | None = Field(
        description="for a same-object match: where the object is in the query ('query') and in this photo "
        "('match'), x1, y1, x2, y2 in each photo's pixels"
    )
    video: bool = Field(default=False, description="this hit is a frame of a video (the video's best frame)")
    video_source: str | None = Field(default=None, description="the video the frame is from")
    t: float | None = Field(default=None, description="the frame's second in its video")
    frames: list[dict] = Field(
        default_factory=list, description="the video's other frames the search found (id, t, similarity), best first"
    )
    video_url: str | None = Field(
        default=None, description="the video itself (Range requests), to play from ``t``: append #t=SECONDS"
    )

    @classmethod
    def from_hit(cls, hit: Hit) -> Self:
        """The library's JSON of a hit (its rounding, shared with the CLI's), with the photo's URLs and its first
        source to show: an upload by its file name, not by the digest it is stored under."""
        source = hit.sources[0] if hit.sources else None
        if source and source.startswith("upload:"):
            source = "upload: " + source.split("/", 1)[-1]
        urls = {"original_url": original_url(hit.id), "thumbnail_url": thumbnail_url(hit.id),
                "video_url": video_url(hit.id) if hit.video is not None else None}  # fmt: skip
        return cls.model_validate(hit.as_dict() | {"source": source} | urls)


class SearchOut(BaseModel):
    query: dict
    took_ms: float
    hits: list[HitOut]

    @classmethod
    def of(cls, query: dict, seconds: float, hits: list[Hit]) -> Self:
        """A search's answer: what was asked, how long it took (ms, to 0.01) and the hits, best first."""
        return cls(query=query, took_ms=round(seconds * 1000, 2), hits=[HitOut.from_hit(h) for h in hits])


SEARCH_FORM = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "the query photo"},
        "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        "min_score": {"type": "number", "minimum": -1, "maximum": 1},
        "label": {"type": "string", "maxLength": 200},
        "box": {"type": "string", "description": "a region of the photo: x1,y1,x2,y2 in its pixels"},
        "match": {"type": "string", "enum": ["whole", "objects", "both"]},
        "detected_label": {"type": "string", "maxLength": 100},
        "detect": {"type": "boolean"},
        "mode": {"type": "string", "enum": ["similar", "copies"], "default": "similar"},
        "where": {"type": "string", "maxLength": 4096, "description": "a filter on the photos' fields (text or JSON)"},
    },
}


# --- photos -------------------------------------------------------------------------------------------
class ImageOut(BaseModel):
    id: int
    sha256: str
    label: str | None
    fields: dict[str, Any] = Field(default_factory=dict, description=FIELDS)
    width: int
    height: int
    format: str
    bytes: int
    added_at: float
    source: str | None
    sources: list[str]
    original_url: str
    thumbnail_url: str

    @classmethod
    def from_record(cls, rec: ImageRecord) -> Self:
        return cls(
            id=rec.id, sha256=rec.sha256, label=rec.label, fields=dict(rec.fields), width=rec.width,
            height=rec.height, format=rec.format,
            bytes=rec.bytes, added_at=rec.added_at, source=rec.sources[0] if rec.sources else None,
            sources=list(rec.sources), original_url=original_url(rec.id), thumbnail_url=thumbnail_url(rec.id),
        )  # fmt: skip


class FieldsPatch(BaseModel):
    """PATCH /images/{id}: fields to set (a null removes one); the others stay."""

    model_config = ConfigDict(extra="forbid")
    fields: dict[str, Any] = Field(description="name: value (string, number, boolean, list of strings) or null")


class ImagePage(BaseModel):
    total: int = Field(description="photos matching (all pages)")
    offset: int
    images: list[ImageOut]


UPLOAD_FORM = {
    "type": "object", "required": ["images"],
    "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                   "label": {"type": "string"}, "objects": {"type": "boolean"},
                   "fields": {"type": "string", "description": "the photos' record as a JSON object, e.g. "
                              '{"title": "Blue mug", "price": 12.5, "url": "https://shop.example/mug"}'}},
}  # fmt: skip


class UploadItem(BaseModel):
    name: str | None
    id: int
    near_duplicate_of: int | None = Field(
        default=None, description="a photo already in the library that this one is the same picture as (edited)"
    )
    frames: list[int] | None = Field(
        default=None, description="a video's chosen frames, by second (``id`` is the first's); null for a photo"
    )


class Rejection(BaseModel):
    name: str | None
    reason: str


# --- jobs ---------------------------------------------------------------------------------------------
class JobOut(BaseModel):
    id: int
    kind: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    paths: list[str]
    label: str | None
    prune: bool
    objects: bool
    done: int = Field(description="photos processed")
    total: int | None = Field(description="photos found, once the sources are listed")
    listed: bool
    added: int
    duplicates: int
    unchanged: int
    rejected: int = Field(description="photos refused for a reason of their own (not a photo, unreadable...)")
    owed: int = Field(default=0, description="photos of chunks that failed for good: run the job again for them")
    errors: list[dict] = Field(description="the first rejected sources, with reasons")
    rate: float = Field(description="photos per second")
    elapsed: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    workers: list[str] = Field(description="workers running part of it now")

    @classmethod
    def from_job(cls, job: Job) -> Self:
        """The queue's JSON of a job (the CLI prints the same), with its rounding of rate and elapsed."""
        return cls.model_validate(job.as_dict())


class UploadOut(BaseModel):
    added: list[UploadItem]
    duplicates: list[UploadItem]
    rejected: list[Rejection]
    job: JobOut | None = Field(default=None, description="set when the job is still running (status 202)")

    def body(self) -> dict[str, Any]:
        """The JSON of the answer, sent with its own status (201, 200 or 202): ``job`` only while it runs."""
        return self.model_dump(mode="json", by_alias=True, exclude={"job"} if self.job is None else None)


class JobList(BaseModel):
    jobs: list[JobOut]


class IndexJobRequest(BaseModel):
    paths: list[Text] = Field(min_length=1, description="folders, CSVs, URL lists, files or URLs on the server")
    label: Label | None = None
    prune: bool = False
    prune_empty: bool = Field(
        default=False, description="prune even in a folder (named or below it) that lists no file at all (prune "
        "leaves one alone: an unmounted disk looks the same); implies prune"
    )
    objects: bool = Field(default=False, description="also index each detected subject")


# --- the library --------------------------------------------------------------------------------------
class DuplicatesOut(BaseModel):
    groups: list[dict] = Field(
        description="the same picture held as several photos, each group: group, keep (id), remove (ids), photos "
        "(id, keep, confidence: how sure the check is that it is a copy of another of its group, source, width, "
        "height, thumbnail_url, original_url), pairs (a, b, confidence)"
    )
    exact: list[dict] = Field(default=[], description="the same bytes under several paths (stored once): id, sources")


class StatsOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    images: int
    sources: int
    labels: int
    objects: int
    photos_with_objects: int
    videos: int = Field(default=0, description="videos indexed, each one item")
    video_frames: int = Field(default=0, description="their chosen frames, counted among the images")
    model: str
    text_search: bool = Field(description="the model embeds text too: searches may give 'text'")
    dim: int
    index_dim: int
    backend: str
    index: str
    vectors: int
    whitening: str
