"""The web page at /: one HTML file whose script (``STATIC``, mounted at /static by ``create_app``) calls
the JSON API. The page itself is open; what it shows needs the read key when reads need one."""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from lookalike.api.headers import FRAME_ANCESTORS

router = APIRouter()
STATIC = Path(str(resources.files("lookalike.api") / "static"))
# stricter than every response's (headers.py): the page's only script is its own file, with no inline script or
# handler; images and videos are not limited (an original may be a redirect to a presigned bucket URL)
PAGE_POLICY = f"{FRAME_ANCESTORS}; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"


@router.head("/", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def index_page() -> FileResponse:
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY}
    return FileResponse(STATIC / "index.html", headers=headers)
