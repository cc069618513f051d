"""The page's read cookie: ``<img>`` and ``<video>`` requests cannot carry the X-API-Key header, so the page
trades the key (in the header, as for a write) for an HttpOnly cookie holding a read-only token derived from
it (security.READ_COOKIE). The key itself never goes into a cookie. Browser plumbing, left out of the API
document as the page and the docs are."""

from fastapi import APIRouter, Request, Response

from lookalike.api import API
from lookalike.api.deps import WRITE, Service
from lookalike.api.security import READ_COOKIE

router = APIRouter(prefix=API)


@router.post("/session", dependencies=WRITE, status_code=204, include_in_schema=False)
async def open_session(request: Request, state: Service) -> Response:
    """204 with the read cookie; without a key configured, 204 and no cookie (reads are open)."""
    response = Response(status_code=204)
    if state.keys.token is not None:
        response.set_cookie(READ_COOKIE, state.keys.token.decode(), path="/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")  # fmt: skip
    return response


@router.delete("/session", status_code=204, include_in_schema=False)
async def close_session(request: Request) -> Response:
    """204, and the read cookie is gone (no key needed: forgetting grants nothing)."""
    response = Response(status_code=204)
    response.delete_cookie(READ_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")  # fmt: skip
    return response
