"""The library's photos: browsed a page at a time, their metadata, thumbnails and originals, and removal.

Thumbnails and originals never change under their ETag (the photo's sha256), so browsers keep them for a
year and ask again with If-None-Match; with S3 presigning on, they are fetched from the bucket instead.
"""

import os
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BeforeValidator
from starlette.responses import MalformedRangeHeader

from lookalike.api import API
from lookalike.api.deps import READ, WRITE, Lib, Service
from lookalike.api.problems import Problem
from lookalike.api.schemas import MAX_ID, FieldsPatch, ImageId, ImageOut, ImagePage, Text
from lookalike.api.security import digits_only
from lookalike.config import Settings
from lookalike.errors import NotFoundError
from lookalike.library import Library
from lookalike.moments import FRAME_FORMAT
from lookalike.store.images import Kind
from lookalike.store.s3 import S3ImageStore

router = APIRouter(prefix=API)

MIME = {
    "JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp",
    "TIFF": "image/tiff", "MPO": "image/jpeg", "ICO": "image/x-icon", "HEIF": "image/heic",
    FRAME_FORMAT: "image/jpeg",  # a video's frame: decoded again from the video (Library.original_bytes)
}  # fmt: skip (a camera RAW original is sent as application/octet-stream: browsers do not show them)
CHUNK = 2**20  # photos larger than this are sent in pieces of this size (the event loop serves others between)


@router.get("/images", dependencies=READ, summary="Browse the library, a page at a time",
            response_model=ImagePage)  # fmt: skip
def list_images(
    lib: Lib,
    sort: Literal["newest", "oldest", "name"] = "newest",
    label: Annotated[Text | None, Query(max_length=200)] = None,
    limit: int = Query(48, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**31),
    name: Annotated[Text | None, Query(max_length=200, description="only photos whose file name contains this")] = None,
) -> ImagePage:
    total, records = lib.catalog.list_images(sort, label, limit, offset, name)
    return ImagePage(total=total, offset=offset, images=[ImageOut.from_record(r) for r in records])


@router.get("/images/{image_id}", dependencies=READ, summary="Metadata of an indexed photo",
            response_model=ImageOut)  # fmt: skip
def image_meta(image_id: ImageId, lib: Lib) -> ImageOut:
    return ImageOut.from_record(lib.get(image_id))


@router.patch("/images/{image_id}", dependencies=WRITE, summary="Change a photo's fields (no re-indexing)",
              response_model=ImageOut)  # fmt: skip
def patch_image(image_id: ImageId, body: FieldsPatch, lib: Lib) -> ImageOut:
    return ImageOut.from_record(lib.set_fields(image_id, body.fields))


@router.head("/images/{image_id}/thumbnail", dependencies=READ, include_in_schema=False)  # curl -I, link checkers
@router.get("/images/{image_id}/thumbnail", dependencies=READ, summary="JPEG thumbnail",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})  # fmt: skip
def thumbnail(image_id: ImageId, request: Request, lib: Lib, state: Service) -> Response:
    rec = lib.get(image_id)
    if (redirect := presigned(lib, state.settings, "thumbnail", rec.sha256)) is not None:
        return redirect

    def data() -> bytes:
        blob = lib.images.get("thumbnail", rec.sha256)
        if blob is None:
            raise NotFoundError(f"thumbnail of image {image_id} is missing")
        return blob

    return cached(request, state.settings, f"{rec.sha256}-t", data, "image/jpeg")


@router.head("/images/{image_id}/original", dependencies=READ, include_in_schema=False)  # curl -I, link checkers
@router.get("/images/{image_id}/original", dependencies=READ, summary="The original photo",
            response_class=Response, responses={200: {"content": {"image/*": {}}}})  # fmt: skip
def original(image_id: ImageId, request: Request, lib: Lib, state: Service) -> Response:
    rec = lib.get(image_id)
    redirect = presigned(lib, state.settings, "original", rec.sha256) if rec.has_original else None
    if redirect is not None:
        return redirect
    return cached(request, state.settings, rec.sha256, lambda: lib.original_bytes(image_id),
                  MIME.get(rec.format, "application/octet-stream"))  # fmt: skip


VIDEO_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
              ".webm": "video/webm", ".avi": "video/x-msvideo"}  # fmt: skip


@router.head("/images/{image_id}/video", dependencies=READ, include_in_schema=False)  # curl -I, link checkers
@router.get("/images/{image_id}/video", dependencies=READ, summary="The video a frame is from, for playing it",
            response_class=FileResponse, responses={200: {"content": {"video/*": {}}}, 206: {}})  # fmt: skip
def video(image_id: ImageId, request: Request, lib: Lib, state: Service) -> Response:
    """The whole video file, with Range requests (a player seeks to the frame's second: ``#t=`` in the page); only
    while the file is the one indexed. An uploaded video kept in a bucket: a redirect to it (LOOKALIKE_S3_PRESIGN),
    else streamed from it, the Range passed on."""
    found = lib.video_file(image_id)
    visibility = "private" if state.settings.reads_need_key else "public"
    media = VIDEO_MIME.get(os.path.splitext(found.source)[1].lower(), "application/octet-stream")
    headers = {"Cache-Control": f"{visibility}, no-cache"}
    if found.path is not None:
        return VideoFileResponse(found.path, media_type=media, headers=headers)
    assert found.stored is not None and isinstance(lib.images, S3ImageStore)  # an upload kept in a bucket
    if state.settings.s3_presign:
        return RedirectResponse(lib.images.presigned_url("original", found.stored), status_code=307)
    part = lib.images.open_range("original", found.stored, request.headers.get("range"))
    if part.status == 416:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{part.size}"})
    headers |= {"Accept-Ranges": "bytes", "Content-Length": str(part.length)}
    if part.content_range is not None:
        headers["Content-Range"] = part.content_range
    if request.method == "HEAD":  # the headers only: Starlette would read the whole stream to drop it
        part.close()
        return Response(status_code=part.status, media_type=media, headers=headers)
    return StreamingResponse(part.chunks, status_code=part.status, media_type=media, headers=headers)


class VideoFileResponse(FileResponse):
    """A file sent from disk a piece at a time, with Range requests as RFC 9110 (14.2) has them: a Range header it
    cannot read (``bytes=abc``, ``bytes=5-2``, another unit) is ignored and the whole file sent (200; Starlette
    answers 400), an unsatisfiable one (past the end, ``bytes=-0``) is 416, over 100 ranges the whole file."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []


@router.delete("/images/{image_id}", dependencies=WRITE, status_code=204, summary="Remove a photo",
               responses={409: {"description": "``kept`` is no longer in the library with a file"}})  # fmt: skip
def delete_image(
    image_id: ImageId,
    lib: Lib,
    kept: Annotated[int | None, BeforeValidator(digits_only), Query(
        ge=1, le=MAX_ID, description="remove it as a copy of this photo: only while that one is still in the library "
        "with a file (a duplicates report acted on later: the page's Duplicates view)")] = None,
) -> Response:  # fmt: skip
    if kept == image_id:
        raise Problem(422, "Invalid parameters", "kept names the photo to remove: a photo is not kept in its own place")
    removed = lib.remove([image_id], keeping=None if kept is None else {image_id: kept})
    if removed:
        return Response(status_code=204)
    if kept is not None and lib.catalog.get(image_id) is not None:
        raise Problem(409, "Conflict", f"photo {kept}, to be kept in place of {image_id}, is not in the library with a "
                      "file (removed, or its file given other bytes since the duplicates were listed): nothing "
                      "removed; list them again")
    raise NotFoundError(f"no image with id {image_id}")


def presigned(lib: Library, settings: Settings, kind: Kind, sha256: str) -> Response | None:
    """A redirect to the bucket (LOOKALIKE_S3_PRESIGN), when the photo is stored there."""
    if settings.s3_presign and isinstance(lib.images, S3ImageStore) and lib.images.exists(kind, sha256):
        return RedirectResponse(lib.images.presigned_url(kind, sha256), status_code=307)
    return None


def cached(request: Request, settings: Settings, etag: str, data_fn: Callable[[], bytes], media_type: str) -> Response:
    """The photo's bytes under its ETag, or 304 when the caller holds them already."""
    # behind a read key, shared caches must not keep (and hand out) the photos
    visibility = "private" if settings.reads_need_key else "public"
    headers = {"ETag": f'"{etag}"', "Cache-Control": f"{visibility}, max-age=31536000, immutable"}
    if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', etag, "*"):
        return Response(status_code=304, headers=headers)
    # read in a worker thread (these handlers are plain functions), sent a MiB at a time: a 75 MB original read
    # and written in one piece on the event loop stalled every other request
    data = data_fn()
    if len(data) <= CHUNK:
        return Response(data, media_type=media_type, headers=headers)
    chunks = (memoryview(data)[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    return StreamingResponse(chunks, media_type=media_type, headers=headers | {"Content-Length": str(len(data))})
