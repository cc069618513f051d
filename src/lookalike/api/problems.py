"""Errors as RFC 9457 problem details, with the status that says what went wrong.

Bad input is always a 4xx with words; a 500 would mean a bug.
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from lookalike.api.limits import TrackedSend
from lookalike.errors import BusyError, LibraryError, ModelMismatchError, NotFoundError
from lookalike.fields import FieldError, replace_surrogates
from lookalike.filters import FilterError
from lookalike.imaging import BadImage, DecodeBusy
from lookalike.ingest.fetch import FetchError
from lookalike.store.catalog.database import unreachable
from lookalike.store.errors import RETRY_AFTER, EngineError, Unavailable
from lookalike.store.payload import UnsupportedFilter

PROBLEM = "application/problem+json"
log = logging.getLogger("lookalike")


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, **extra) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra


def problem_response(status: int, title: str, detail: str, instance: str = "", **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": instance, **extra}
    # a message may quote the input: a lone surrogate in it (JSON's "\\ud800") is sent as its escape, not a 500
    return JSONResponse(replace_surrogates(body), status_code=status, media_type=PROBLEM)


def bad_image_status(exc: BadImage) -> tuple[int, str]:
    if isinstance(exc, DecodeBusy):
        return 503, "Busy"
    if "too many pixels" in str(exc):
        return 413, "Image too large"
    return 400, "Not a usable image"


def unavailable_response(detail: str, instance: str, part: str = "a part the library depends on") -> JSONResponse:
    """503 + Retry-After: the request was fine, the catalog, engine or store is away; the client retries."""
    response = problem_response(503, "Service unavailable", f"{part} is unavailable; retry shortly ({detail})",
                                instance, retry_after=RETRY_AFTER)  # fmt: skip
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


# errors that say the request cannot be served as asked (422), with the title each gets; the message is the detail
UNPROCESSABLE: dict[type[Exception], str] = {
    FieldError: "Invalid fields",
    FilterError: "Invalid filter",
    UnsupportedFilter: "Filter not supported",
    LibraryError: "Request cannot be served",
}


def _unprocessable(title: str):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(422, title, str(exc), request.url.path)

    return handler


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        response = problem_response(exc.status, exc.title, exc.detail, request.url.path, **exc.extra)
        if exc.status == 503:
            response.headers["Retry-After"] = str(RETRY_AFTER)
        return response

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable):
        return unavailable_response(str(exc), request.url.path, exc.part)

    @app.exception_handler(sa.exc.DBAPIError)
    async def _database(request: Request, exc: sa.exc.DBAPIError):
        """A database error that escaped the catalog's own translation: an outage is a 503, others are bugs."""
        if not unreachable(exc):
            raise exc
        return unavailable_response(type(exc).__name__, request.url.path, "the catalog database")

    @app.exception_handler(BadImage)
    async def _bad_image(request: Request, exc: BadImage):
        status, title = bad_image_status(exc)
        response = problem_response(status, title, str(exc), request.url.path)
        if status == 503:
            response.headers["Retry-After"] = "2"
        return response

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError):
        return problem_response(404, "Not found", str(exc), request.url.path)

    @app.exception_handler(FetchError)
    async def _fetch(request: Request, exc: FetchError):
        status = 422 if "refusing" in str(exc) else 400
        return problem_response(status, "Could not fetch the URL", str(exc), request.url.path)

    @app.exception_handler(BusyError)
    async def _busy(request: Request, exc: BusyError):
        response = problem_response(503, "Busy", str(exc), request.url.path)
        response.headers["Retry-After"] = "2"
        return response

    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError):
        response = problem_response(503, "Vector engine unavailable", str(exc), request.url.path)
        response.headers["Retry-After"] = str(RETRY_AFTER)
        return response

    @app.exception_handler(ModelMismatchError)
    async def _model(request: Request, exc: ModelMismatchError):
        return problem_response(409, "Model mismatch", str(exc), request.url.path)

    for error, title in UNPROCESSABLE.items():
        app.add_exception_handler(error, _unprocessable(title))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(422, "Invalid parameters", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized"}
        return problem_response(
            exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail), request.url.path
        )


class LastResort:
    """The outermost layer but for the security headers (headers.py): an error nothing else handled becomes a
    500 problem response, logged, and the connection stays usable (an exception escaping to the server would
    reset it). Every such error is a bug: the fuzz test (tests/security/test_fuzz.py) fails on any 5xx."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:  # gone while its body was read (or stalled: lookalike.api.stalls): none to answer
            log.info("%s %s: the client went before its body was read", scope.get("method"), scope.get("path"))
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if tracked.started:
                raise
            problem = {"type": "about:blank", "title": "Internal error", "status": 500,
                       "detail": "an unexpected error; it was logged", "instance": scope.get("path", "")}  # fmt: skip
            body = json.dumps(problem).encode()
            headers = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
