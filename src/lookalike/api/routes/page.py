"""The web page at /: one HTML file whose script (``STATIC``, mounted at /static by ``create_app``) calls
the JSON API. The page itself is open; what it shows needs the read key when reads need one."""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter()
STATIC = Path(str(resources.files("lookalike.api") / "static"))


@router.head("/", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def index_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
