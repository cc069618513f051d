"""The FastAPI service: JSON API under /api/v1, the web page at /, metrics at /metrics.

Every route is a thin adapter over ``Library``; CPU-heavy calls (decoding,
inference, index writes) run in worker threads so the event loop stays free, and
searches interleave with index jobs at photo granularity.
"""

import hashlib
import logging
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.datastructures import UploadFile

from lookalike import __version__
from lookalike.api import health, problems
from lookalike.api.limits import BodyLimitMiddleware
from lookalike.api.metrics import Metrics, MetricsMiddleware
from lookalike.api.problems import LastResort, Problem
from lookalike.api.security import Keys, check_source, digits_only, public_error, public_stats, safe_url
from lookalike.config import Settings
from lookalike.imaging import set_decode_memory
from lookalike.ingest.sources import SourceItem
from lookalike.jobs.worker import Worker, host_affinity, item_json, store_affinity, worker_name
from lookalike.library import BusyError, Hit, Library, NotFoundError
from lookalike.maintenance import Background
from lookalike.memory import return_freed_memory
from lookalike.store import retry
from lookalike.store.errors import Unavailable
from lookalike.store.images import Kind
from lookalike.store.s3 import S3ImageStore

API = "/api/v1"
log = logging.getLogger("lookalike")
STATIC = Path(str(resources.files("lookalike.api") / "static"))
DOCS_ASSETS = Path(str(resources.files("fastapi_offline") / "static"))  # Swagger UI 5 and ReDoc, packaged
MIME = {
    "JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp",
    "TIFF": "image/tiff", "MPO": "image/jpeg", "ICO": "image/x-icon", "HEIF": "image/heic",
}  # fmt: skip (a camera RAW original is sent as application/octet-stream: browsers do not show them)
IMAGE_TYPES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or a camera RAW file"
CHUNK = 2**20  # photos larger than this are sent in pieces of this size (the event loop serves others between)


MAX_LABEL = 200  # characters in a label (searches filter by labels of this length too)
MAX_ID = 2**63 - 1  # ids are 64-bit in the catalog: larger ones are refused before any lookup
ImageId = Annotated[int, BeforeValidator(digits_only), PathParam(ge=1, le=MAX_ID, description="an indexed photo's id")]
JobId = Annotated[int, BeforeValidator(digits_only), PathParam(ge=1, le=MAX_ID, description="an index job's id")]
M = TypeVar("M", bound=BaseModel)


class SearchParams(BaseModel):
    k: int = Field(default=10, ge=1, le=1000)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0, description="minimum similarity (cosine)")
    label: str | None = Field(default=None, max_length=200)
    box: tuple[float, float, float, float] | None = None
    match: Literal["whole", "objects", "both"] | None = Field(
        default=None, description="entries compared: whole photos (default), objects, or both (default with a box)"
    )
    detected_label: str | None = Field(default=None, max_length=100)
    detect: bool = Field(default=False, description="also return the query photo's detected subjects")
    mode: Literal["similar", "copies"] = Field(
        default="similar",
        description="similar: copies of the query first, then similar photos; copies: only the same picture",
    )
    hide_copies: bool = Field(
        default=False, description="one hit per picture: photos that are copies of a better hit's picture are left out"
    )


class SearchJson(SearchParams):
    url: str | None = Field(
        default=None,
        max_length=4096,
        examples=["https://example.com/photo.jpg"],
        description="an http(s) URL of the photo (server paths are not accepted over HTTP)",
    )
    image_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="an indexed photo: more like this")
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
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
    source: str | None
    sources: list[str]
    width: int
    height: int
    original_url: str
    thumbnail_url: str
    box: list[float] | None = Field(description="the matched subject (x1, y1, x2, y2), when one matched best")
    detected_label: str | None = Field(description="the class the detector guessed for the matched subject (COCO); "
                                      "a guess, not the photo's label")
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


class SearchOut(BaseModel):
    query: dict
    took_ms: float
    hits: list[HitOut]


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
    },
}


class ImageOut(BaseModel):
    id: int
    sha256: str
    label: str | None
    width: int
    height: int
    format: str
    bytes: int
    added_at: float
    source: str | None
    sources: list[str]
    original_url: str
    thumbnail_url: str


class ImagePage(BaseModel):
    total: int = Field(description="photos matching (all pages)")
    offset: int
    images: list[ImageOut]


class UploadItem(BaseModel):
    name: str | None
    id: int
    near_duplicate_of: int | None = Field(
        default=None, description="a photo already in the library that this one is the same picture as (edited)"
    )


class Rejection(BaseModel):
    name: str | None
    reason: str


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


class UploadOut(BaseModel):
    added: list[UploadItem]
    duplicates: list[UploadItem]
    rejected: list[Rejection]
    job: JobOut | None = Field(default=None, description="set when the job is still running (status 202)")


class DuplicatesOut(BaseModel):
    groups: list[dict] = Field(
        description="the same picture held as several photos, each group: group, keep (id), remove (ids), photos "
        "(id, keep, confidence: how sure the check is that it is a copy of another of its group, source, width, "
        "height, thumbnail_url, original_url), pairs (a, b, confidence)"
    )
    exact: list[dict] = Field(default=[], description="the same bytes under several paths (stored once): id, sources")


class JobList(BaseModel):
    jobs: list[JobOut]


class StatsOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    images: int
    sources: int
    labels: int
    objects: int
    photos_with_objects: int
    model: str
    text_search: bool = Field(description="the model embeds text too: searches may give 'text'")
    dim: int
    index_dim: int
    backend: str
    index: str
    vectors: int
    whitening: str


class IndexJobRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description="folders, CSVs, URL lists, files or URLs on the server")
    label: str | None = Field(default=None, max_length=MAX_LABEL)
    prune: bool = False
    objects: bool = Field(default=False, description="also index each detected subject")


class State:
    """What the running service holds; the library is opened in the background so /healthz answers at once."""

    def __init__(self, settings: Settings, library: Library | None) -> None:
        self.settings = settings
        self.library = library
        self.follow: Background | None = None
        self.worker: Worker | None = None
        self.error: str | None = None
        self.waiting: str | None = None  # why the library is not open yet (a part it needs is unavailable)
        self.ready = threading.Event()
        self.duplicates_lock = threading.Lock()
        self.metrics = Metrics()
        if library is not None:
            self._opened(library)

    def _opened(self, library: Library) -> None:
        self.library = library
        # photos that other processes add or remove are found (or gone) within sync_interval. A library passed in
        # opened for another role (a test's, a tool's) is served as it is: it refreshes on its searches and
        # maintains after its runs, as the CLI does
        if library.role == "service":
            self.follow = Background(library.spaces, library.maintenance_due, library.maintain).start()
        if self.settings.serve_worker:  # the embedded default needs no extra process to run index jobs
            self.worker = library.worker(f"serve:{worker_name()}")
            self.worker.start_thread()
        self.metrics.images.set_function(lambda: library.catalog.count())
        self.ready.set()

    def open(self) -> None:
        """Open the library in the background; while the catalog, engine or store is unavailable, try again
        with capped backoff (readiness says why it waits); any other error is final (shown by /healthz)."""
        try:
            library = retry.again(self._open_once, lambda exc: isinstance(exc, Unavailable), float("inf"))
            self.waiting = None
            self._opened(library)
        except Exception as exc:  # shown by /healthz and 503s, without paths or messages: those are logged
            problems.log.exception("the library could not be opened")
            self.error = public_error(exc)

    def _open_once(self) -> Library:
        library = None
        try:
            library = Library(self.settings, role="service")
            _ = library.space, library.embedder  # the slow part: load index and model before serving
            try:
                health.warm_up(library)  # what the first search needs, loaded before saying ready
            except Unavailable:
                raise
            except Exception:  # a warm-up that fails must not keep the service down: the first search will tell
                log.exception("warming up with a first search failed")
            return library
        except Unavailable as exc:
            self.waiting = f"waiting for {exc.part}; the service's log has the details"
            log.warning("waiting for %s: %s", exc.part, exc)
            if library is not None:
                library.close()
            raise


def create_app(settings: Settings | None = None, library: Library | None = None) -> FastAPI:
    settings = settings or (library.settings if library else Settings())
    return_freed_memory()
    set_decode_memory(settings.max_decode_memory)
    state = State(settings, library)
    owns_library = library is None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not state.ready.is_set():
            threading.Thread(target=state.open, name="lookalike-open", daemon=True).start()
        yield
        if state.worker is not None:
            state.worker.stop()
        if state.follow is not None:
            state.follow.stop()
        if owns_library and state.library is not None:
            state.library.close()

    app = FastAPI(
        title="Lookalike",
        version=__version__,
        description="Reverse image search: upload a photo, get the most similar indexed photos.",
        redirect_slashes=False,  # the redirect's Location was built from the caller's Host header: 404 instead
        lifespan=lifespan,
        docs_url=None,  # served below, from the package (no CDN) and behind the read key when there is one
        redoc_url=None,
        openapi_url=None,
    )
    app.state.lookalike = state
    problems.install(app)
    keys = Keys(settings)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(LastResort)

    # --- dependencies ------------------------------------------------------------------
    def ready_library() -> Library:
        if state.error:
            raise Problem(503, "Library unavailable", state.error)
        if not state.ready.is_set() or state.library is None:
            raise Problem(503, "Loading", state.waiting or "the index and model are loading; retry in a few seconds")
        if state.follow is not None and state.follow.away:  # an outage: its index may be behind, its writes fail
            raise Problem(503, "Service unavailable", f"{state.follow.away}; retry shortly")
        return state.library

    Lib = Annotated[Library, Depends(ready_library)]
    read = [Depends(keys.read)]
    write = [Depends(keys.write)]

    def hit_json(hit: Hit) -> dict:
        source = hit.sources[0] if hit.sources else None
        if source and source.startswith("upload:"):
            source = "upload: " + source.split("/", 1)[-1]
        return {
            "id": hit.id, "score": round(hit.score, 6), "similarity": round(hit.similarity, 6), "label": hit.label,
            "source": source,
            "sources": list(hit.sources), "width": hit.width, "height": hit.height,
            "original_url": f"{API}/images/{hit.id}/original", "thumbnail_url": f"{API}/images/{hit.id}/thumbnail",
            "box": [round(v, 1) for v in hit.box] if hit.box else None, "detected_label": hit.detected_label,
            **{key: d[key] for d in (hit.as_dict(),) for key in ("detected_score", "copy", "copy_confidence",
                                                             "copy_region", "same_object", "object_confidence",
                                                             "object_region")},
        }  # fmt: skip

    def validated(model: type[M], data: dict) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None

    def upload_bytes(upload: UploadFile) -> None:
        ctype = (upload.content_type or "").split(";")[0].strip().lower()
        if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise Problem(415, "Unsupported media type", f"{upload.filename or 'the file'} is {ctype}; "
                          f"upload a photo ({IMAGE_TYPES})")  # fmt: skip

    # --- search ---------------------------------------------------------------------------
    search_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": SEARCH_FORM},
        "application/json": {"schema": SearchJson.model_json_schema(ref_template="#/components/schemas/{model}")},
    }}}  # fmt: skip

    @app.post(f"{API}/search", dependencies=read, summary="Search by photo upload, URL, indexed image id or text",
              response_model=SearchOut, openapi_extra=search_body)  # fmt: skip
    async def search(request: Request, lib: Lib) -> dict:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=20)
            upload = form.get("image") or form.get("file")
            if not isinstance(upload, UploadFile):
                raise Problem(422, "Invalid parameters", "multipart field 'image' with the photo is required")
            upload_bytes(upload)
            fields: dict[str, str | list[str]] = {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
            if isinstance(box := fields.get("box"), str):
                fields["box"] = [p for p in box.replace(" ", "").split(",") if p]
            params = validated(SearchParams, fields)
            query: bytes | str | int = await upload.read()
            kind = "upload"
        elif ctype == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise Problem(400, "Malformed JSON", "the request body is not valid JSON") from None
            except RecursionError:
                raise Problem(400, "Malformed JSON", "the JSON body is nested too deeply") from None
            if not isinstance(body, dict):
                raise Problem(422, "Invalid parameters", "the JSON body must be an object")
            params = validated(SearchJson, body)
            if params.text is not None:
                result = await run_in_threadpool(lib.search_text, params.text, params.k, params.min_score, params.label)
                state.metrics.searches.labels("text").inc()
                return {"query": result.query | {"kind": "text"}, "took_ms": round(result.seconds * 1000, 2),
                        "hits": [hit_json(h) for h in result.hits]}  # fmt: skip
            if params.url is not None:
                query, kind = params.url, "url"
            else:
                assert params.image_id is not None  # SearchJson._one_query: exactly one of url, image_id, text
                query, kind = params.image_id, "image_id"
        else:
            detail = "send multipart/form-data with an 'image' file, or JSON with 'url', 'image_id' or 'text'"
            raise Problem(415, "Unsupported media type", detail)
        result = await run_in_threadpool(
            lib.search, query, params.k, params.min_score, params.label, params.box, params.match,
            params.detected_label, params.mode == "copies", params.hide_copies,
        )  # fmt: skip
        state.metrics.searches.labels(kind).inc()
        info = result.query | {"kind": kind}
        if params.detect:
            photo = query if isinstance(query, bytes) else await run_in_threadpool(_query_bytes, lib, query)
            detections, _ = await run_in_threadpool(lib.detect, photo)
            info["objects"] = [d.as_dict() for d in detections]
        return {
            "query": info,
            "took_ms": round(result.seconds * 1000, 2),
            "hits": [hit_json(h) for h in result.hits],
        }

    # --- images -----------------------------------------------------------------------------
    upload_body = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["images"],
        "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                       "label": {"type": "string"}, "objects": {"type": "boolean"}},
    }}}}}  # fmt: skip

    @app.post(f"{API}/images", dependencies=write, summary="Upload photos into the library",
              openapi_extra=upload_body, response_model=UploadOut, status_code=201,
              responses={200: {"model": UploadOut, "description": "nothing new (duplicates or rejections only)"},
                         202: {"model": UploadOut, "description": "still indexing: follow the job"}})  # fmt: skip
    async def upload_images(request: Request, lib: Lib) -> JSONResponse:
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise Problem(415, "Unsupported media type", "send multipart/form-data with one or more 'images' files")
        form = await request.form(max_files=1000, max_fields=20)
        uploads = [v for k, v in form.multi_items() if k in ("images", "image", "file") and isinstance(v, UploadFile)]
        if not uploads:
            raise Problem(422, "Invalid parameters", "no files: send them in multipart field 'images'")
        label_field = form.get("label")
        label = label_field if isinstance(label_field, str) and label_field else None
        if label is not None and len(label) > MAX_LABEL:
            raise Problem(422, "Invalid parameters", f"label: at most {MAX_LABEL} characters")
        objects = str(form.get("objects", "")).lower() in ("1", "true", "yes", "on")
        files, rejected = [], []
        for up in uploads:
            try:
                upload_bytes(up)
            except Problem as exc:
                rejected.append({"name": up.filename, "reason": exc.detail})
                continue
            files.append((up.filename or "photo", await up.read()))
        added: list[dict] = []
        duplicates: list[dict] = []
        status = 201
        if files:
            # durable: the bytes go to the image store, then a job is queued; any worker runs it, and this
            # request waits for it (LOOKALIKE_UPLOAD_WAIT), so a crash after this point loses nothing
            job_id, sources = await run_in_threadpool(_queue_uploads, lib, files, label, objects)
            if state.worker is not None:
                state.worker.wake.set()
            job = await run_in_threadpool(lib.jobs.wait, job_id, settings.upload_wait)
            assert job is not None  # queued just now: jobs are not deleted
            if not job.finished:
                body = {"added": [], "duplicates": [], "rejected": rejected, "job": job.as_dict()}
                return JSONResponse(body, status_code=202, headers={"Location": f"{API}/jobs/{job_id}"})
            for (name, _), src in zip(files, sources, strict=True):
                outcome = job.items.get(src) or {"rejected": job.error or "not indexed"}
                if "rejected" in outcome:
                    rejected.append({"name": name, "reason": outcome["rejected"]})
                else:
                    (added if outcome["new"] else duplicates).append(
                        {"name": name, "id": outcome["id"], "near_duplicate_of": outcome.get("near_duplicate_of")})
            state.metrics.indexed.inc(len(added))
        state.metrics.rejected.inc(len(rejected))
        body = {"added": added, "duplicates": duplicates, "rejected": rejected}
        return JSONResponse(body, status_code=status if added else 200)

    @app.get(f"{API}/images", dependencies=read, summary="Browse the library, a page at a time",
             response_model=ImagePage)  # fmt: skip
    async def list_images(
        lib: Lib,
        sort: Literal["newest", "oldest", "name"] = "newest",
        label: str | None = Query(None, max_length=200),
        limit: int = Query(48, ge=1, le=500),
        offset: int = Query(0, ge=0, le=2**31),
        name: str | None = Query(None, max_length=200, description="only photos whose file name contains this"),
    ) -> dict:
        total, records = await run_in_threadpool(lib.catalog.list_images, sort, label, limit, offset, name)
        return {"total": total, "offset": offset, "images": [image_json(r) for r in records]}

    def image_json(rec) -> dict:
        source = rec.sources[0] if rec.sources else None
        return {
            "id": rec.id, "sha256": rec.sha256, "label": rec.label, "width": rec.width, "height": rec.height,
            "format": rec.format, "bytes": rec.bytes, "added_at": rec.added_at, "source": source,
            "sources": list(rec.sources), "original_url": f"{API}/images/{rec.id}/original",
            "thumbnail_url": f"{API}/images/{rec.id}/thumbnail",
        }  # fmt: skip

    @app.get(f"{API}/images/{{image_id}}", dependencies=read, summary="Metadata of an indexed photo",
             response_model=ImageOut)  # fmt: skip
    async def image_meta(image_id: ImageId, lib: Lib) -> dict:
        return image_json(await run_in_threadpool(lib.get, image_id))

    def presigned(lib: Library, kind: Kind, sha256: str) -> Response | None:
        if settings.s3_presign and isinstance(lib.images, S3ImageStore) and lib.images.exists(kind, sha256):
            return RedirectResponse(lib.images.presigned_url(kind, sha256), status_code=307)
        return None

    # behind a read key, shared caches must not keep (and hand out) the photos
    visibility = "private" if settings.api_key is not None and settings.api_key_for_reads else "public"

    async def cached(request: Request, etag: str, data_fn, media_type: str) -> Response:
        headers = {"ETag": f'"{etag}"', "Cache-Control": f"{visibility}, max-age=31536000, immutable"}
        if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', etag, "*"):
            return Response(status_code=304, headers=headers)
        # read in a worker thread, sent a MiB at a time: a 75 MB original read and written in one piece on the
        # event loop stalled every other request
        data = await run_in_threadpool(data_fn)
        if len(data) <= CHUNK:
            return Response(data, media_type=media_type, headers=headers)
        chunks = (memoryview(data)[i : i + CHUNK] for i in range(0, len(data), CHUNK))
        return StreamingResponse(chunks, media_type=media_type, headers=headers | {"Content-Length": str(len(data))})

    @app.get(f"{API}/images/{{image_id}}/thumbnail", dependencies=read, summary="JPEG thumbnail",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})  # fmt: skip
    async def thumbnail(image_id: ImageId, request: Request, lib: Lib) -> Response:
        rec = await run_in_threadpool(lib.get, image_id)
        if (redirect := await run_in_threadpool(presigned, lib, "thumbnail", rec.sha256)) is not None:
            return redirect

        def data() -> bytes:
            blob = lib.images.get("thumbnail", rec.sha256)
            if blob is None:
                raise NotFoundError(f"thumbnail of image {image_id} is missing")
            return blob

        return await cached(request, f"{rec.sha256}-t", data, "image/jpeg")

    @app.get(f"{API}/images/{{image_id}}/original", dependencies=read, summary="The original photo",
             response_class=Response, responses={200: {"content": {"image/*": {}}}})  # fmt: skip
    async def original(image_id: ImageId, request: Request, lib: Lib) -> Response:
        rec = await run_in_threadpool(lib.get, image_id)
        redirect = await run_in_threadpool(presigned, lib, "original", rec.sha256) if rec.has_original else None
        if redirect is not None:
            return redirect
        return await cached(
            request, rec.sha256, lambda: lib.original_bytes(image_id), MIME.get(rec.format, "application/octet-stream")
        )

    @app.delete(f"{API}/images/{{image_id}}", dependencies=write, status_code=204, summary="Remove a photo")
    async def delete_image(image_id: ImageId, lib: Lib) -> Response:
        removed = await run_in_threadpool(lib.remove, [image_id])
        if not removed:
            raise NotFoundError(f"no image with id {image_id}")
        return Response(status_code=204)

    # --- jobs: durable, in the catalog database; run by any worker ------------------------------------
    @app.post(f"{API}/jobs/index", dependencies=write, status_code=202, summary="Index a server-side source",
              response_model=JobOut)  # fmt: skip
    async def start_job(body: IndexJobRequest, lib: Lib) -> dict:
        from lookalike.ingest.sources import SourceError, iter_expand

        roots = [r for r in settings.source_roots if not r.startswith("s3://")]
        for p in body.paths:
            check_source(p, settings)  # before anything touches the path: outside the roots, one answer

        def expand(p: str) -> None:
            if not p.startswith(("http://", "https://")):
                iter_expand(p, s3=lib.s3, roots=roots)

        for p in body.paths:  # fail fast on names that do not exist
            try:
                await run_in_threadpool(expand, p)
            except SourceError as exc:
                raise Problem(422, "Invalid parameters", str(exc)) from None
        params = {"paths": body.paths, "label": body.label, "prune": body.prune, "objects": body.objects,
                  "roots": roots}  # fmt: skip  # every photo the job opens must resolve inside them
        local = any(not p.startswith(("http://", "https://", "s3://")) for p in body.paths)
        job_id = await run_in_threadpool(lib.jobs.submit, "index", params, None, host_affinity() if local else None)
        if state.worker is not None:
            state.worker.wake.set()
        job = await run_in_threadpool(lib.jobs.get, job_id)
        assert job is not None  # queued just now: jobs are not deleted
        return job.as_dict()

    @app.get(f"{API}/jobs", dependencies=read, summary="Index jobs, newest first", response_model=JobList)
    async def list_jobs(lib: Lib, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=2**31),
                        state_: str | None = Query(None, alias="state", pattern="^(queued|running|done|failed|"
                                                   "cancelled)$")) -> dict:  # fmt: skip
        jobs = await run_in_threadpool(lib.jobs.list, limit, offset, state_)
        return {"jobs": [j.as_dict() for j in jobs]}

    @app.get(f"{API}/jobs/{{job_id}}", dependencies=read, summary="Progress of an index job", response_model=JobOut)
    async def job_status(job_id: JobId, lib: Lib) -> dict:
        job = await run_in_threadpool(lib.jobs.get, job_id)
        if job is None:
            raise NotFoundError(f"no job with id {job_id}")
        return job.as_dict()

    @app.post(f"{API}/jobs/{{job_id}}/cancel", dependencies=write, summary="Cancel an index job",
              response_model=JobOut)  # fmt: skip
    async def cancel_job(job_id: JobId, lib: Lib) -> dict:
        if await run_in_threadpool(lib.jobs.get, job_id, False) is None:
            raise NotFoundError(f"no job with id {job_id}")
        await run_in_threadpool(lib.jobs.cancel, job_id)
        job = await run_in_threadpool(lib.jobs.get, job_id)
        assert job is not None  # found a moment ago: jobs are not deleted
        return job.as_dict()

    # --- information ----------------------------------------------------------------------------
    @app.get(f"{API}/stats", dependencies=read, summary="What the library holds", response_model=StatsOut)
    async def stats(lib: Lib) -> dict:
        return public_stats(await run_in_threadpool(lib.stats))

    @app.get(f"{API}/duplicates", dependencies=read, response_model=DuplicatesOut,
             summary="Groups of photos that are the same picture (the largest first: the one to keep)")  # fmt: skip
    async def duplicates(lib: Lib, min_confidence: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0) -> dict:
        def report() -> dict:
            found = lib.duplicates(min_confidence)
            for row in found["groups"]:
                for photo in row["photos"]:
                    photo["thumbnail_url"] = f"{API}/images/{photo['id']}/thumbnail"
                    photo["original_url"] = f"{API}/images/{photo['id']}/original"
            return found

        def one_at_a_time() -> dict:  # a whole-library pass: a second caller waits for nothing, it retries
            if not state.duplicates_lock.acquire(blocking=False):
                raise BusyError("a duplicates report is being computed; retry in a moment")
            try:
                return report()
            finally:
                state.duplicates_lock.release()

        return await run_in_threadpool(one_at_a_time)

    @app.get(f"{API}/labels", dependencies=read, summary="Labels with photo counts", response_model=dict[str, int])
    async def labels(lib: Lib) -> dict:
        return await run_in_threadpool(lambda: lib.catalog.labels())

    health.install(app, state, API)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(keys.metrics)])
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- the API documents, from the package (no CDN), behind the read key when reads need one ----------
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/openapi.json", include_in_schema=False, dependencies=read)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=read)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Lookalike API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")  # fmt: skip

    @app.get("/redoc", include_in_schema=False, dependencies=read)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="Lookalike API",
                              redoc_js_url="/docs-assets/redoc.standalone.js",
                              redoc_favicon_url="/docs-assets/favicon.png", with_google_fonts=False)  # fmt: skip

    # --- the web page ------------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def _queue_uploads(lib: Library, files: list[tuple[str, bytes]], label: str | None,
                   objects: bool) -> tuple[int, list[str]]:  # fmt: skip
    """Put each upload's bytes in the image store, then queue one job for them; returns (job, sources)."""
    items, sources = [], []
    for name, data in files:
        digest = hashlib.sha256(data).hexdigest()
        lib.images.put("original", digest, data)
        source = f"upload:{digest}/{Path(name).name or 'photo'}"
        sources.append(source)
        items.append(item_json(SourceItem(source, label, stored=digest)))
    return lib.jobs.submit("upload", {"label": label, "objects": objects}, items, store_affinity(lib.images)), sources


def _query_bytes(lib: Library, query: str | int) -> bytes:
    return lib.original_bytes(query) if isinstance(query, int) else lib.read_query(query)


def wait_ready(app: FastAPI, timeout: float = 60.0) -> None:
    """Block until the service's library is loaded (tests and benchmarks)."""
    state: State = app.state.lookalike
    deadline = time.time() + timeout
    while not state.ready.wait(0.05):
        if state.error:
            raise RuntimeError(state.error)
        if time.time() > deadline:
            raise TimeoutError("library did not load in time")
