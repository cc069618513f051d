"""Where indexing time goes: the CPU time of each stage of the default ``lookalike index`` pipeline, per photo.

Two photo sets: the shared Towhee train photos (~500x375 JPEGs), and 12-megapixel JPEGs made here from them
(upscaled to 4000x3000, or 3000x4000 for an upright photo, JPEG quality 90, in a temporary folder). Per set:

- the stages one by one, on one thread: ``Pipeline._prepare_many`` (the worker side) called on each chunk of
  photos (as a worker takes them) in turn and ``Pipeline._commit`` (the main side) on each batch, on a fresh
  library, with the functions they call wrapped (at run time, in this process only) to add up their CPU time
  (``time.process_time``). The decode is split into its steps by a step-by-step copy of ``imaging.decode``
  (checked to give the same pixels), run on its own;
- a real ``Library.index`` run of the same photos on another fresh library (worker threads and the main thread),
  the same functions wrapped with ``time.thread_time`` (the CPU of the thread that made each call), beside the
  whole run's process CPU: what no wrapped call accounts for is the rest (thread pool, futures, pipeline loop);
- whether each stage holds the interpreter lock (GIL): the stage over a sample of the photos (photos the library
  does not hold yet) on 1 thread, then on 2 threads (half each; main-side stages on a library per thread). A pair
  of passes counts only when other processes used at most 0.25 of a core meanwhile (``/proc/stat``; the machine
  is shared); the fastest of 3 such pairs is kept. Reported: the wall-clock speedup (a stage that releases the lock
  scales to ~2x on 2 free cores), the cores it kept busy, the share of its threads' time spent blocked (neither
  running nor waiting for a core, from ``/proc/thread-self/schedstat``: GIL waits show here), and a verdict that
  places the speedup between two controls measured the same way: a pure-Python loop (holds the GIL) and sha256
  of a 4 MB buffer (releases it).

``--objects`` adds subject detection and subject embeddings (one thread and 2 threads, as above) and a real
``Library.index(objects=True)`` run, in a table of their own. CPU times are per photo of the set (main-side
stages too: a batch's cost divided by its photos). Wall-clock times are only used for the photos/s rows and the
2-thread speedups.

    python bench/ingest_profile.py [--limit N] [--big N] [--gil-sample N] [--repeat R] [--objects] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import itertools
import math
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from PIL import Image
from rich.console import Console
from rich.table import Table

from lookalike import imaging
from lookalike.config import Settings
from lookalike.ingest import fetch, sources
from lookalike.ingest import pipeline as pipeline_module
from lookalike.ingest.pipeline import IndexReport, Pipeline
from lookalike.library import Library
from lookalike.models.registry import load_embedder
from lookalike.search.verification import CopyQuery
from lookalike.tuning import tune_process

SHARED = Path(os.environ.get("LOOKALIKE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TRAIN = SHARED / "datasets" / "towhee_reverse_image_search" / "train"
REPS = 3  # pairs of 1-thread and 2-thread passes of a stage, run while the machine is quiet; the best is kept
MAX_TRIES = 8  # pairs tried at most
QUIET = 0.25  # the cores other processes may use during a pass that counts as quiet
MIN_PASS = 0.25  # seconds a 1-thread pass should last at least (short stages go through their items again)
err = Console(stderr=True)


# --- measuring wrapped calls ----------------------------------------------------------------------------------
class Meter:
    """CPU seconds of wrapped calls by (caller, name): the caller is the wrapped call this one ran inside (None at
    the top), so nested calls are never counted twice in a sum of the top level."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.cpu: dict[tuple[str | None, str], float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.active = True
        self._lock = threading.Lock()
        self._local = threading.local()

    def wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.active:
                return fn(*args, **kwargs)
            stack = self._local.__dict__.setdefault("stack", [])
            parent = stack[-1] if stack else None
            stack.append(name)
            started = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = self.clock() - started
                stack.pop()
                with self._lock:
                    self.cpu[(parent, name)] += spent
                    self.calls[name] += 1

        return timed

    def of(self, name: str, parent: str | None | type = object) -> float:
        """Seconds spent in ``name`` (only inside ``parent`` when given; None: at the top level)."""
        return sum(v for (p, n), v in self.cpu.items() if n == name and (parent is object or p == parent))

    def under(self, parent: str | None) -> float:
        return sum(v for (p, _), v in self.cpu.items() if p == parent)


class Patches:
    """Wrap methods and module globals with a meter; ``undo`` puts every original back."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._undo: list[tuple[object, str, bool, object]] = []

    def method(self, obj: object, attr: str, name: str) -> None:
        if obj is None or not hasattr(obj, attr):
            return
        own = attr in getattr(obj, "__dict__", {})
        saved = vars(obj)[attr] if own else None
        setattr(obj, attr, self.meter.wrap(name, getattr(obj, attr)))
        self._undo.append((obj, attr, own, saved))

    def function(self, fn: Callable, name: str) -> int:
        """Every global of a ``lookalike`` module bound to ``fn`` (wherever the code imported it)."""
        wrapped, found = self.meter.wrap(name, fn), 0
        for module in [m for k, m in list(sys.modules.items()) if k.split(".")[0] == "lookalike" and m is not None]:
            for attr, value in list(vars(module).items()):
                if value is fn:
                    setattr(module, attr, wrapped)
                    self._undo.append((module, attr, True, fn))
                    found += 1
        return found

    def replace(self, obj: object, attr: str, value: object) -> None:
        self._undo.append((obj, attr, True, getattr(obj, attr)))
        setattr(obj, attr, value)

    def undo(self) -> None:
        for obj, attr, own, saved in reversed(self._undo):
            if own:
                setattr(obj, attr, saved)
            else:
                delattr(obj, attr)
        self._undo.clear()


def searcher(lib: Library) -> object:
    """Where the pipeline's copy check goes."""
    return lib.searcher


def models(lib: Library) -> object:
    """Whose detect_decoded / embed_objects the pipeline calls."""
    return lib.models


def pipeline_for(lib: Library, objects: bool = False) -> Pipeline:
    parts = lib.indexing_parts()
    return Pipeline(parts, objects=objects)


def instrument(lib: Library, meter: Meter) -> Patches:
    """Wrap what the pipeline calls, on this library (and the shared embedder), with ``meter``."""
    p = Patches(meter)
    p.method(Pipeline, "_prepare_many", "worker")
    p.method(Pipeline, "_commit", "commit")
    # worker side
    p.function(fetch.read_file, "read")
    p.replace(pipeline_module, "hashlib", SimpleNamespace(sha256=meter.wrap("sha256", hashlib.sha256)))
    p.method(lib.catalog, "ids_for_shas", "lookup")
    p.function(imaging.decode, "decode")
    p.method(lib.embedder, "prepare", "prepare")
    p.method(lib.embedder, "embed", "embed")
    p.function(imaging.thumbnail_jpeg, "thumbnail")
    p.method(lib.copy_model, "describe_stored", "describe")
    p.method(searcher(lib), "copy_of", "copy_of")
    p.method(models(lib), "detect_decoded", "detect")
    p.method(models(lib), "embed_objects", "embed_objects")
    # main side
    p.function(sources.expand, "list")
    p.method(lib.catalog, "removed_among", "checks")
    p.method(lib.catalog, "source_states", "checks")
    p.method(lib.images, "put", "store")
    p.method(lib.catalog, "add_batch", "add_batch")
    p.method(lib.catalog, "set_objects", "set_objects")
    p.method(lib, "after_write", "after_write")
    for attr in ("changes_since", "last_seq", "pruned_upto"):
        p.method(lib.catalog, attr, "feed")
    for attr in ("vectors", "copy_vectors", "object_vectors"):
        p.method(lib.catalog, attr, "read_vectors")
    for index in lib.space.indexes():
        p.method(index, "add", "index_add")
    p.method(lib, "maintain", "maintain")
    return p


def open_library(settings: Settings, embedder, home: Path, objects: bool = False, models: bool = True) -> Library:
    """A fresh library with what ``Library.index`` loads first already loaded (not part of the timed run)."""
    lib = Library(settings.model_copy(update={"home": home}), embedder=embedder)
    if models:
        _ = lib.copy_model
    _ = lib.space
    if objects:
        _ = lib.detector
    return lib


# --- the runs -------------------------------------------------------------------------------------------------
@dataclass
class Run:
    meter: Meter
    cpu: float  # process CPU seconds
    wall: float
    report: IndexReport | None = None
    others: float = 0.0  # cores other processes kept busy meanwhile (the machine is shared)


@dataclass
class Pass:
    """One run of a stage over its items on 1 or 2 threads."""

    wall: float
    cpu: float  # process CPU seconds
    others: float  # cores other processes used meanwhile
    blocked: float  # share of the threads' time neither running nor waiting for a core (GIL and other lock waits)


@dataclass
class Scaling:
    n: int  # calls per pass
    one: Pass
    two: Pass
    quiet: bool  # both passes ran while other processes used at most QUIET cores

    @property
    def speedup(self) -> float:
        return self.one.wall / self.two.wall

    @property
    def busy(self) -> float:  # cores busy on average while 2 threads ran it
        return self.two.cpu / self.two.wall

    def verdict(self, held: Scaling | None, released: Scaling | None) -> str:
        """Where the speedup lies between that of a pure-Python loop (holds the GIL) and of hashing a large buffer
        (releases it), each measured while other processes left both cores free."""
        if held is None or released is None or not (self.quiet and held.quiet and released.quiet):
            return "inconclusive (cores busy elsewhere)"
        share = (self.speedup - held.speedup) / (released.speedup - held.speedup)
        return "released" if share >= 0.75 else "held" if share <= 0.25 else "partly"


@dataclass
class Profile:
    name: str
    n: int
    real: Run
    seq: Run
    steps: dict[str, float]  # the decode's steps, process CPU seconds over all photos
    turned: int
    gil: dict[str, Scaling]
    objects: dict[str, float] = field(default_factory=dict)  # process CPU seconds over all photos
    subjects: int = 0
    with_subjects: int = 0
    real_objects: Run | None = None
    mean_bytes: float = 0.0


def real_run(settings: Settings, embedder, root: Path, home: Path, objects: bool = False) -> Run:
    lib = open_library(settings, embedder, home, objects)
    meter = Meter(time.thread_time)
    patches = instrument(lib, meter)
    try:
        ticks, cpu0, wall0 = system_ticks(), time.process_time(), time.perf_counter()
        report = lib.index([str(root)], objects=objects)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        others = others_between(ticks, system_ticks())
    finally:
        patches.undo()
        lib.close()
    assert not report.rejected, report.rejected[:3]
    return Run(meter, cpu, wall, report, others)


def system_ticks() -> tuple[int, int, int]:
    """(busy, total) clock ticks of all cores, and this process's CPU ticks."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait, int(fields[11]) + int(fields[12])


def others_between(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """Cores other processes (and other virtual machines: steal) kept busy between two ``system_ticks``."""
    busy, total, mine = (a - b for a, b in zip(after, before, strict=True))
    return max(0.0, (busy - mine) / max(total, 1) * (os.cpu_count() or 1))


def thread_sched() -> tuple[float, float]:
    """This thread's (CPU seconds, seconds runnable but waiting for a core), from the kernel's schedstat."""
    with open("/proc/thread-self/schedstat") as f:
        ran, waited = f.read().split()[:2]
    return int(ran) / 1e9, int(waited) / 1e9


def scaling(
    fn: Callable[[object, int], object],
    n: int,
    pool: ThreadPoolExecutor,
    contexts: Callable[[int], list] | None = None,
    close: Callable[[object], None] | None = None,
) -> Scaling:
    """``fn(context, i)`` over the items on one thread, then on two (even and odd i), until REPS pairs of passes
    ran while other processes left the cores free (at most MAX_TRIES pairs); the fastest of each is kept. Items
    without a context are gone through several times over when one pass would take less than MIN_PASS seconds."""
    rounds = 1
    if contexts is None:
        started = time.perf_counter()
        for i in range(n):
            fn(None, i)
        rounds = max(1, math.ceil(MIN_PASS / max(time.perf_counter() - started, 1e-6)))
    calls = n * rounds

    def run(threads: int) -> Pass:
        ctx = contexts(threads) if contexts else [None] * threads
        lives: list[tuple[float, float, float]] = []

        def part(k: int) -> None:
            ran0, waited0 = thread_sched()
            started = time.perf_counter()
            for i in range(k, calls, threads):
                fn(ctx[k], i % n)
            ran1, waited1 = thread_sched()
            lives.append((time.perf_counter() - started, ran1 - ran0, waited1 - waited0))

        ticks, cpu0, wall0 = system_ticks(), time.process_time(), time.perf_counter()
        for future in [pool.submit(part, k) for k in range(threads)]:
            future.result()
        wall, cpu, others = (
            time.perf_counter() - wall0,
            time.process_time() - cpu0,
            others_between(ticks, system_ticks()),
        )
        for c in ctx if close is not None else []:
            close(c)
        blocked = sum(w - r - q for w, r, q in lives) / sum(w for w, _, _ in lives)
        return Pass(wall, cpu, others, max(0.0, blocked))

    quiet: list[tuple[Pass, Pass]] = []
    noisy: list[tuple[Pass, Pass]] = []
    for _ in range(MAX_TRIES):
        pair = (run(1), run(2))
        (quiet if max(pair[0].others, pair[1].others) <= QUIET else noisy).append(pair)
        if len(quiet) >= REPS:
            break
        if pair not in quiet:
            time.sleep(1.0)  # let the other processes' burst pass
    kept = quiet or noisy
    return Scaling(
        calls,
        min((a for a, _ in kept), key=lambda x: x.wall),
        min((b for _, b in kept), key=lambda x: x.wall),
        bool(quiet),
    )


def gil_tests(
    lib: Library, pipe: Pipeline, sample: list, settings: Settings, embedder, tmp: Path, objects: bool
) -> dict[str, Scaling]:
    """Each stage on 1 thread and on 2, over ``sample`` (photos not yet in ``lib``, which holds those before)."""
    paths = [it.source for it in sample]
    datas = [fetch.read_file(p, settings.max_file_bytes) for p in paths]
    shas = [hashlib.sha256(d).hexdigest() for d in datas]
    side = max(embedder.input_size, settings.thumbnail_size)
    decoded = [imaging.decode(d, settings.max_pixels, side) for d in datas]
    pixels = [embedder.prepare(d.image) for d in decoded]
    copy_model = lib.copy_model
    copy_vectors = [copy_model.describe_stored(d.image)[0] for d in decoded]
    prepared = [pipe._prepare(it) for it in sample]
    prepared = [p for p in prepared if p.error is None]
    size = max(1, min(settings.batch_size, len(prepared) // 4))
    batches = [prepared[i : i + size] for i in range(0, len(prepared) // size * size, size)]
    batches = batches[: len(batches) // 2 * 2]  # the same number of batches for each of 2 threads
    rows: list[list] = []  # what _commit gives the catalog for each batch, captured once on a scratch library
    counter = itertools.count()
    scratch = open_library(settings, embedder, tmp / "gil-rows", models=False)
    add_batch = scratch.catalog.add_batch
    scratch.catalog.add_batch = lambda items, guard=None: (rows.append(items), add_batch(items, guard=guard))[1]
    scratch_pipe = pipeline_for(scratch)
    for b in batches:
        scratch_pipe._commit(b, IndexReport(), {}, [])
    scratch.close()

    def libraries(threads: int) -> list:
        out = []
        for _ in range(threads):
            new = open_library(settings, embedder, tmp / f"gil-{next(counter)}", models=False)
            out.append((new, pipeline_for(new)))
        return out

    def close(ctx) -> None:
        ctx[0].close()

    def query(i: int) -> CopyQuery:
        d = decoded[i]
        return CopyQuery(copy_vectors[i], lambda: d.image, d.width, d.height)

    n = len(sample)
    tests: dict[str, tuple] = {
        "read": (lambda _, i: fetch.read_file(paths[i], settings.max_file_bytes), n),
        "sha256": (lambda _, i: hashlib.sha256(datas[i]).hexdigest(), n),
        "lookup": (lambda _, i: lib.catalog.ids_for_shas([shas[i]]), n),
        "decode": (lambda _, i: imaging.decode(datas[i], settings.max_pixels, side), n),
        "orientation": (
            lambda _, i: Image.open(io.BytesIO(datas[i]), formats=imaging.FORMATS).getexif().get(0x0112),
            n,
        ),
        "prepare": (lambda _, i: embedder.prepare(decoded[i].image), n),
        "embed": (lambda _, i: embedder.embed(pixels[i][None]), n),
        "thumbnail": (
            lambda _, i: imaging.thumbnail_jpeg(decoded[i].image, settings.thumbnail_size, settings.thumbnail_quality),
            n,
        ),
        "describe": (lambda _, i: copy_model.describe_stored(decoded[i].image), n),
        "copy_of": (lambda _, i: lib.copy_of(query(i)), n),
        "worker": (lambda _, i: pipe._prepare(sample[i]), n),
    }
    if objects:
        found = [models(lib).detect_decoded(d) for d in decoded]
        tests["detect"] = (lambda _, i: models(lib).detect_decoded(decoded[i]), n)
        tests["embed_objects"] = (lambda _, i: models(lib).embed_objects(decoded[i], found[i]), n)
    block = os.urandom(4 << 20)
    tests["held"] = (lambda _, i: sum(range(100_000)), n)  # pure Python: holds the GIL throughout
    tests["released"] = (lambda _, i: hashlib.sha256(block).digest(), n)  # hashlib releases it for large data
    out: dict[str, Scaling] = {}
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: embedder.embed(pixels[i % n][None]), range(4)))  # both interpreters made beforehand
        for name, (fn, count) in tests.items():
            out[name] = scaling(fn, count, pool)
        if batches:
            out["add_batch"] = scaling(
                lambda ctx, b: ctx[0].catalog.add_batch(rows[b]), len(batches), pool, libraries, close
            )
            out["commit"] = scaling(
                lambda ctx, b: ctx[1]._commit(batches[b], IndexReport(), {}, []), len(batches), pool, libraries, close
            )
    return out


def decode_steps(data: bytes, max_pixels: int, side: int, clock) -> tuple[dict[str, float], Image.Image, int]:
    """``imaging.decode`` for a JPEG/PNG/WebP photo, step by step (the same calls in the same order), timed."""
    spent: dict[str, float] = {}
    t = clock()
    im = Image.open(io.BytesIO(data), formats=imaging.FORMATS)
    width, height = im.size
    assert width * height <= max_pixels and im.format != "TIFF"  # the sets here hold none of decode's other paths
    spent["header"], t = clock() - t, clock()
    im.seek(0)
    orientation = im.getexif().get(0x0112, 1)
    spent["exif"], t = clock() - t, clock()
    if side and im.format == "JPEG":
        im.draft(im.mode, (side, side))
    im.load()
    spent["pixels"], t = clock() - t, clock()
    im = imaging.reduced(im, side)
    spent["reduce"], t = clock() - t, clock()
    if orientation in imaging.TURNS:
        im = im.transpose(imaging.TURNS[orientation])
    spent["turn"], t = clock() - t, clock()
    rgb = imaging.to_rgb(im)
    spent["rgb"], t = clock() - t, clock()
    rgb.transpose(Image.Transpose.ROTATE_270)  # what a turn would cost, had the photo needed one
    spent["turn_if"] = clock() - t
    return spent, rgb, orientation


def profile(
    name: str, root: Path, settings: Settings, embedder, tmp: Path, repeat: int, sample_size: int, objects: bool
) -> Profile:
    items = sources.expand(str(root)).items
    n = len(items)
    for it in items:  # in the page cache for every run below
        Path(it.source).read_bytes()
    runs = []
    for r in range(repeat):
        runs.append(real_run(settings, embedder, root, tmp / f"{name}-real{r}"))
        err.print(
            f"[dim]{name}: Library.index run {r + 1}: {runs[-1].wall:.1f} s, {n / runs[-1].wall:.0f} photos/s, "
            f"{runs[-1].cpu:.1f} s CPU[/dim]"
        )
    real = min(runs, key=lambda run: run.cpu)

    # the stages one by one, on this thread
    lib = open_library(settings, embedder, tmp / f"{name}-seq")
    meter = Meter(time.process_time)
    patches = instrument(lib, meter)
    sample_size = min(sample_size, n // 3)
    gil: dict[str, Scaling] = {}
    try:
        pipe = pipeline_for(lib)
        ticks, cpu0, wall0 = system_ticks(), time.process_time(), time.perf_counter()
        paused_cpu = paused_wall = others = 0.0
        todo = sources.expand(str(root)).items
        lib.catalog.removed_among(it.source for it in todo)
        lib.catalog.source_states({it.source: it for it in todo})
        report, batch, chunk = IndexReport(), [], []
        for i, item in enumerate(todo):
            if i == n - sample_size and sample_size:  # the sample: photos the library does not hold yet
                meter.active = False
                c, w = time.process_time(), time.perf_counter()
                others += others_between(ticks, system_ticks()) * (w - wall0)
                err.print(f"[dim]{name}: 1 thread vs 2 threads, {sample_size} photos, library of {i}[/dim]")
                gil = gil_tests(lib, pipe, todo[i:], settings, embedder, tmp / f"{name}-gil", objects)
                paused_cpu += time.process_time() - c
                paused_wall += time.perf_counter() - w
                ticks, resumed = system_ticks(), time.perf_counter()
                meter.active = True
            chunk.append(item)  # the photos a worker takes at once (one catalog query for them)
            if len(chunk) < pipeline_module.CHUNK and i + 1 < n and i + 1 != n - sample_size:
                continue
            for prepared in pipe._prepare_many(chunk):
                assert prepared.error is None, (prepared.item.source, prepared.error)
                batch.append(prepared)
                if len(batch) >= settings.batch_size:
                    pipe._commit(batch, report, {}, [])
                    batch = []
            chunk = []
        if batch:
            pipe._commit(batch, report, {}, [])
        lib.maintain(wait=False)
        wall = time.perf_counter() - wall0 - paused_wall
        others += others_between(ticks, system_ticks()) * (time.perf_counter() - (resumed if paused_wall else wall0))
        seq = Run(meter, time.process_time() - cpu0 - paused_cpu, wall, report, others / wall)
    finally:
        patches.undo()
    err.print(f"[dim]{name}: stage by stage: {seq.wall:.1f} s, {seq.cpu:.1f} s CPU[/dim]")

    # the decode's steps, and the subjects, one photo after another
    steps: dict[str, float] = defaultdict(float)
    found: dict[str, float] = defaultdict(float)
    turned = subjects = with_subjects = 0
    side = max(embedder.input_size, settings.thumbnail_size)
    for k, item in enumerate(items):
        data = fetch.read_file(item.source, settings.max_file_bytes)
        for first in (k % 2 == 0, k % 2 == 1):  # the real decode and the copy, in turns first (warm caches)
            if first:
                t = time.process_time()
                decoded = imaging.decode(data, settings.max_pixels, side)
                steps["decode"] += time.process_time() - t
            else:
                spent, rgb, orientation = decode_steps(data, settings.max_pixels, side, time.process_time)
        assert rgb.tobytes() == decoded.image.tobytes(), item.source  # the copy decodes as imaging.decode does
        for step, secs in spent.items():
            steps[step] += secs
        turned += orientation in imaging.TURNS
        if objects:
            t = time.process_time()
            detections = models(lib).detect_decoded(decoded)
            found["detect"] += time.process_time() - t
            t = time.process_time()
            models(lib).embed_objects(decoded, detections)
            found["embed_objects"] += time.process_time() - t
            subjects += len(detections)
            with_subjects += bool(detections)
    lib.close()
    out = Profile(name, n, real, seq, dict(steps), turned, gil, dict(found), subjects, with_subjects)
    out.mean_bytes = sum(it.size or 0 for it in items) / n
    if objects:
        out.real_objects = real_run(settings, embedder, root, tmp / f"{name}-objects", objects=True)
        err.print(
            f"[dim]{name}: Library.index --objects: {out.real_objects.wall:.1f} s, "
            f"{out.real_objects.cpu:.1f} s CPU[/dim]"
        )
    return out


# --- the photo sets -------------------------------------------------------------------------------------------
def towhee(files: list[str], folder: Path) -> Path:
    """A folder holding exactly the chosen photos (links), in their class folders."""
    for f in files:
        dst = folder / Path(f).parent.name / Path(f).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, dst)
    return folder


def twelve_megapixels(files: list[str], folder: Path, count: int) -> Path:
    """``count`` Towhee photos spread over the set, upscaled to 12 MP (4000x3000 or 3000x4000), JPEG quality 90."""
    chosen = files[:: max(1, len(files) // count)][:count]

    def make(f: str) -> None:
        im = Image.open(f).convert("RGB")
        size = (4000, 3000) if im.width >= im.height else (3000, 4000)
        dst = folder / Path(f).parent.name / (Path(f).stem + ".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.resize(size, Image.Resampling.BICUBIC).save(dst, "JPEG", quality=90)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(make, chosen))
    return folder


# --- the tables -----------------------------------------------------------------------------------------------
def ms(seconds: float, n: int) -> str:
    return f"{1000 * seconds / n:.2f}"


def gil_cells(p: Profile, key: str | None) -> list[str]:
    s = p.gil.get(key) if key else None
    if s is None:
        return ["—", "—", "—", "not measured"]
    blocked = f"{100 * s.one.blocked:.0f}% → {100 * s.two.blocked:.0f}%"
    return [f"{s.speedup:.2f}x", f"{s.busy:.2f}", blocked, s.verdict(p.gil.get("held"), p.gil.get("released"))]


def stage_rows(p: Profile) -> list[list[str]]:
    seq, real, n = p.seq.meter, p.real.meter, p.n
    rows: list[list[str]] = []

    def row(
        label: str, side: str, mine: float, theirs: float | None, gil: str | None = None, share: bool = True
    ) -> None:
        cells = [
            label,
            side,
            ms(mine, n),
            f"{100 * mine / p.seq.cpu:.1f}" if share else "",
            ms(theirs, n) if theirs is not None else "—",
        ]
        rows.append(cells + gil_cells(p, gil))

    def outside(label: str, side: str, key: str, parent: str | None) -> None:
        """The part of ``key``'s time outside every stage measured inside it."""
        row(label, side, seq.of(key, parent) - seq.under(key), real.of(key, parent) - real.under(key))

    worker = ["read", "sha256", "lookup", "decode", "prepare", "embed", "thumbnail", "describe", "copy_of"]
    labels = {
        "read": "read the file (fetch.read_file)",
        "sha256": "sha256 of the bytes",
        "lookup": "known bytes? (Catalog.ids_for_shas, a query per worker chunk)",
        "decode": "decode, orientation included (imaging.decode)",
        "prepare": "model input (embedder.prepare)",
        "embed": "embedding (embedder.embed)",
        "thumbnail": "thumbnail (imaging.thumbnail_jpeg)",
        "describe": "copy descriptor (copy_model.describe_stored)",
        "copy_of": "near-duplicate check (Library.copy_of)",
    }
    for key in worker:
        row(labels[key], "worker", seq.of(key, "worker"), real.of(key, "worker"), key)
        if key == "decode":
            steps = [
                ("header", "header (Image.open)", None),
                ("exif", "orientation: EXIF read", "orientation"),
                ("pixels", "pixels (draft + load)", None),
                ("reduce", "reduce", None),
                ("turn", f"orientation: turn ({p.turned} of {n} photos turned)", None),
                ("rgb", "to RGB", None),
            ]
            for step, label, gil in steps:
                row(f"  · {label}", "worker", p.steps[step], None, gil)
            rest = p.steps["decode"] - sum(p.steps[k] for k, _, _ in steps)
            row("  · rest of imaging.decode (checks, memory budget; by difference)", "worker", rest, None)
            row("  (a turn, had every photo needed one: not in the sums)", "", p.steps["turn_if"], None, share=False)
    outside("rest of Pipeline._prepare_many", "worker", "worker", None)
    row("**worker side (Pipeline._prepare_many)**", "worker", seq.of("worker", None), real.of("worker", None), "worker")
    row("list the folder (sources.expand)", "main", seq.of("list", None), real.of("list", None))
    row(
        "catalog checks before the run (removed_among, source_states)",
        "main",
        seq.of("checks", None),
        real.of("checks", None),
    )
    row(
        "thumbnails into the image store (ImageStore.put)",
        "main",
        seq.of("store", "commit"),
        real.of("store", "commit"),
    )
    row(
        "catalog write + commit (Catalog.add_batch)",
        "main",
        seq.of("add_batch", "commit"),
        real.of("add_batch", "commit"),
        "add_batch",
    )
    row(
        "change feed + vector index (Library.after_write)",
        "main",
        seq.of("after_write", "commit"),
        real.of("after_write", "commit"),
    )
    for key, label in (
        ("feed", "change feed reads (changes_since, last_seq, pruned_upto)"),
        ("read_vectors", "vectors read back (Catalog.vectors, copy_vectors)"),
        ("index_add", "vector index adds (photos, copies, parts)"),
    ):
        row(f"  · {label}", "main", seq.of(key, "after_write"), real.of(key, "after_write"))
    outside("  · rest of after_write (refresh, records cache, catalog meta)", "main", "after_write", "commit")
    outside("rest of Pipeline._commit (catalog rows, report)", "main", "commit", None)
    row("**main side (Pipeline._commit)**", "main", seq.of("commit", None), real.of("commit", None), "commit")
    row(
        "after the run: Library.maintain (whitening learned, its space built)",
        "main",
        seq.of("maintain", None),
        real.of("maintain", None),
    )
    row("**sum of the stages**", "", seq.under(None), real.under(None))
    row("**process CPU of the run**", "", p.seq.cpu, p.real.cpu)
    row("unaccounted (process CPU − stages)", "", p.seq.cpu - seq.under(None), p.real.cpu - real.under(None))
    for key, label in (("held", "control: a pure-Python loop (holds the GIL)"),
                       ("released", "control: sha256 of a 4 MB buffer (releases the GIL)")):  # fmt: skip
        s = p.gil.get(key)
        if s is not None:
            rows.append([label, "", ms(s.one.cpu, s.n), "", "—"] + gil_cells(p, key))
    return rows


def total_rows(p: Profile) -> list[list[str]]:
    def row(label: str, run: Run, n: int) -> list[str]:
        return [
            label,
            f"{run.wall:.2f}",
            f"{n / run.wall:.0f}",
            f"{run.cpu:.2f}",
            ms(run.cpu, n),
            f"{run.cpu / run.wall:.2f}",
            f"{run.others:.2f}",
        ]

    report = p.real.report
    assert report is not None
    near = f", {len(report.near_duplicates)} near-duplicates" if report.near_duplicates else ""
    rows = [
        row(f"Library.index ({len(report.added)} added, {len(report.duplicates)} exact duplicates{near})", p.real, p.n),
        row("stage by stage, one thread (Pipeline._prepare_many, _commit)", p.seq, p.n),
    ]
    embed = p.gil.get("embed")
    if embed is not None:
        rows.append(
            row(
                f"model only: embedder.embed on prepared pixels, 2 threads ({embed.n} calls)",
                Run(Meter(time.process_time), embed.two.cpu, embed.two.wall, None, embed.two.others),
                embed.n,
            )
        )
    if p.real_objects is not None and p.real_objects.report is not None:
        rows.append(row(f"Library.index --objects ({p.real_objects.report.subjects} subjects)", p.real_objects, p.n))
    return rows


def object_rows(p: Profile) -> list[list[str]]:
    """The subject stages, and the parts of the default and the --objects run side by side."""
    assert p.real_objects is not None
    base, more, n = p.real.meter, p.real_objects.meter, p.n
    rows = []
    for key, label, parent in (
        ("detect", "subject detection (Library.detect_decoded)", "worker"),
        ("embed_objects", f"subject embeddings (Library.embed_objects; {p.subjects} subjects)", "worker"),
        ("set_objects", "subjects into the catalog (Catalog.set_objects)", "commit"),
    ):
        mine = p.objects.get(key)
        rows.append(
            [label, ms(mine, n) if mine is not None else "—", "—", ms(more.of(key, parent), n)] + gil_cells(p, key)
        )
    subject_cpu = more.of("detect", "worker") + more.of("embed_objects", "worker")
    rows.append(
        [
            "the default's worker stages (read … near-duplicate check)",
            "",
            ms(base.under("worker"), n),
            ms(more.under("worker") - subject_cpu, n),
            "",
            "",
            "",
            "",
        ]
    )
    for key, label in (
        ("worker", "worker side (Pipeline._prepare_many)"),
        ("commit", "main side (Pipeline._commit)"),
        ("maintain", "after the run: Library.maintain"),
    ):
        rows.append([label, "", ms(base.of(key, None), n), ms(more.of(key, None), n), "", "", "", ""])
    rows.append(["**process CPU of the run**", "", ms(p.real.cpu, n), ms(p.real_objects.cpu, n), "", "", "", ""])
    rows.append(
        [
            "unaccounted (process CPU − stages)",
            "",
            ms(p.real.cpu - base.under(None), n),
            ms(p.real_objects.cpu - more.under(None), n),
            "",
            "",
            "",
            "",
        ]
    )
    return rows


STAGE_COLUMNS = [
    "stage",
    "side",
    "CPU ms/photo, 1 thread",
    "% of 1-thread CPU",
    "CPU ms/photo in Library.index",
    "2 threads ÷ 1",
    "cores busy, 2 threads",
    "blocked, 1 → 2 threads",
    "GIL",
]
TOTAL_COLUMNS = ["run", "wall s", "photos/s", "process CPU s", "CPU ms/photo", "CPU ÷ wall", "other processes, cores"]
OBJECT_COLUMNS = [
    "stage",
    "CPU ms/photo, 1 thread",
    "CPU ms/photo in Library.index",
    "CPU ms/photo in index --objects",
    "2 threads ÷ 1",
    "cores busy, 2 threads",
    "blocked, 1 → 2 threads",
    "GIL",
]


def emit(title: str, columns: list[str], rows: list[list[str]], markdown: list[str]) -> None:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*[c.replace("**", "") for c in r])
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    markdown += [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    markdown += ["| " + " | ".join(r) + " |" for r in rows] + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1000, help="Towhee photos (default: all 1000)")
    parser.add_argument("--big", type=int, default=120, help="12-megapixel photos to make (default 120; 0: none)")
    parser.add_argument(
        "--gil-sample",
        type=int,
        default=200,
        help="photos the 1-vs-2-thread runs use (at most a third of a set; default 200)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="Library.index runs per set; the least CPU is kept")
    parser.add_argument("--objects", action="store_true", help="also the --objects stages, in a table of their own")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown to this file")
    parser.add_argument("--model", help="embedding model (default: LOOKALIKE_MODEL or the built-in default)")
    args = parser.parse_args()
    settings = Settings(**({"model": args.model} if args.model else {}))
    embedder = load_embedder(settings)
    files = sorted(i.source for i in sources.walk_folder(TRAIN))
    load = os.getloadavg()
    started = time.perf_counter()
    profiles = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sets = [(f"{min(args.limit, len(files))} Towhee photos", towhee(files[: args.limit], tmp / "towhee"))]
        if args.big:
            t = time.perf_counter()
            folder = twelve_megapixels(files, tmp / "big", args.big)
            err.print(f"[dim]made {args.big} 12-MP photos in {time.perf_counter() - t:.0f} s[/dim]")
            sets.append((f"{args.big} 12-MP JPEGs", folder))
        for name, root in sets:
            profiles.append(profile(name, root, settings, embedder, tmp, args.repeat, args.gil_sample, args.objects))
    markdown: list[str] = []
    cores = os.cpu_count()
    for p in profiles:
        head = f"{p.name} ({p.mean_bytes / 1024:,.0f} KB on average), {embedder.name}, {cores} cores"
        emit(f"{head}: CPU time per stage", STAGE_COLUMNS, stage_rows(p), markdown)
        emit(f"{head}: runs", TOTAL_COLUMNS, total_rows(p), markdown)
        if p.real_objects is not None:
            title = f"{head}: --objects stages ({p.subjects} subjects in {p.with_subjects} photos)"
            emit(title, OBJECT_COLUMNS, object_rows(p), markdown)
        empty = [
            k
            for k in ("read", "sha256", "decode", "embed", "thumbnail", "add_batch", "after_write")
            if not p.real.meter.calls.get(k)
        ]
        if empty:
            err.print(f"[yellow]{p.name}: no calls seen in Library.index for {empty}: the pipeline moved?[/yellow]")
    note = (
        f"settings: workers={settings.resolved_workers} batch_size={settings.batch_size} "
        f"copy_candidates={settings.copy_candidates} copy_side={settings.copy_side}; load average "
        f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {time.perf_counter() - started:.0f} s in all"
    )
    err.print(note)
    if args.markdown:
        args.markdown.write_text("\n".join(markdown + [note, ""]))


if __name__ == "__main__":
    tune_process(Settings())  # as the CLI and the service do: numpy's BLAS on 1 thread, the switch interval
    main()
