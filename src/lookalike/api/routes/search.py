"""POST /api/v1/search: by an uploaded photo (multipart), or by URL, indexed photo or text (JSON).

Decoding, inference and the copy check run in worker threads; searches interleave with index jobs at photo
granularity.
"""

import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from lookalike.api import API
from lookalike.api.deps import READ, Lib, Service
from lookalike.api.forms import check_not_video, check_photo_type, validated
from lookalike.api.problems import Problem
from lookalike.api.schemas import SEARCH_FORM, SearchJson, SearchOut, SearchParams
from lookalike.library import Library

router = APIRouter(prefix=API)

SEARCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": SEARCH_FORM},
    "application/json": {"schema": SearchJson.model_json_schema(ref_template="#/components/schemas/{model}")},
}}}  # fmt: skip


@router.post("/search", dependencies=READ, summary="Search by photo upload, URL, indexed image id or text",
             response_model=SearchOut, openapi_extra=SEARCH_BODY)  # fmt: skip
async def search(request: Request, lib: Lib, state: Service) -> SearchOut:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=20)
        upload = form.get("image") or form.get("file")
        if not isinstance(upload, UploadFile):
            raise Problem(422, "Invalid parameters", "multipart field 'image' with the photo is required")
        check_not_video(upload, await upload.read(16))
        await upload.seek(0)
        check_photo_type(upload)
        fields: dict[str, str | list[str]] = {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
        if isinstance(box := fields.get("box"), str):
            fields["box"] = [p for p in box.replace(" ", "").split(",") if p]
        params = validated(SearchParams, fields)
        query: bytes | str | int = await upload.read()
        kind = "upload"
    elif ctype == "application/json":
        try:  # parsed off the event loop: a body of up to limits.JSON_MAX_BYTES still takes tens of milliseconds
            body = await run_in_threadpool(json.loads, await request.body())
        except ValueError:
            raise Problem(400, "Malformed JSON", "the request body is not valid JSON") from None
        except RecursionError:
            raise Problem(400, "Malformed JSON", "the JSON body is nested too deeply") from None
        if not isinstance(body, dict):
            raise Problem(422, "Invalid parameters", "the JSON body must be an object")
        params = validated(SearchJson, body)
        if params.text is not None:
            result = await run_in_threadpool(lib.search_text, params.text, params.k, params.min_score, params.label,
                                             params.filter())  # fmt: skip
            state.metrics.searches.labels("text").inc()
            return SearchOut.of(result.query | {"kind": "text"}, result.seconds, result.hits)
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
        params.detected_label, params.mode == "copies", params.hide_copies, params.filter(),
    )  # fmt: skip
    state.metrics.searches.labels(kind).inc()
    info = result.query | {"kind": kind}
    if params.detect:
        photo = query if isinstance(query, bytes) else await run_in_threadpool(_query_bytes, lib, query)
        detections, _ = await run_in_threadpool(lib.detect, photo)
        info["objects"] = [d.as_dict() for d in detections]
    return SearchOut.of(info, result.seconds, result.hits)


def _query_bytes(lib: Library, query: str | int) -> bytes:
    return lib.original_bytes(query) if isinstance(query, int) else lib.read_query(query)
