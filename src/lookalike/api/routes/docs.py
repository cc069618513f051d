"""The API documents: the OpenAPI JSON, Swagger UI and ReDoc, from the package (no CDN) and behind the read
key when reads need one. ``ASSETS`` (Swagger UI 5 and ReDoc) is mounted at /docs-assets by ``create_app``."""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from lookalike.api.deps import READ

router = APIRouter()
ASSETS = Path(str(resources.files("fastapi_offline") / "static"))  # Swagger UI 5 and ReDoc, packaged


@router.get("/openapi.json", include_in_schema=False, dependencies=READ)
async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=READ)
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="Lookalike API",
                               swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs-assets/swagger-ui.css",
                               swagger_favicon_url="/docs-assets/favicon.png")  # fmt: skip


@router.get("/redoc", include_in_schema=False, dependencies=READ)
async def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title="Lookalike API",
                          redoc_js_url="/docs-assets/redoc.standalone.js",
                          redoc_favicon_url="/docs-assets/favicon.png", with_google_fonts=False)  # fmt: skip
