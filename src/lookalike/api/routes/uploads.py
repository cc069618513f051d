"""POST /api/v1/images: photos and videos uploaded into the library, durably.

The bytes go to the image store, then one job is queued for them; any worker runs it, and the request waits
for it (``LOOKALIKE_UPLOAD_WAIT``): 201 with what was added, 200 when nothing was new, 202 with the job when
it is still running. A crash after the job is queued loses nothing. A video (by its name's suffix or a video/*
type) may be up to ``LOOKALIKE_VIDEO_UPLOAD_MAX_BYTES``; it goes from the form's spooled file to the store a piece
at a time, never read into memory, and is indexed as its chosen frames (``frames``: their ids, by second).
"""

import hashlib
import json
from collections.abc import Container
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile

from lookalike.api import API
from lookalike.api.deps import WRITE, Lib, Service, State
from lookalike.api.forms import check_photo_type, media_type, video_upload
from lookalike.api.problems import Problem
from lookalike.api.schemas import MAX_LABEL, UPLOAD_FORM, JobOut, Rejection, UploadItem, UploadOut
from lookalike.api.uploadform import read_upload_form, too_large
from lookalike.config import Settings
from lookalike.fields import MAX_BYTES, NOT_UNICODE, Fields, check_fields, replace_surrogates, valid_unicode
from lookalike.ingest.sources import SourceItem
from lookalike.jobs.worker import item_json, store_affinity
from lookalike.library import Library
from lookalike.moments import VIDEO_SUFFIXES, is_video, moment
from lookalike.store.images import ImageStore

router = APIRouter(prefix=API)

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": UPLOAD_FORM}}}}


@router.post("/images", dependencies=WRITE, summary="Upload photos and videos into the library",
             openapi_extra=UPLOAD_BODY, response_model=UploadOut, status_code=201,
             responses={200: {"model": UploadOut, "description": "nothing new (duplicates or rejections only)"},
                        202: {"model": UploadOut, "description": "still indexing: follow the job"}})  # fmt: skip
async def upload_images(request: Request, lib: Lib, state: Service) -> JSONResponse:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise Problem(415, "Unsupported media type", "send multipart/form-data with one or more 'images' files")
    form = await read_upload_form(request, state.settings.max_upload_bytes)
    try:
        return await _indexed(form, lib, state)
    finally:
        await form.close()  # its spooled files, videos on disk among them


async def _indexed(form: FormData, lib: Library, state: State) -> JSONResponse:
    """The files of an upload form, stored, queued as one job and waited for (see the module)."""
    uploads = [v for k, v in form.multi_items() if k in ("images", "image", "file") and isinstance(v, UploadFile)]
    if not uploads:
        raise Problem(422, "Invalid parameters", "no files: send them in multipart field 'images'")
    label_field = form.get("label")
    label = label_field if isinstance(label_field, str) and label_field else None
    if label is not None and len(label) > MAX_LABEL:
        raise Problem(422, "Invalid parameters", f"label: at most {MAX_LABEL} characters")
    if label is not None and not valid_unicode(label):
        raise Problem(422, "Invalid parameters", f"label: {NOT_UNICODE}")
    if label is not None and "\x00" in label:  # PostgreSQL's text refuses it: the whole job failed there
        raise Problem(422, "Invalid parameters", "label: a NUL character")
    objects = str(form.get("objects", "")).lower() in ("1", "true", "yes", "on")
    fields = given_fields(form.get("fields"))
    files: list[tuple[str, bytes | BinaryIO]] = []
    rejected: list[Rejection] = []
    photo_bytes = 0
    for up in uploads:
        try:
            name, video = accepted(up, state.settings)
        except Problem as exc:
            rejected.append(Rejection(name=replace_surrogates(up.filename), reason=exc.detail))
            continue
        photo_bytes += 0 if video else up.size or 0
        if photo_bytes > state.settings.max_upload_bytes:  # counted as they streamed too (read_upload_form)
            raise too_large(state.settings.max_upload_bytes)
        files.append((name, up.file if video else await up.read()))  # a video stays in the form's spooled file
    added: list[UploadItem] = []
    duplicates: list[UploadItem] = []
    if files:
        # durable: the bytes go to the image store, then a job is queued; any worker runs it, and this
        # request waits for it (LOOKALIKE_UPLOAD_WAIT), so a crash after this point loses nothing
        job_id, sources, known = await run_in_threadpool(queue_uploads, lib, files, label, objects, fields)
        if state.worker is not None:
            state.worker.wake.set()
        job = await run_in_threadpool(lib.jobs.wait, job_id, state.settings.upload_wait)
        assert job is not None  # queued just now; jobs are never deleted
        if not job.finished:
            out = UploadOut(added=[], duplicates=[], rejected=rejected, job=JobOut.from_job(job))
            return JSONResponse(out.body(), status_code=202, headers={"Location": f"{API}/jobs/{job_id}"})
        told: set[str] = set()  # sources answered already: the same name and bytes twice are one item of the job
        for (name, _), src in zip(files, sources, strict=True):
            outcome = job.items.get(src) or {"rejected": job.error or "not indexed"}
            if src in told and "rejected" not in outcome:
                outcome = outcome | {"new": False}  # added once, by the first; this one is a duplicate of it
            told.add(src)
            if is_video(src):  # the job knows a video's rejection; the catalog, its frames
                outcome = await run_in_threadpool(video_outcome, lib, src, known) or outcome
            if "rejected" in outcome:
                rejected.append(Rejection(name=name, reason=outcome["rejected"]))
            else:
                item = UploadItem(name=name, id=outcome["id"], near_duplicate_of=outcome.get("near_duplicate_of"),
                                  frames=outcome.get("frames"))  # fmt: skip
                (added if outcome["new"] else duplicates).append(item)
        state.metrics.indexed.inc(len(added))
    state.metrics.rejected.inc(len(rejected))
    out = UploadOut(added=added, duplicates=duplicates, rejected=rejected)
    return JSONResponse(out.body(), status_code=201 if added else 200)


def given_fields(text: object) -> Fields | None:
    """The ``fields`` form field: a JSON object of the photos' record, checked (422 naming the problem)."""
    if text is None or text == "":
        return None
    if not isinstance(text, str) or len(text) > 4 * MAX_BYTES:
        raise Problem(422, "Invalid fields", f"fields: a JSON object of at most {MAX_BYTES} bytes")
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Problem(422, "Invalid fields", f"fields: not JSON ({str(exc)[:200] or 'nested too deeply'})") from None
    return check_fields(parsed)


VIDEO_TYPES = {"video/mp4": ".mp4", "video/x-m4v": ".m4v", "video/quicktime": ".mov", "video/webm": ".webm",
               "video/x-matroska": ".mkv", "video/x-msvideo": ".avi", "video/avi": ".avi"}  # fmt: skip


def accepted(up: UploadFile, settings: Settings) -> tuple[str, bool]:
    """(the name an upload is indexed under, whether it is a video), or the Problem saying why it is not taken: a video
    by its name's suffix or a video/* type, under its own size limit; a photo under the photos' limit."""
    # a NUL in a name is written as a path's is (ingest.sources): PostgreSQL's text refuses it, and the job of the
    # whole request failed there, its good photos with it
    name = Path(up.filename or "").name.replace("\x00", "\\0")
    if not valid_unicode(name):  # Starlette decodes names as UTF-8 or Latin-1: a guard, for any other parser
        raise Problem(422, "Invalid file name", f"the file's name is {NOT_UNICODE}")
    ctype = media_type(up)
    size = up.size or 0
    if video_upload(name, ctype):
        if not is_video(name):
            if ctype not in VIDEO_TYPES:
                raise Problem(415, "Unsupported media type", f"{name or 'the file'} is {ctype}; upload a video as "
                              f"{', '.join(sorted(VIDEO_SUFFIXES))}")  # fmt: skip
            name = (name or "video") + VIDEO_TYPES[ctype]
        if size > settings.video_upload_max_bytes:
            raise Problem(413, "Video too large", f"{name}: {size} bytes exceeds video_upload_max_bytes="
                          f"{settings.video_upload_max_bytes} (LOOKALIKE_VIDEO_UPLOAD_MAX_BYTES)")  # fmt: skip
        return name, True
    check_photo_type(up)
    if size > settings.max_upload_bytes:
        raise Problem(413, "Image too large", f"{name or 'the file'}: {size} bytes exceeds max_upload_bytes="
                      f"{settings.max_upload_bytes} (LOOKALIKE_MAX_UPLOAD_BYTES)")  # fmt: skip
    return name or "photo", False


def video_outcome(lib: Library, source: str, known: Container[str]) -> dict[str, Any] | None:
    """An uploaded video's outcome once its job ran: its frames' ids by second (the first as its id), new unless the
    same bytes under the same name were indexed before the upload (``known``: asked before its job was queued); None
    when the catalog does not hold it."""
    if source not in lib.catalog.video_states([source]):
        return None
    frames = lib.catalog.frame_sources(source)
    states = lib.catalog.source_states(frames)
    ids = [states[f].image_id for f in sorted(frames, key=lambda f: moment(f) or (f, 0.0)) if f in states]
    if not ids:
        return {"rejected": "no frame of the video was kept"}
    return {"id": ids[0], "new": source not in known, "frames": ids}


def stored_upload(images: ImageStore, body: bytes | BinaryIO) -> str:
    """Put an upload in the image store under its sha256 (a video's file read twice a piece at a time: hashed, then
    copied), and return that."""
    if isinstance(body, bytes):
        digest = hashlib.sha256(body).hexdigest()
        images.put("original", digest, body)
        return digest
    body.seek(0)
    h = hashlib.sha256()
    while chunk := body.read(2**20):
        h.update(chunk)
    digest = h.hexdigest()
    body.seek(0)
    images.put_file("original", digest, body)
    return digest


def queue_uploads(lib: Library, files: list[tuple[str, bytes | BinaryIO]], label: str | None,
                  objects: bool, fields: Fields | None = None) -> tuple[int, list[str], set[str]]:  # fmt: skip
    """Put each upload in the image store, then queue one job for them; returns (job, sources, the videos among them
    the catalog held already)."""
    items, sources = [], []
    for name, body in files:
        digest = stored_upload(lib.images, body)
        source = f"upload:{digest}/{Path(name).name or 'photo'}"
        sources.append(source)
        items.append(item_json(SourceItem(source, label, stored=digest, fields=fields)))
    known = set(lib.catalog.video_states([s for s in sources if is_video(s)]))
    job = lib.jobs.submit("upload", {"label": label, "objects": objects}, items, store_affinity(lib.images))
    return job, sources, known
