"""What a request is served with: the service's ``State``, its library once ready, and the API key checks.

The routers get these as FastAPI dependencies, from ``request.app.state.lookalike``, so they hold no closure
over one app. The dependencies only read flags and headers, never the catalog or a file: they are ``async``,
which keeps them on the event loop instead of queueing for a worker thread behind running searches.
"""

import logging
import threading
from typing import Annotated

from fastapi import Depends, Request

from lookalike.api import health, problems
from lookalike.api.metrics import Metrics
from lookalike.api.problems import Problem
from lookalike.api.security import Keys, public_error
from lookalike.config import Settings
from lookalike.jobs.worker import Worker, worker_name
from lookalike.library import Library
from lookalike.maintenance import Background
from lookalike.store import retry
from lookalike.store.errors import Unavailable

log = logging.getLogger("lookalike")


class State:
    """What the running service holds; the library is opened in the background so /healthz answers at once."""

    def __init__(self, settings: Settings, library: Library | None) -> None:
        self.settings = settings
        self.keys = Keys(settings)  # first: a weak key refuses to start before any thread does
        self.library = library
        self.owns_library = library is None  # opened here, so closed here
        self.follow: Background | None = None
        self.worker: Worker | None = None
        self.error: str | None = None
        self.waiting: str | None = None  # why the library is not open yet (a part it needs is unavailable)
        self.ready = threading.Event()
        self.stopping = threading.Event()  # the service is ending: the opener stops waiting for its parts
        self.opener: threading.Thread | None = None
        self.lifetime = threading.Lock()  # the opener's last step and the service's end, one after the other
        self.duplicates_lock = threading.Lock()
        self.metrics = Metrics()
        if library is not None:
            self._opened(library)

    def _opened(self, library: Library) -> None:
        self.library = library
        # photos that other processes add or remove are found (or gone) within sync_interval. A library passed in
        # opened for another role (a test's, a tool's) is served as it is: it refreshes on its searches and
        # maintains after its runs, as the CLI does
        if library.role == "service":
            self.follow = Background(library.spaces, library.maintenance_due, library.maintain).start()
        if self.settings.serve_worker:  # the embedded default needs no extra process to run index jobs
            self.worker = library.worker(f"serve:{worker_name()}")
            self.worker.start_thread()
        self.metrics.images.set_function(lambda: library.catalog.count())
        self.ready.set()

    def start(self) -> None:
        """At the service's start: open the library in a thread of its own, unless it was given open."""
        if not self.ready.is_set():
            self.opener = threading.Thread(target=self.open, name="lookalike-open", daemon=True)
            self.opener.start()

    def stop(self) -> None:
        """At the service's end: stop the opener, the worker and the follower, and close the library if it
        opened it."""
        with self.lifetime:
            self.stopping.set()
        if self.worker is not None:
            self.worker.stop()
        if self.follow is not None:
            self.follow.stop()
        if self.owns_library and self.library is not None:
            self.library.close()

    def open(self) -> None:
        """Open the library in the background; while the catalog, engine or store is unavailable, try again
        with capped backoff (readiness says why it waits); any other error is final (shown by /healthz)."""
        try:
            library = retry.again(self._open_once, lambda exc: isinstance(exc, Unavailable), float("inf"),
                                  until=self.stopping.is_set)  # fmt: skip
        except Unavailable:  # only when the service ended while its parts were down: nothing to open any more
            return
        except Exception as exc:  # shown by /healthz and 503s, without paths or messages: those are logged
            problems.log.exception("the library could not be opened")
            self.error = public_error(exc)
            return
        with self.lifetime:
            if self.stopping.is_set():  # opened just as the service ended: nobody else will close it
                library.close()
                return
            self.waiting = None
            self._opened(library)

    def _open_once(self) -> Library:
        library = None
        try:
            library = Library(self.settings, role="service")
            _ = library.space, library.embedder  # the slow part: load index and model before serving
            try:
                health.warm_up(library)  # what the first search needs, loaded before saying ready
            except Unavailable:
                raise
            except Exception:  # a warm-up that fails must not keep the service down: the first search will tell
                log.exception("warming up with a first search failed")
            return library
        except Unavailable as exc:
            self.waiting = f"waiting for {exc.part}; the service's log has the details"
            log.warning("waiting for %s: %s", exc.part, exc)
            if library is not None:
                library.close()
            raise


async def service(request: Request) -> State:
    return request.app.state.lookalike


Service = Annotated[State, Depends(service)]


async def ready_library(state: Service) -> Library:
    """The library, or 503 while it loads, after it failed to open, or while a part it needs is away."""
    if state.error:
        raise Problem(503, "Library unavailable", state.error)
    if not state.ready.is_set() or state.library is None:
        raise Problem(503, "Loading", state.waiting or "the index and model are loading; retry in a few seconds")
    if state.follow is not None and state.follow.away:  # an outage: its index may be behind, its writes fail
        raise Problem(503, "Service unavailable", f"{state.follow.away}; retry shortly")
    return state.library


Lib = Annotated[Library, Depends(ready_library)]


async def read_key(request: Request, state: Service) -> None:
    state.keys.read(request)


async def write_key(request: Request, state: Service) -> None:
    state.keys.write(request)


async def metrics_key(request: Request, state: Service) -> None:
    state.keys.metrics(request)


# the routes' ``dependencies=``: who may call them (see security.Keys)
READ = [Depends(read_key)]
WRITE = [Depends(write_key)]
METRICS = [Depends(metrics_key)]
