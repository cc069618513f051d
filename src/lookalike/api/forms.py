"""Reading multipart forms: the photos' declared types, and text fields checked by a pydantic model.

FastAPI's own form parameters cannot describe these bodies (a search takes either a form or JSON, an upload
any number of files), so the handlers read the form themselves and check it here with the same errors.
"""

from typing import TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from lookalike.api.problems import Problem

IMAGE_TYPES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or a camera RAW file"
M = TypeVar("M", bound=BaseModel)


def check_photo_type(upload: UploadFile) -> None:
    """415 for a file declared as something other than a photo; an undeclared type is judged by its bytes."""
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        raise Problem(415, "Unsupported media type", f"{upload.filename or 'the file'} is {ctype}; "
                      f"upload a photo ({IMAGE_TYPES})")  # fmt: skip


def validated(model: type[M], data: dict) -> M:
    """``data`` as ``model``, or the 422 problem FastAPI answers for parameters it checks itself."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
