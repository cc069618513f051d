"""The health routes (api/health.py has the checks): open, no key needed, and left out of the API document's
operations but for /healthz and the /api/v1 forms."""

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from lookalike import __version__
from lookalike.api import API, LIVE_PATHS, READY_PATHS, health
from lookalike.api.deps import Service
from lookalike.api.health import Health
from lookalike.store.errors import RETRY_AFTER

router = APIRouter()


async def live() -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


async def ready(state: Service) -> JSONResponse:
    status, body = await run_in_threadpool(health.readiness, state)  # pings the catalog, engine and store
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


DOCUMENTED = {"/healthz", f"{API}/healthz", f"{API}/healthz/live", f"{API}/healthz/ready"}
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "not ready: loading, or a part unavailable (Retry-After)"}
}
for path in LIVE_PATHS:
    router.add_api_route(path, live, methods=["GET"], response_model=Health, include_in_schema=path in DOCUMENTED,
                         summary="Liveness: the process serves requests (open: no key needed)")  # fmt: skip
for path in READY_PATHS:
    router.add_api_route(path, ready, methods=["GET"], response_model=Health, responses=NOT_READY,
                         include_in_schema=path in DOCUMENTED,
                         summary="Readiness: catalog, engine and store reachable, models loaded (open)")  # fmt: skip
