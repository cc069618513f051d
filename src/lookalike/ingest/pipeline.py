"""The indexing pipeline: read, hash, decode, preprocess and embed in worker threads while the main
thread commits batches.

Each batch is written to the catalog in one transaction, after its thumbnails are in the image store,
so an interrupted run (Ctrl-C or kill -9) loses at most the batch in flight and a re-run picks up exactly
where it stopped. The pipeline writes only the catalog and the image store; the vector space follows the
catalog's change feed (``Library.after_write`` applies it before a batch counts as done). Bad input never
stops the run: every failure of a photo becomes a ``Rejected`` entry with a reason. A failure of the catalog, the
vector engine or the image store is never the photo's: it raises (``DependencyError``, ``Unavailable`` when it
is an outage), and the caller runs the photos again later.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from lookalike.config import Settings
from lookalike.fields import Fields, dumps
from lookalike.imaging import BadImage, Decoded, thumbnail_jpeg
from lookalike.ingest.fetch import FetchError
from lookalike.ingest.reading import Reader
from lookalike.ingest.sources import SourceItem, SourceSet, is_library_folder
from lookalike.ingest.video import Span, VideoError, VideoInfo, VideoLimits, file_sha256, probe
from lookalike.ingest.video import frames as video_frames
from lookalike.models.detectors import Detection
from lookalike.models.loaded import Models
from lookalike.moments import FRAME_FORMAT, frame_key, frame_source, is_video, moment
from lookalike.search.verification import CopyQuery
from lookalike.store.catalog import Catalog, ImageRecord, NewImage, NewVideo
from lookalike.store.errors import DependencyError, EngineError
from lookalike.store.images import ImageStore


@dataclass(frozen=True)
class Rejected:
    source: str
    reason: str


@dataclass(frozen=True)
class Duplicate:
    source: str
    image_id: int  # the image already holding these bytes


@dataclass
class NearDuplicate:
    source: str
    image_id: int  # the new photo
    of: int  # the photo already in the library that is the same picture (edited)
    confidence: float


@dataclass
class IndexReport:
    added: list[int] = field(default_factory=list)  # new image ids
    duplicates: list[Duplicate] = field(default_factory=list)
    near_duplicates: list[NearDuplicate] = field(default_factory=list)  # new photos that copy indexed ones
    unchanged: int = 0
    updated: int = 0  # sources whose file changed and was re-embedded
    rejected: list[Rejected] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # vanished, never pruned: below a folder that lists nothing
    excluded: list[str] = field(default_factory=list)  # removed by the user before: left out (--include-removed)
    detected: int = 0  # indexed photos whose subjects were found in this run (``objects`` on an indexed folder)
    subjects: int = 0  # subjects stored in this run
    videos: int = 0  # video files indexed in this run (each one item)
    frames: int = 0  # their chosen frames, each stored and embedded like a photo
    parts: list[NewVideo] = field(default_factory=list)  # time ranges of videos (``SourceItem.span``) whose frames
    # are all written: the video is recorded once all its ranges are (lookalike.jobs.worker)
    pruned: int = 0
    total: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def doomed(self) -> list[str]:
        """The vanished sources --prune forgets: all but those ``kept``."""
        kept = set(self.kept)
        return [v for v in self.vanished if v not in kept]

    @property
    def rate(self) -> float:
        processed = len(self.added) + len(self.duplicates) + self.updated
        return processed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "added": len(self.added),
            "duplicates": [d.__dict__ for d in self.duplicates],
            "near_duplicates": [d.__dict__ for d in self.near_duplicates],
            "unchanged": self.unchanged,
            "updated": self.updated,
            "rejected": [r.__dict__ for r in self.rejected],
            "vanished": self.vanished,
            "kept": self.kept,
            "excluded": self.excluded,
            "detected": self.detected,
            "subjects": self.subjects,
            "videos": self.videos,
            "frames": self.frames,
            "pruned": self.pruned,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.rate, 1),
            "interrupted": self.interrupted,
        }


@dataclass
class _Prepared:
    item: SourceItem
    sha256: str | None = None
    known_id: int | None = None
    vector: np.ndarray | None = None
    thumbnail: bytes | None = None
    original: bytes | None = None  # kept for URL sources: there is no other copy
    width: int = 0
    height: int = 0
    format: str = ""
    nbytes: int = 0
    error: str | None = None
    detections: list[Detection] | None = None  # None: detection not run for this item
    object_vectors: np.ndarray | None = None
    copy_vector: np.ndarray | None = None  # the copy descriptor (lookalike.models.copy_descriptor)
    part_vector: np.ndarray | None = None  # that of the photo's centre
    near: tuple[int, float] | None = None  # (photo already indexed that this one copies, confidence)
    video: str | None = None  # a video's frame: the video file's sha256 (``item.source`` is video#t=second)
    t: float = 0.0  # ... and its second
    finished: NewVideo | None = None  # not a photo: the video whose frames precede it in the results is complete


ProgressFn = Callable[[int, int, IndexReport], None]
CHUNK = 8  # photos a worker takes at once (one catalog query for all of them)
GROUP_BYTES = 1 << 20  # read photos a worker holds before it decodes them (plus one file): hot in the CPU caches
GuardFn = Callable[[object], None]  # runs inside each batch's catalog transaction; raises to keep it unwritten


# errors of a part the library depends on, whatever call met them (a database, an engine, a socket or a disk)
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (sa.exc.DBAPIError, EngineError, OSError)


@contextlib.contextmanager
def not_the_photo(part: str, kinds: tuple[type[BaseException], ...] = (Exception,)) -> Iterator[None]:
    """Errors of ``kinds`` met while asking the catalog, the engine or the image store about a photo are not the
    photo's fault: they become ``DependencyError`` (outages stay ``Unavailable``), never a rejection. Calls that
    also work on the photo's content (the copy check) pass narrower ``kinds``, so that a photo the check chokes
    on is still rejected alone instead of failing its whole chunk."""
    try:
        yield
    except DependencyError:
        raise
    except kinds as exc:
        raise DependencyError(f"{part}: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def rejected_alone(out: _Prepared) -> Iterator[None]:
    """A failure of the photo itself (unreadable, undecodable, or a bug it triggers) becomes its ``error``, so the
    batch goes on; a ``DependencyError`` (the catalog, engine or store failed) is raised: the photo is run again,
    not rejected."""
    try:
        yield
    except (FetchError, BadImage, VideoError) as exc:
        out.error = str(exc)
    except DependencyError:
        raise
    except Exception as exc:  # a bug or an exotic reader or decoder failure must not end the batch
        out.error = f"unexpected error: {type(exc).__name__}: {exc}"


def still_there(source: str, root: str) -> bool:
    """Whether a source below ``root`` is a file on this machine that can still be opened where it was indexed
    (through links), outside any library's own folder (a run before those were skipped indexed their files)."""
    if not (os.path.isabs(source) and os.path.isfile(source)):
        return False
    top = Path(root)
    return not any(is_library_folder(folder) for folder in Path(source).parents if folder.is_relative_to(top))


def vanished_under(catalog: Catalog, root: str, present: Collection[str]) -> list[str]:
    """Sources recorded below a folder that are not ``present`` any more; a video's frames count as their video,
    named once. A folder the walk could not list (present as its path with a trailing separator:
    sources.walk_folder) keeps everything below it, and so does a file the walk does not list but that is still
    there (named on its own once: a hidden file, a photo with another suffix; or below a linked folder, which
    the walk never follows): only what is really gone may be pruned."""
    out: list[str] = []
    videos: set[str] = set()
    unlisted = tuple(p for p in present if p.endswith(os.sep))
    for src in catalog.sources_under(root):
        if unlisted and src.startswith(unlisted):
            continue
        found = moment(src)
        if found is None and src not in present and not still_there(src, root):
            out.append(src)
        elif found is not None and found[0] not in present and found[0] not in videos:
            videos.add(found[0])
            if not still_there(found[0], root):
                out.append(found[0])
    return out


TWICE = "listed again with another label or record (a CSV's or a manifest's second row for one file): the first is used"
TWIN_REMOVED = ("the indexed photo with the same bytes was removed while this run read it (so it was not read again): "
                "index it again to add it")
EMPTY_ROOT = ("the folder lists no files, but {n} photo(s) were indexed from it: nothing pruned (an unmounted disk, "
              "a moved folder?); if they are gone for good, index it with --prune-empty (prune_empty in a job)")


def emptied_folders(root: str, gone: list[str], present: Collection[str], prune_empty: bool) -> dict[str, list[str]]:
    """The sources ``gone`` from ``root`` that must be kept rather than pruned, by the folder that explains it: the
    highest folder above them, ``root`` included, that is still there but where the walk found nothing at all. An
    unmounted disk leaves its mount point, empty, and that is far more often the case than photos all deleted, so
    ``--prune`` leaves them alone (EMPTY_ROOT) unless ``prune_empty`` says the folder was emptied on purpose. This
    held only for the folder named (a disk mounted at a sub-folder was pruned once unplugged: hostile probe); a
    folder that is gone itself is pruned as before."""
    if not gone or prune_empty:
        return {}
    listed: set[str] = set()  # the folders below which the walk found something (root/, root/a/, ...)
    for source in present:
        if not source.startswith(root):
            continue
        at = source.rfind(os.sep, 0, len(source) - 1)
        while at >= len(root) - 1 and source[: at + 1] not in listed:
            listed.add(source[: at + 1])
            at = source.rfind(os.sep, 0, at)
    held: dict[str, list[str]] = {}
    # the folder named is there (it was listed: a folder, a bucket's prefix); the running library's own folder,
    # never walked, is not a folder of photos (what earlier versions indexed from it is pruned: still_there)
    exists: dict[str, bool] = {root: True}
    for source in gone:
        folder = root
        for name in ["", *source[len(root) :].split(os.sep)[:-1]]:  # root, then each folder down to the file's
            folder += name + os.sep if name else ""
            if folder in listed:
                continue
            if folder not in exists:
                exists[folder] = os.path.isdir(folder) and not is_library_folder(Path(folder))
            if exists[folder]:  # there, and empty: kept; gone itself: what was below it was deleted with it
                held.setdefault(folder, []).append(source)
            break
    return held


def forget_sources(catalog: Catalog, sources: list[str]) -> list[int]:
    """Forget vanished sources (``vanished_under``), a video with its frames; returns the images they pointed at."""
    return catalog.remove_sources(sources) + catalog.forget_videos([s for s in sources if is_video(s)])


def upload_in_use(catalog: Catalog, digest: str) -> bool:
    """Whether uploaded bytes kept in the image store (under their sha256) still back something: a photo with that
    sha256, or any source of an upload of them (``upload:<sha256>/<name>``: a video's frames carry no sha256 of the
    video's bytes)."""
    return catalog.id_for_sha(digest) is not None or bool(catalog.sources_under(f"upload:{digest}/"))


@dataclass
class _Plan:
    """What a run does with the sources it lists (``Pipeline._plan``)."""

    todo: list[SourceItem] = field(default_factory=list)  # to read and prepare
    changed_from: dict[str, int] = field(default_factory=dict)  # a changed file: the image it pointed at
    relabel: dict[str, str | None] = field(default_factory=dict)  # unchanged sources the rule now labels otherwise
    refield: dict[str, Fields | None] = field(default_factory=dict)  # sources whose record (a CSV row...) changed


@dataclass(frozen=True)
class IndexingParts:
    """What indexing needs of a library (``Library.indexing_parts``): where photos are read from and written to,
    the models, the copy check of new photos against the library, and what to do after writing or deleting."""

    settings: Settings
    catalog: Catalog
    images: ImageStore
    reader: Reader
    models: Models
    copy_of: Callable[[CopyQuery], tuple[int, float] | None]
    after_write: Callable[[], None]
    delete_orphans: Callable[[list[int]], list[ImageRecord]]  # those still sourceless as they are deleted


class Pipeline:
    """Runs one indexing job against a library's catalog, image store, index and embedder."""

    def __init__(self, parts: IndexingParts, on_progress: ProgressFn | None = None, objects: bool = False,
                 guard: GuardFn | None = None, include_removed: bool = False) -> None:  # fmt: skip
        """``guard`` runs in each batch's catalog transaction before it writes (a worker checks it still holds
        its task there, so a worker that lost its lease writes nothing more). Sources a user removed are left
        out (and reported) unless ``include_removed``."""
        self.parts = parts
        self.settings = parts.settings
        self.on_progress = on_progress
        self.objects = objects
        self.guard = guard
        self.include_removed = include_removed
        self._redetect: set[str] = set()  # unchanged sources indexed again only for their subjects (run)

    # --- worker side -----------------------------------------------------------
    def _prepare(self, item: SourceItem) -> _Prepared:
        """One photo, start to end (``_prepare_many`` of one)."""
        return self._prepare_many([item])[0]

    def _prepare_many(self, items: list[SourceItem]) -> list[_Prepared]:
        """A worker's chunk of photos: read and hashed in turn, then asked of the catalog together (one query
        for up to ``GROUP_BYTES`` of photos instead of one per photo: it holds the interpreter lock), then each
        decoded, embedded and described unless the catalog holds its bytes already."""
        out: list[_Prepared] = []
        group: list[tuple[_Prepared, bytes]] = []
        held = 0
        for video in (item for item in items if is_video(item.source)):
            out += self._prepare_video(video)
        items = [item for item in items if not is_video(item.source)]
        for n, item in enumerate(items):
            prepared, data = self._read(item)
            out.append(prepared)
            if data is not None:
                group.append((prepared, data))
                held += len(data)
            if group and (held >= GROUP_BYTES or n == len(items) - 1):
                self._known(group)
                for prepared, data in group:
                    self._finish(prepared, data)
                group, held = [], 0
        return out

    def _read(self, item: SourceItem) -> tuple[_Prepared, bytes | None]:
        """The photo's bytes and their sha256; None (and the reason in ``error``) when they cannot be had."""
        out = _Prepared(item)
        with rejected_alone(out):
            if item.error:
                raise FetchError(item.error)
            if item.data is not None:
                data = item.data
                if not data:
                    raise BadImage("empty file (0 bytes)")
            elif item.stored is not None:  # a queued upload: its bytes were put in the image store first
                with not_the_photo("the image store"):
                    stored = self.parts.images.get("original", item.stored)
                if stored is None:
                    raise FetchError("the uploaded bytes are no longer in the image store")
                data = stored
                if not data:
                    raise BadImage("empty file (0 bytes)")
            else:
                data = self.parts.reader.read_source(item.source)
            out.nbytes = len(data)
            out.sha256 = hashlib.sha256(data).hexdigest()
            return out, data
        return out, None

    def _prepare_video(self, item: SourceItem) -> list[_Prepared]:
        """A video: its chosen frames, each embedded and described like a photo (a frame the catalog holds already,
        from a run that was killed half-way, is not embedded again), then the marker that it is complete; or one
        rejected entry with the reason, however far the video got (nothing of it is written then). An item with a
        ``span`` is that time range of the video only: its marker says the range is complete."""
        head = _Prepared(item)
        with rejected_alone(head):
            if item.error:
                raise FetchError(item.error)
            limits = VideoLimits.from_settings(self.settings)
            with self._video_file(item) as path:
                sha = file_sha256(path)
                info = probe(path, limits)
                out = self._frames(item, path, sha, info, limits, Span(*item.span) if item.span else None)
            shown = (out[0].width, out[0].height) if out else (info.width, info.height)  # turned upright
            done = NewVideo(item.source, sha, item.size, item.mtime_ns, info.duration, *shown,
                            tuple(p.item.source for p in out), limits.interval)  # fmt: skip
            return [*out, _Prepared(item, sha256=sha, finished=done)]
        return [head]

    @contextlib.contextmanager
    def _video_file(self, item: SourceItem) -> Iterator[str]:
        """The video as a file to decode: a local one as it is; an upload's as the image store holds it (a local store's
        file, a bucket's object fetched a part at a time into a temporary file); a URL or a bucket's object fetched
        whole under the same caps as a photo (LOOKALIKE_URL_MAX_BYTES, LOOKALIKE_MAX_FILE_BYTES), into a temporary
        file."""
        suffix = Path(item.source.split("?", 1)[0]).suffix.lower()
        if item.stored is not None:
            with contextlib.ExitStack() as stack:
                with not_the_photo("the image store"):  # the store's failure, not the video's
                    path = stack.enter_context(self.parts.images.as_file("original", item.stored, suffix))
                if path is None:
                    raise FetchError("the uploaded bytes are no longer in the image store")
                yield path
            return
        if item.data is None and not (item.is_url or item.source.startswith("s3://")):
            yield item.source
            return
        data = item.data if item.data is not None else self.parts.reader.read_source(item.source)
        with tempfile.NamedTemporaryFile(prefix="lookalike-video-", suffix=suffix) as fh:
            fh.write(data)
            fh.flush()
            del data
            yield fh.name

    def _frames(self, item: SourceItem, path: str, sha: str, info: VideoInfo, limits: VideoLimits,
                span: Span | None) -> list[_Prepared]:  # fmt: skip
        """The chosen frames of a video (or of its ``span``), each embedded and described unless the catalog holds
        it already."""
        out: list[_Prepared] = []
        for frame in video_frames(path, limits, span):
            source = frame_source(item.source, frame.t)
            p = _Prepared(replace(item, source=source, span=None), sha256=frame_key(sha, frame.t), video=sha, t=frame.t,
                          width=frame.width, height=frame.height)  # fmt: skip
            self._known([(p, b"")])
            decoded = Decoded(frame.image, frame.width, frame.height, FRAME_FORMAT)  # as shown: upright
            if p.known_id is None:
                self._describe(p, decoded, None)
                if p.error is not None:
                    raise VideoError(f"frame at {frame.t:.1f} s: {p.error}")
            elif self.objects and self.parts.catalog.detected_with(p.known_id) is None:
                self._detect(p, decoded)  # written by a run without --objects, or killed before its subjects
            out.append(p)
        return out

    def _known(self, group: list[tuple[_Prepared, bytes]]) -> None:
        """Which photos of the group the catalog holds already (by their bytes), in one query."""
        with not_the_photo("the catalog"):
            known = self.parts.catalog.ids_for_shas(p.sha256 for p, _ in group if p.sha256 is not None)
        for prepared, _ in group:
            prepared.known_id = known.get(prepared.sha256 or "")

    def _finish(self, out: _Prepared, data: bytes) -> None:
        """A read photo whose ``known_id`` is settled: embedded, described and thumbnailed unless it is known."""
        with rejected_alone(out):
            catalog = self.parts.catalog
            with not_the_photo("the catalog"):
                undetected = self.objects and out.known_id is not None and catalog.detected_with(out.known_id) is None
            if out.known_id is not None:
                if undetected:
                    self._detect(out, self.parts.models.decode(data))  # known photo, objects still missing
                return  # exact duplicate: no embedding needed
            self._describe(out, self.parts.models.decode(data), data)

    def _describe(self, out: _Prepared, decoded: Decoded, data: bytes | None) -> None:
        """A new photo (or a video's frame: no ``data``) embedded, described and thumbnailed."""
        with rejected_alone(out):
            pixels = self.parts.models.embedder.prepare(decoded.image)
            # embedding here, in the worker, spreads inference over all cores (one interpreter per worker)
            out.vector = self.parts.models.embedder.embed(pixels[None])[0]
            out.width, out.height, out.format = decoded.width, decoded.height, decoded.format
            out.thumbnail = thumbnail_jpeg(decoded.image, self.settings.thumbnail_size, self.settings.thumbnail_quality)
            copy_model = self.parts.models.copy_model
            if copy_model is not None:
                out.copy_vector, out.part_vector = copy_model.describe_stored(decoded.image)
            if copy_model is not None and out.video is None:  # a frame is not reported as a near-duplicate
                query = CopyQuery(out.copy_vector, lambda: decoded.image, decoded.width, decoded.height)
                with not_the_photo("the copy check (vector engine, image store)", DEPENDENCY_ERRORS):
                    out.near = self.parts.copy_of(query)
            if data is not None and (out.item.is_url or out.item.is_upload or self.settings.keep_originals):
                out.original = data
            if self.objects:
                self._detect(out, decoded)

    def _detect(self, out: _Prepared, decoded: Decoded) -> None:
        out.detections = self.parts.models.detect_decoded(decoded)
        out.object_vectors = self.parts.models.embed_objects(decoded, out.detections)

    # --- main side ---------------------------------------------------------------
    def run(self, sets: Iterable[SourceSet], prune: bool = False, prune_empty: bool = False) -> IndexReport:
        report = IndexReport()
        started = time.perf_counter()
        sets = list(sets)
        items = self._wanted(sets, report)
        plan = self._plan(items, report)
        relabelled = bool(plan.relabel) and bool(self.parts.catalog.relabel_sources(plan.relabel))
        if (plan.refield and self.parts.catalog.refield_sources(plan.refield)) or relabelled:
            self.parts.after_write()
        displaced: list[int] = []  # images some source stopped pointing at: removed if nothing else does
        try:
            self._process(plan, report, displaced)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            gone = self._remove_orphans(displaced)
            # a file edited in place is a near-duplicate of its old version, which this run has just removed: not
            # one to tell (the report sent the user to `duplicates` for a photo no longer there: hostile probe)
            report.near_duplicates = [d for d in report.near_duplicates if d.of not in gone]
            report.seconds = time.perf_counter() - started
        if report.interrupted:
            raise KeyboardInterrupt
        # only after a complete run: a failed one saw not every file
        self._vanished(sets, items, report, prune, prune_empty)
        report.seconds = time.perf_counter() - started
        return report

    def _wanted(self, sets: list[SourceSet], report: IndexReport) -> dict[str, SourceItem]:
        """The sources listed, each once, less the files removed with ``lookalike remove`` (reported as
        excluded) unless ``include_removed`` takes them back."""
        items: dict[str, SourceItem] = {}
        for s in sets:
            for it in s.items:
                first = items.setdefault(it.source, it)
                records = first.fields is not None and it.fields is not None  # rows of lists, not two walks' labels
                if first is not it and records and (first.label, first.fields) != (it.label, it.fields):
                    report.rejected.append(Rejected(it.source, TWICE))
        catalog = self.parts.catalog
        sizes = catalog.removed_sizes(s for s, it in items.items() if not it.is_upload)  # an upload is explicit
        # a removal is of the file removed: another one saved under its name since (its size differs) is indexed
        # like any new file (it was left out for good, and reported as removed)
        other = [s for s, size in sizes.items() if size is not None and items[s].size not in (None, size)]
        if other:
            catalog.forget_removed(other)
        removed = set(sizes) - set(other)
        if removed and self.include_removed:
            catalog.forget_removed(removed)
        elif removed:
            report.excluded = sorted(removed)
            items = {s: it for s, it in items.items() if s not in removed}
        report.total = len(items)
        return items

    def _plan(self, items: dict[str, SourceItem], report: IndexReport) -> _Plan:
        """What each source needs: nothing (counted unchanged), a new label or record only, or to be read and
        prepared (a changed file remembering the image it pointed at)."""
        plan = _Plan()
        self._redetect = set()
        catalog = self.parts.catalog
        known = catalog.source_states(items)
        videos = catalog.video_states(s for s in items if is_video(s))  # a URL: unchanged once fetched, as a photo
        for it in items.values():
            video = videos.get(it.source)
            sampled = (it.size, it.mtime_ns, self.settings.video_interval)
            if video is not None and not it.error and (video.size, video.mtime_ns, video.interval) == sampled:
                report.unchanged += 1  # a video whose frames were all written, its file and the sampling unchanged
                continue
            state = known.get(it.source)
            if state is not None and state.label != it.label and not it.error and not (it.is_url or it.is_upload):
                plan.relabel[it.source] = it.label  # files, bucket keys: the rule decides
            if state is not None and it.fields is not None and not it.error and state.fields != dumps(it.fields):
                plan.refield[it.source] = it.fields
            if state is not None and not it.is_url and it.size is not None:
                if state.size == it.size and state.mtime_ns == it.mtime_ns:
                    if self.objects and catalog.detected_with(state.image_id) is None:
                        plan.todo.append(it)  # unchanged, but its subjects were never detected
                        self._redetect.add(it.source)
                        continue
                    report.unchanged += 1
                    continue
                plan.changed_from[it.source] = state.image_id
            elif state is not None and (it.is_url or it.is_upload):
                report.unchanged += 1  # URLs are content-addressed once fetched; re-fetch with --force later
                continue
            plan.todo.append(it)
        return plan

    def _process(self, plan: _Plan, report: IndexReport, displaced: list[int]) -> None:
        """The sources to do, prepared in the worker threads and committed here in batches, in their order; a
        video's frames are written before the video is marked finished."""
        done = report.unchanged
        self._progress(done, report)
        batch: list[_Prepared] = []
        with contextlib.closing(self._prepared_in_order(plan.todo)) as prepared_all:
            for prepared, last in prepared_all:
                if prepared.error is not None:
                    report.rejected.append(Rejected(prepared.item.source, prepared.error))
                    done += 1
                    self._progress(done, report)
                    continue
                if prepared.finished is not None:  # its frames are in the batch: written first, then it
                    if batch:
                        done += self._commit(batch, report, plan.changed_from, displaced)
                        batch = []
                    if prepared.item.span is not None:
                        report.parts.append(prepared.finished)  # a range: recorded when all are
                    else:
                        displaced += self.parts.catalog.finish_video(prepared.finished, self.guard)
                        report.videos += 1
                    done += 1
                    self._progress(done, report)
                    continue
                batch.append(prepared)
                if len(batch) >= self.settings.batch_size or last:
                    done += self._commit(batch, report, plan.changed_from, displaced)
                    batch = []
                    self._progress(done, report)
        if batch:
            done += self._commit(batch, report, plan.changed_from, displaced)
            self._progress(done, report)

    def _prepared_in_order(self, todo: list[SourceItem]) -> Generator[tuple[_Prepared, bool], None, None]:
        """Each source prepared by the worker threads, in order, with whether it is the last; a window of photos
        is read ahead of the commits. Close it to stop: the pool is shut down, queued chunks cancelled."""
        workers = self.settings.resolved_workers
        window = max(workers * 4, self.settings.batch_size * 2)  # photos read ahead of the commits
        # photos go to the workers in chunks (one catalog query each), small enough that every worker gets some
        size = max(1, min(CHUNK, len(todo) // (workers * 4)))
        chunks = (todo[i : i + size] for i in range(0, len(todo), size))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="lookalike-decode")
        pending: deque[tuple[int, Future[list[_Prepared]]]] = deque()
        try:
            exhausted, ahead = False, 0
            while pending or not exhausted:
                while not exhausted and ahead < window:
                    nxt = next(chunks, None)
                    if nxt is None:
                        exhausted = True
                    else:
                        pending.append((len(nxt), pool.submit(self._prepare_many, nxt)))
                        ahead += len(nxt)
                if not pending:
                    break
                count, future = pending.popleft()
                ahead -= count
                results = future.result()
                for n, prepared in enumerate(results):
                    yield prepared, exhausted and not pending and n == len(results) - 1
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _commit(self, batch: list[_Prepared], report: IndexReport, changed_from: dict[str, int],
                displaced: list[int]) -> int:  # fmt: skip
        fresh = [p for p in batch if p.known_id is None]
        store = self.parts.images
        for p in fresh:
            assert p.sha256 is not None and p.thumbnail is not None  # a fresh photo was read and decoded
            store.put("thumbnail", p.sha256, p.thumbnail)
            if p.original is not None:
                store.put("original", p.sha256, p.original)
        rows = []
        for p in batch:
            assert p.sha256 is not None  # in a batch only when read and hashed without error
            rows.append(
                NewImage(
                    sha256=p.sha256,
                    source=p.item.source,
                    label=p.item.label,
                    width=p.width,
                    height=p.height,
                    format=p.format,
                    bytes=p.nbytes,
                    size=p.item.size,
                    mtime_ns=p.item.mtime_ns,
                    embedding=p.vector if p.known_id is None else None,
                    has_original=p.original is not None,
                    copy_vector=p.copy_vector if p.known_id is None else None,
                    part_vector=p.part_vector if p.known_id is None else None,
                    fields=p.item.fields,
                    video=p.video,
                    t=p.t,
                )
            )
        written = self.parts.catalog.add_batch(rows, guard=self.guard)
        displaced += written.displaced
        # a file of known bytes whose photo was removed meanwhile has nothing to be written with: said, not dropped
        missed = {row.source for row in rows} - {row.source for row, _, _ in written.rows}
        report.rejected += [Rejected(source, TWIN_REMOVED) for source in sorted(missed)]
        detected = {p.item.source: p for p in batch if p.detections is not None}
        prepared = {p.item.source: p for p in batch if p.near is not None}
        for row, image_id, is_new in written.rows:
            if row.source in detected:
                p = detected.pop(row.source)
                assert p.detections is not None and p.object_vectors is not None  # set together by _detect
                objects = [(d.box, d.label, d.score, v) for d, v in zip(p.detections, p.object_vectors, strict=True)]
                self.parts.catalog.set_objects(image_id, self.parts.models.detector.name, objects)
                report.subjects += len(objects)
                if row.source in self._redetect:
                    report.detected += 1
                    continue  # not a duplicate of itself: the same photo, now with its subjects
            if row.video is not None:
                report.frames += is_new
                continue  # counted with its video
            if row.source in changed_from:
                report.updated += 1
            if is_new:
                if row.source not in changed_from:
                    report.added.append(image_id)
                near = prepared[row.source].near if row.source in prepared else None
                if near is not None and near[0] != image_id:
                    report.near_duplicates.append(NearDuplicate(row.source, image_id, near[0], round(near[1], 3)))
            elif row.source not in changed_from:
                report.duplicates.append(Duplicate(row.source, image_id))
        self.parts.after_write()  # searchable (in this process, and in a shared engine) before it counts as done
        return sum(p.video is None for p in batch)  # frames count with their video

    def _remove_orphans(self, candidates: list[int]) -> set[int]:
        orphans = self.parts.catalog.orphans(candidates) if candidates else []
        return {rec.id for rec in self.parts.delete_orphans(orphans)} if orphans else set()

    def _vanished(self, sets: list[SourceSet], items: dict[str, SourceItem], report: IndexReport, prune: bool,
                  prune_empty: bool = False) -> None:  # fmt: skip
        listed = items.keys() | set(report.excluded)  # files removed before are there: their folder lists something
        for s in sets:
            if s.root is not None:
                gone = vanished_under(self.parts.catalog, s.root, items)
                report.vanished += gone
                for folder, below in emptied_folders(s.root, gone, listed, prune_empty).items():
                    report.kept += below
                    report.rejected.append(Rejected(folder, EMPTY_ROOT.format(n=len(below))))
        doomed = report.doomed
        if prune and doomed:
            touched = forget_sources(self.parts.catalog, doomed)
            orphans = self.parts.catalog.orphans(touched)
            report.pruned = len(self.parts.delete_orphans(orphans))

    def _progress(self, done: int, report: IndexReport) -> None:
        if self.on_progress is not None:
            self.on_progress(done, report.total, report)
