"""Reading multipart forms: the photos' declared types, and text fields checked by a pydantic model.

FastAPI's own form parameters cannot describe these bodies (a search takes either a form or JSON, an upload
any number of files), so the handlers read the form themselves and check it here with the same errors.
"""

from typing import TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from lookalike.api.problems import Problem
from lookalike.moments import is_video

IMAGE_TYPES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or a camera RAW file"
M = TypeVar("M", bound=BaseModel)


def media_type(upload: UploadFile) -> str:
    """The upload's declared type, without parameters, in lower case ("" when undeclared)."""
    return (upload.content_type or "").split(";")[0].strip().lower()


def declared_photo(ctype: str) -> bool:
    """Whether a declared media type may be a photo: an image type, bytes of no stated kind, or none declared (then
    the bytes are judged)."""
    return not ctype or ctype.startswith("image/") or ctype == "application/octet-stream"


def video_upload(name: str, ctype: str) -> bool:
    """Whether an uploaded file is taken as a video: by its name's suffix or a video/* type."""
    return ctype.startswith("video/") or is_video(name)


def check_photo_type(upload: UploadFile) -> None:
    """415 for a file declared as something other than a photo; an undeclared type is judged by its bytes."""
    ctype = media_type(upload)
    if not declared_photo(ctype):
        raise Problem(415, "Unsupported media type", f"{upload.filename or 'the file'} is {ctype}; "
                      f"upload a photo ({IMAGE_TYPES})")  # fmt: skip


# ISO base media files that are photos (HEIF, HEIC, AVIF, Canon's CR3 raw), not videos, by their major brand
PHOTO_BRANDS = frozenset([b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis",
                          b"crx "])  # fmt: skip


def check_not_video(upload: UploadFile, head: bytes) -> None:
    """415 for a video sent as a query (by its type, its name or its first bytes: an MP4/MOV ``ftyp`` box, a Matroska or
    WebM header, an AVI RIFF), saying what to send instead."""
    ctype = media_type(upload)
    mp4 = head[4:8] == b"ftyp" and head[8:12] not in PHOTO_BRANDS
    sniffed = mp4 or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    if ctype.startswith("video/") or is_video(upload.filename or "") or sniffed:
        raise Problem(415, "Unsupported media type", f"{upload.filename or 'the file'} is a video: a search takes a "
                      "photo. Upload a frame of it (a screenshot) to find the video and the second it shows; index "
                      "the video itself with POST /api/v1/images")  # fmt: skip


def validated(model: type[M], data: dict) -> M:
    """``data`` as ``model``, or the 422 problem FastAPI answers for parameters it checks itself."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
