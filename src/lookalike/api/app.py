"""The FastAPI service: JSON API under /api/v1, the web page at /, metrics at /metrics.

``create_app`` only assembles it: the service's state (deps.State), the error handlers and middleware, and
the routers of routes/, where every endpoint is a thin adapter over ``Library``. CPU-heavy calls (decoding,
inference, index writes) run in worker threads so the event loop stays free, and searches interleave with
index jobs at photo granularity.
"""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from lookalike import __version__
from lookalike.api import API, problems
from lookalike.api.deps import State
from lookalike.api.headers import SecurityHeaders
from lookalike.api.limits import BodyLimitMiddleware
from lookalike.api.metrics import MetricsMiddleware
from lookalike.api.problems import LastResort
from lookalike.api.routes import docs, health, images, jobs, library, metrics, page, search, session, uploads
from lookalike.config import Settings
from lookalike.imaging import set_decode_memory
from lookalike.library import Library
from lookalike.memory import return_freed_memory

__all__ = ["API", "State", "create_app", "wait_ready"]

# the endpoints that are not files, in the order of the OpenAPI document
ROUTERS = (search.router, uploads.router, images.router, jobs.router, library.router, health.router, metrics.router)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: State = app.state.lookalike
    state.start()
    yield
    state.stop()


def create_app(settings: Settings | None = None, library: Library | None = None) -> FastAPI:
    """The service over ``library``, or over one it opens from ``settings`` (in the background: /healthz
    answers at once, the API 503 until the index and model are loaded)."""
    settings = settings or (library.settings if library else Settings())
    return_freed_memory()
    set_decode_memory(settings.max_decode_memory)
    state = State(settings, library)
    app = FastAPI(
        title="Lookalike",
        version=__version__,
        description="Reverse image search: upload a photo, get the most similar indexed photos.",
        redirect_slashes=False,  # the redirect's Location was built from the caller's Host header: 404 instead
        lifespan=lifespan,
        docs_url=None,  # served by routes/docs.py, from the package (no CDN) and behind the read key if any
        redoc_url=None,
        openapi_url=None,
    )
    app.state.lookalike = state
    problems.install(app)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    uploads = {f"{API}/images": (settings.video_upload_max_bytes, "LOOKALIKE_VIDEO_UPLOAD_MAX_BYTES")}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, larger=uploads)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(LastResort)
    app.add_middleware(SecurityHeaders, no_store=settings.reads_need_key)  # outside LastResort: its 500s get them too
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/docs-assets", StaticFiles(directory=docs.ASSETS), name="docs-assets")
    app.include_router(docs.router)
    app.include_router(session.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    app.include_router(page.router)
    return app


def wait_ready(app: FastAPI, timeout: float = 60.0) -> None:
    """Block until the service's library is loaded (tests and benchmarks)."""
    state: State = app.state.lookalike
    deadline = time.time() + timeout
    while not state.ready.wait(0.05):
        if state.error:
            raise RuntimeError(state.error)
        if time.time() > deadline:
            raise TimeoutError("library did not load in time")
