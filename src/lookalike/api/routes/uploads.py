"""POST /api/v1/images: photos uploaded into the library, durably.

The bytes go to the image store, then one job is queued for them; any worker runs it, and the request waits
for it (``LOOKALIKE_UPLOAD_WAIT``): 201 with what was added, 200 when nothing was new, 202 with the job when
it is still running. A crash after the job is queued loses nothing.
"""

import hashlib
import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from lookalike.api import API
from lookalike.api.deps import WRITE, Lib, Service
from lookalike.api.forms import check_photo_type
from lookalike.api.problems import Problem
from lookalike.api.schemas import MAX_LABEL, UPLOAD_FORM, JobOut, Rejection, UploadItem, UploadOut
from lookalike.fields import MAX_BYTES, Fields, check_fields
from lookalike.ingest.sources import SourceItem
from lookalike.jobs.worker import item_json, store_affinity
from lookalike.library import Library

router = APIRouter(prefix=API)

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": UPLOAD_FORM}}}}


@router.post("/images", dependencies=WRITE, summary="Upload photos into the library",
             openapi_extra=UPLOAD_BODY, response_model=UploadOut, status_code=201,
             responses={200: {"model": UploadOut, "description": "nothing new (duplicates or rejections only)"},
                        202: {"model": UploadOut, "description": "still indexing: follow the job"}})  # fmt: skip
async def upload_images(request: Request, lib: Lib, state: Service) -> JSONResponse:
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
    fields = given_fields(form.get("fields"))
    files: list[tuple[str, bytes]] = []
    rejected: list[Rejection] = []
    for up in uploads:
        try:
            check_photo_type(up)
        except Problem as exc:
            rejected.append(Rejection(name=up.filename, reason=exc.detail))
            continue
        files.append((up.filename or "photo", await up.read()))
    added: list[UploadItem] = []
    duplicates: list[UploadItem] = []
    if files:
        # durable: the bytes go to the image store, then a job is queued; any worker runs it, and this
        # request waits for it (LOOKALIKE_UPLOAD_WAIT), so a crash after this point loses nothing
        job_id, sources = await run_in_threadpool(queue_uploads, lib, files, label, objects, fields)
        if state.worker is not None:
            state.worker.wake.set()
        job = await run_in_threadpool(lib.jobs.wait, job_id, state.settings.upload_wait)
        assert job is not None  # queued just now; jobs are never deleted
        if not job.finished:
            out = UploadOut(added=[], duplicates=[], rejected=rejected, job=JobOut.from_job(job))
            return JSONResponse(out.body(), status_code=202, headers={"Location": f"{API}/jobs/{job_id}"})
        for (name, _), src in zip(files, sources, strict=True):
            outcome = job.items.get(src) or {"rejected": job.error or "not indexed"}
            if "rejected" in outcome:
                rejected.append(Rejection(name=name, reason=outcome["rejected"]))
            else:
                item = UploadItem(name=name, id=outcome["id"], near_duplicate_of=outcome.get("near_duplicate_of"))
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


def queue_uploads(lib: Library, files: list[tuple[str, bytes]], label: str | None,
                  objects: bool, fields: Fields | None = None) -> tuple[int, list[str]]:  # fmt: skip
    """Put each upload's bytes in the image store, then queue one job for them; returns (job, sources)."""
    items, sources = [], []
    for name, data in files:
        digest = hashlib.sha256(data).hexdigest()
        lib.images.put("original", digest, data)
        source = f"upload:{digest}/{Path(name).name or 'photo'}"
        sources.append(source)
        items.append(item_json(SourceItem(source, label, stored=digest, fields=fields)))
    return lib.jobs.submit("upload", {"label": label, "objects": objects}, items, store_affinity(lib.images)), sources
