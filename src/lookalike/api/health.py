"""Liveness and readiness, in the shape Kubernetes probes and compose health checks expect.

``/healthz/live`` (also ``/livez``) answers 200 while the process serves requests at all: restart it only when
this fails. ``/healthz/ready`` (also ``/readyz``) answers 200 only when a search would be served now, and fast:
the library is open, the model and the index are loaded and warmed by a first search (``warm_up``), and the
catalog database, the vector engine and the image store answer; otherwise 503 with ``Retry-After`` and what is
missing, so a load balancer sends no traffic here until it is back. ``/healthz`` is readiness, as before (older
deployments probe it), and so are the ``/api/v1/`` forms. The checks are here; routes/health.py serves them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Literal

from PIL import Image
from pydantic import BaseModel, Field

from lookalike import __version__

log = logging.getLogger("lookalike")


class Health(BaseModel):
    status: Literal["ok", "loading", "unavailable", "error"]
    version: str | None = None
    detail: str | None = Field(default=None, description="what is missing, when not ok")
    checks: dict[str, str] | None = Field(default=None, description="catalog, engine, store, models: ok or why not")


def warm_up(library) -> None:
    """Search once for a small generated photo: loads and touches everything the first real search needs (the
    model's first inference, the copy descriptor, the index, thread pools), so that the first caller after
    "ready" does not pay for it (it took 6.5 s on 2,776 photos when the keypoint index loaded on first use)."""
    buf = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").resize((320, 240)).save(buf, "JPEG", quality=85)
    library.search(buf.getvalue(), k=1)


def _kind(name: str, exc: BaseException) -> str:
    """What an anonymous caller is told of a failed check: its kind, not the message (which can name the
    database's address or a folder); the message goes to the log."""
    log.warning("readiness: the %s check failed: %s: %s", name, type(exc).__name__, exc)
    return f"unavailable ({type(exc).__name__})"


def checks(library) -> dict[str, str]:
    """Each part a search needs, "ok" or why not. Cheap calls: a SELECT 1, a bucket or folder check, a count."""
    probes: dict[str, Callable[[], object]] = {
        "catalog": library.catalog.db.ping,
        "engine": lambda: len(library.vectors),
        "store": library.images.ping,
    }
    out = {}
    for name, probe in probes.items():
        try:
            probe()
            out[name] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is shown
            out[name] = _kind(name, exc)
    out["models"] = "ok"  # loaded and warmed before the library was published to the state
    return out


def readiness(state) -> tuple[int, dict]:
    """(status code, body) of the readiness check for the service's state (api.deps.State)."""
    if state.error:
        return 503, {"status": "error", "detail": state.error}
    if not state.ready.is_set() or state.library is None:
        return 503, {"status": "loading", "detail": state.waiting or "the index and model are loading"}
    found = checks(state.library)
    bad = {k: v for k, v in found.items() if v != "ok"}
    if bad:
        detail = "; ".join(f"{k}: {v}" for k, v in bad.items())
        return 503, {"status": "unavailable", "version": __version__, "detail": detail, "checks": found}
    return 200, {"status": "ok", "version": __version__, "checks": found}
