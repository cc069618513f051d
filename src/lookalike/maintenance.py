"""Work that keeps a library healthy, done off the request path: re-learning the whitening into a new
space, and tidying (feed pruning, dropping replaced collections and transforms).

The re-learning rule, so that no process ever rebuilds millions of vectors unasked:

- the whitening is learned once the library holds ``whiten_min_photos`` photos (256);
- it is re-learned automatically when the library has doubled (or halved) since, but only while the
  library holds at most ``whiten_auto_max`` photos (100,000): a re-learn re-projects and re-indexes every
  vector, so above that size only ``lookalike reindex`` re-learns;
- it is fitted on at most ``whiten_sample`` photos (50,000) drawn at random from the catalog, and keeps
  the leading directions that explain ``whiten_variance`` (0.9) of the variance, at most ``whiten_max_dim``.

A new transform is stored in the catalog with a new version, its space is built beside the active one
(the process doing it keeps serving from the old one), then the catalog's pointer switches every process
to it; one process at a time re-learns (a catalog lock).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from lookalike.config import Settings
from lookalike.search.whitening import Whitening
from lookalike.spaces import Spaces
from lookalike.store.catalog.database import Held, LockLost
from lookalike.store.errors import Unavailable
from lookalike.vectorspace import IDENTITY, WHITENING, SpaceKey, drop_collection

log = logging.getLogger("lookalike")


def whitening_wanted(settings: Settings, n: int) -> bool:
    return bool(settings.whiten) and n >= settings.whiten_min_photos


def recipe(settings: Settings) -> str:
    """What a whitening is learned with; a transform learned with other settings (or by an earlier version,
    under the old n/8 rule) is re-learned by the automatic rule, within its size limit."""
    s = settings
    return json.dumps({"variance": s.whiten_variance, "max_dim": s.whiten_max_dim, "power": s.whiten_power,
                       "shrink": s.whiten_shrink}, sort_keys=True)  # fmt: skip


def relearn_due(spaces: Spaces) -> bool:
    """Whether the automatic rule asks for a new transform now."""
    n = spaces.catalog.count()
    current = spaces.space.transform
    if not whitening_wanted(spaces.settings, n):
        return current is not None  # whitening switched off, or the library shrank below the minimum
    if current is None:
        return True
    if n > spaces.settings.whiten_auto_max:
        return False
    return n >= 2 * current.fitted_on or 2 * n <= current.fitted_on or current.recipe != recipe(spaces.settings)


def learn_transform(spaces: Spaces) -> int:
    """Fit the transform the rule asks for on a bounded sample; store it; return its version."""
    s, catalog = spaces.settings, spaces.catalog
    n = catalog.count()
    if not whitening_wanted(s, n):
        return catalog.add_transform(IDENTITY, spaces.model_dim, n, b"")
    ids = catalog.sample_ids(s.whiten_sample, seed=n)
    chunks = (catalog.vectors(ids[i : i + 4096]).matrix for i in range(0, len(ids), 4096))
    fitted = Whitening.fit(chunks, s.whiten_max_dim, s.whiten_power, s.whiten_variance, s.whiten_shrink)
    fitted = Whitening(fitted.mean, fitted.projection, n, recipe(s))  # the rule compares with the library's size
    return catalog.add_transform(WHITENING, fitted.dim, n, fitted.to_bytes())


def rebuild(spaces: Spaces, backend: str | None = None, force: bool = False, wait: bool = True) -> SpaceKey | None:
    """Learn a new transform when due (always with ``force``), build its space in ``backend`` (default:
    the active one), switch every process to it. Returns the new key, or None when nothing was due or
    another process is re-learning (``wait`` off)."""
    with spaces.catalog.lock("relearn", wait=wait) as got:
        if not got:
            return None
        spaces.refresh()
        active = spaces.space.key
        target = backend or active.backend
        if not force and target == active.backend and not relearn_due(spaces):
            return None
        started = time.perf_counter()
        key = SpaceKey(target, learn_transform(spaces))
        # a build killed before its switch leaves its collections behind: tidy drops them (building_spaces)
        building = f"{BUILDING}{key.to_json()}"
        spaces.catalog.set_metas({building: str(time.time())})
        space = spaces.build_space(key)
        got.check()  # a database restart mid-build ended the lock: another tidy may have taken the new transform
        spaces.activate(space)
        spaces.catalog.delete_meta(building)
        log.info("built space %s in %.1f s", space.names[0], time.perf_counter() - started)
        return key


BUILDING = "building:"  # a catalog meta key's prefix: a space being built by rebuild, its key after it


def _let_go(spaces: Spaces, key: SpaceKey, active: SpaceKey, dropped: list[str]) -> bool:
    """Drop a space that is not the active one: a shared space's collections (by name, where they exist; added to
    ``dropped``), an embedded one's folder going with the other stale folders. False when the engine could not be
    asked: its version is kept, and the next tidy tries again."""
    if not key.shared or key == active:
        return True
    try:
        for name in (*spaces.names_for(key), pooled_centres(spaces, key)):
            drop_collection(key.backend, name, spaces.settings)
    except Exception as exc:  # an engine that is gone or unreachable: try again next time
        log.warning("could not drop the collections of %s: %s", key.to_json(), exc)
        return False
    dropped.append(key.to_json())
    return True


def building_spaces(spaces: Spaces, active: SpaceKey, keep_versions: set[int], dropped: list[str], held: Held
                    ) -> None:  # fmt: skip
    """Spaces a rebuild began and never switched to (its process was killed mid-build: at a million photos, a whole
    copy of the vectors left in the engine for good): dropped. Called with the "relearn" lock ``held``, so no
    rebuild is running."""
    for meta_key in spaces.catalog.meta_items(BUILDING):
        key = SpaceKey.from_json(meta_key.removeprefix(BUILDING))
        held.check()
        if _let_go(spaces, key, active, dropped):
            spaces.catalog.delete_meta(meta_key)
        else:
            keep_versions.add(key.version)


def tidy(spaces: Spaces) -> dict[str, Any]:
    """Prune the change feed, drop replaced collections after their grace period, delete unused transforms
    and stale embedded index folders of this library directory."""
    s, catalog = spaces.settings, spaces.catalog
    dropped: list[str] = []  # the retired spaces whose collections were dropped
    done = {"changes_pruned": 0, "dropped": dropped}
    keep_from = catalog.last_seq()
    if spaces.active_key().shared:
        keep_from = min(keep_from, int(catalog.get_meta(spaces.space.cursor_key) or 0))
    done["changes_pruned"] = catalog.prune_changes(keep_from, s.change_retention)
    # what is dropped depends on which space is active, and a rebuild switches it: all of it is decided under the
    # rebuilds' lock, from the active space read inside it; while a rebuild runs, the next tidy does it (a tidy
    # that read the active space before a rebuild switched deleted the new space's transform: no process could
    # open the library any more)
    with catalog.lock("relearn", wait=False) as held:
        if held:
            try:
                _drop_unused(spaces, spaces.active_key(), dropped, held)
            except LockLost as exc:  # the database restarted meanwhile: the next tidy does the rest
                log.warning("tidying stopped: %s", exc)
    return done


def _drop_unused(spaces: Spaces, active: SpaceKey, dropped: list[str], held: Held) -> None:
    """The part of ``tidy`` that deletes: retired and abandoned spaces, transforms nothing uses, stale folders; each
    step only while the lock is still ``held``."""
    s, catalog = spaces.settings, spaces.catalog
    now = time.time()
    keep_versions = {active.version}
    for meta_key, retired_at in catalog.meta_items("retired:").items():
        key = SpaceKey.from_json(meta_key.removeprefix("retired:"))
        held.check()
        if now - float(retired_at) >= s.retire_grace and _let_go(spaces, key, active, dropped):
            catalog.delete_meta(meta_key)
        else:
            keep_versions.add(key.version)
    building_spaces(spaces, active, keep_versions, dropped, held)
    held.check()
    catalog.delete_transforms(keep_versions)
    if active.shared and _drop_pooled_centres(spaces, active, now):
        dropped.append(pooled_centres(spaces, active))
    folder = spaces.home / "vectors"
    held.check()
    if folder.is_dir():
        current = set(spaces.names_for(active)) if not active.shared else set()
        for child in folder.iterdir():
            manifest = child / "index.json"
            if child.is_dir() and child.name not in current:
                age = now - (manifest.stat().st_mtime if manifest.exists() else child.stat().st_mtime)
                if age >= s.retire_grace:
                    shutil.rmtree(child, ignore_errors=True)
            elif child.is_file() and child.name.startswith("index"):  # files of versions before spaces
                child.unlink(missing_ok=True)


def pooled_centres(spaces: Spaces, key: SpaceKey) -> str:
    """The collection of pooled centres a space kept before schema version 8, which nothing reads any more."""
    return spaces.names_for(key)[3].replace("_centres_v", "_parts_v")


def _drop_pooled_centres(spaces: Spaces, key: SpaceKey, now: float) -> bool:
    """Drop the active shared space's pooled centres once (an embedded library deletes its folder on open), a grace
    period after tidying first saw it: a process of the earlier version still running writes to it until then.
    At a million photos it holds 2 GB of vectors in the engine."""
    catalog = spaces.catalog
    name = pooled_centres(spaces, key)
    meta = f"pooled-centres:{name}"
    seen = catalog.get_meta(meta)
    if seen == "dropped":
        return False
    if seen is None:
        catalog.set_metas({meta: str(now)})
        seen = str(now)
    if now - float(seen) < spaces.settings.retire_grace:
        return False
    try:
        drop_collection(key.backend, name, spaces.settings)
    except Exception as exc:  # an engine that is unreachable: try again next time
        log.warning("could not drop the pooled centres %s: %s", name, exc)
        return False
    catalog.set_metas({meta: "dropped"})
    return True


def describe(spaces: Spaces) -> dict[str, Any]:
    """The active space, for stats: transform, engine, collections."""
    space = spaces.space
    t = space.transform
    return {
        "space": json.loads(space.key.to_json()),
        "collections": list(space.names),
        "whitening": f"{spaces.model_dim} -> {t.dim}, learned from {t.fitted_on} photos" if t is not None else "off",
    }


class Background:
    """The thread a long-running process (the service) follows the catalog with.

    Every ``sync_interval`` seconds it brings the active space up to date (and switches to a new one),
    so photos added or removed by any other process are found within about that time; after writes,
    and every minute, it runs the re-learning rule and tidies; every 30 seconds (or 20x as long as the
    last save took) it saves the embedded index if it changed, so a restart loads it instead of rebuilding.
    Requests never do any of this. While the catalog (or engine, or store) is unavailable, ``away`` says why:
    the service answers 503 at once then (its index may be behind), and again once a look worked.
    """

    def __init__(self, spaces: Spaces, due: threading.Event, maintain: Callable[[], None], save_every: float = 30.0,
                 maintain_every: float = 60.0) -> None:  # fmt: skip
        """``due`` is set after writes; ``maintain`` re-learns when the rule says so and tidies."""
        self.spaces, self.due, self.maintain = spaces, due, maintain
        self.save_every, self.maintain_every = save_every, maintain_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lookalike-follow", daemon=True)
        self.away: str | None = None  # why the last look at the catalog failed (an outage), None when it worked
        if not spaces.following:  # its searches would refresh too, beside this thread
            raise ValueError("a library followed in the background is opened with role='service'")

    def start(self) -> Background:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        spaces, interval = self.spaces, self.spaces.settings.sync_interval
        last_save = last_maintain = time.monotonic()
        save_took = 0.0
        while not self._stop.wait(interval):
            try:
                spaces.refresh(wait=False)
                now = time.monotonic()
                since = now - last_maintain
                if (self.due.is_set() and since > 5) or since > self.maintain_every:
                    self.due.clear()
                    last_maintain = now
                    self.maintain()
                if now - last_save > max(self.save_every, 20 * save_took):
                    spaces.save()  # a large index is written less often: at most 5 % of the time
                    save_took, last_save = time.monotonic() - now, time.monotonic()
            except Unavailable as exc:  # a database, engine or store briefly away: try again next round
                if self.away is None:
                    log.warning("following the catalog: %s; trying again every %.1f s", exc, interval)
                self.away = f"{exc.part} is unavailable: {exc}"
                continue
            except Exception:
                log.exception("following the catalog failed; retrying")
            if self.away is not None:
                log.warning("following the catalog again")
                self.away = None
