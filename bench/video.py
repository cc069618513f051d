"""Videos (issue #27): indexing speed as a multiple of real time, frames kept per minute, and screenshot-to-second
accuracy, on 720p slideshows made here from real Towhee photos (cuts, slow pans) at several bitrates.

For each bitrate and sampling interval a fresh library is filled with distractors (other Towhee photos of the
video's classes), then the video is indexed (timed: hashing, decoding, frame choice, embedding, copy descriptors,
thumbnails and catalog writes), then screenshots of random moments are searched: each one the frame shown at that
moment, 3-10 % cropped off each side, resized to 40-80 %, half of them with a caption bar, JPEG 60-80. A screenshot
counts as found when the first hit is the video; as "within 1 s" when that hit's second is within 1 s of the moment;
as "same shot" when its frame lies in the moment's shot; as "right moment" when within 1 s, or in the same still shot
(inside a still shot every frame is the same picture: the moment named is the shot's start, where it is first seen).

    python bench/video.py                       # 90 s at 720p, 30 fps; bitrates 2.5M and 0.5M; intervals 10 and 2 s
    python bench/video.py --seconds 30 --shots 12 --bitrates 1000000 --intervals 10

``--split``: one long video indexed by an index job (`lookalike jobs add`) run by `lookalike worker` processes on one
catalog: one worker with the video whole, one worker with it in two time ranges, two workers sharing the two ranges
(LOOKALIKE_VIDEO_CHUNK_SECONDS = half its length). Timed from the job's first claim to its end (the workers are
started, models loaded, before the job is queued); the frames each way kept are counted.

    python bench/video.py --split --seconds 600 --bitrates 2500000
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.videos import Shot, make_video  # noqa: E402

SHARED = ROOT.parent / "shared"
TOWHEE = SHARED / "datasets" / "towhee_reverse_image_search"


def shots(seconds: float, rng: random.Random) -> list[Shot]:
    """Still shots of 2-7 s and slow pans of 8-12 s, one photo each, to fill ``seconds``."""
    classes = sorted(p for p in (TOWHEE / "train").iterdir() if p.is_dir())
    out: list[Shot] = []
    total = 0.0
    while total < seconds:
        photo = sorted(rng.choice(classes).iterdir())[rng.randrange(5)]
        pan = rng.random() < 0.35
        length = min(seconds - total, rng.uniform(8, 12) if pan else rng.uniform(2, 7))
        out.append(Shot(photo, round(length, 1), pan))
        total += out[-1].seconds
    return out


def screenshot(image: Image.Image, rng: random.Random) -> bytes:
    w, h = image.size
    c = [rng.uniform(0.03, 0.10) for _ in range(4)]
    image = image.crop((int(w * c[0]), int(h * c[1]), int(w * (1 - c[2])), int(h * (1 - c[3]))))
    scale = rng.uniform(0.4, 0.8)
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    if rng.random() < 0.5:  # a caption bar, as a shared screenshot has
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, int(image.height * 0.82), image.width, image.height), fill=(20, 20, 20))
        draw.text((10, int(image.height * 0.86)), "look at this moment!!", fill=(255, 255, 255))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=rng.randint(60, 80))
    return buf.getvalue()


def moments(video: Path, times: list[float]) -> list[Image.Image]:
    """The frame shown at each of ``times`` (sorted), decoded in one pass."""
    out: list[Image.Image] = []
    pending = sorted(times)
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            while pending and frame.time is not None and frame.time >= pending[0] - 1e-3:
                out.append(frame.to_image())
                pending.pop(0)
            if not pending:
                break
    return out


def shot_of(t: float, spans: list[tuple[float, float]]) -> int:
    """The shot shown at ``t`` (a frame's second is rounded to the millisecond: half a frame of slack)."""
    return next((i for i, (a, b) in enumerate(spans) if a - 0.015 <= t < b - 0.015), len(spans) - 1)


def run(args: argparse.Namespace) -> None:
    from lookalike.config import Settings
    from lookalike.ingest.video import VideoLimits, frames
    from lookalike.library import Library

    rng = random.Random(args.seed)
    plan = shots(args.seconds, rng)
    work = Path(tempfile.mkdtemp(prefix="lookalike-video-bench-"))
    distractors = work / "photos"
    for shot in plan:
        folder = distractors / shot.photo.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for other in sorted(shot.photo.parent.iterdir())[5:10]:
            shutil.copy(other, folder)
    rows = []
    try:
        for bitrate in args.bitrates:
            folder = work / f"video-{bitrate}"
            folder.mkdir()
            clip = folder / "clip.mp4"
            started = time.perf_counter()
            spans = make_video(clip, plan, size=(1280, 720), fps=30, bitrate=bitrate)
            made = time.perf_counter() - started
            duration = spans[-1][1]
            choice_started = time.perf_counter()
            chosen = len(list(frames(clip, VideoLimits(interval=args.intervals[0]))))
            choice = time.perf_counter() - choice_started
            print(f"made {clip.name} at {bitrate / 1e6:g} Mbit/s: {duration:.0f} s, {len(plan)} shots, "
                  f"{clip.stat().st_size / 1e6:.1f} MB, in {made:.0f} s; frame choice alone {duration / choice:.0f}x "
                  f"real time ({chosen} frames)", flush=True)  # fmt: skip
            times = sorted(rng.uniform(0, duration - 0.1) for _ in range(args.screenshots))
            shots_taken = [screenshot(image, rng) for image in moments(clip, times)]
            for interval in args.intervals:
                settings = Settings(home=work / f"lib-{bitrate}-{interval}", models_dir=SHARED / "models",
                                    allow_download=False, video_interval=interval)  # fmt: skip
                with Library(settings) as lib:
                    lib.index([str(distractors)])
                    started = time.perf_counter()
                    report = lib.index([str(folder)])
                    seconds = time.perf_counter() - started
                    assert report.videos == 1 and not report.rejected, report.as_dict()
                    found = within = same = right = 0
                    errors = []
                    for t, data in zip(times, shots_taken, strict=True):
                        hits = lib.search(data, k=5).hits
                        hit = hits[0] if hits else None
                        if hit is None or hit.video != str(clip) or hit.t is None:
                            continue
                        found += 1
                        errors.append(abs(hit.t - t))
                        close = abs(hit.t - t) <= 1.0
                        shot = shot_of(t, spans)
                        within += close
                        same += shot_of(hit.t, spans) == shot
                        right += close or (shot_of(hit.t, spans) == shot and not plan[shot].pan)
                n = len(times)
                errors.sort()
                median = errors[len(errors) // 2] if errors else float("nan")
                rows.append((bitrate, interval, duration / seconds, report.frames / (duration / 60), found / n,
                             within / n, same / n, right / n, median, n))  # fmt: skip
                print(f"  interval {interval:g} s: indexed in {seconds:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "| bitrate | interval | indexing, x real time | frames kept / min | video first | within 1 s | same shot "
        "| right moment | median error | screenshots |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bitrate, interval, speed, per_min, found, within, same, right, median, n in rows:
        print(f"| {bitrate / 1e6:g} Mbit/s | {interval:g} s | {speed:.1f}x | {per_min:.1f} | {found:.0%} | "
              f"{within:.0%} | {same:.0%} | {right:.0%} | {median:.2f} s | {n} |")  # fmt: skip


def job_seconds(home: Path, workers: int, chunk: float, folder: Path) -> tuple[float, int, int]:
    """An index job of ``folder`` run by ``workers`` `lookalike worker` processes: (seconds from its first claim to its
    end, frames kept, ranges)."""
    env = {**os.environ, "LOOKALIKE_HOME": str(home), "LOOKALIKE_MODELS_DIR": str(SHARED / "models"),
           "LOOKALIKE_ALLOW_DOWNLOAD": "false", "LOOKALIKE_VIDEO_CHUNK_SECONDS": str(chunk),
           "PYTHONPATH": str(ROOT / "src")}  # fmt: skip
    lookalike = [sys.executable, "-m", "lookalike"]
    subprocess.run([*lookalike, "stats"], env=env, capture_output=True, check=True)  # the catalog, created once
    logs = [home / f"worker{n}.log" for n in range(workers)]
    procs = [subprocess.Popen([*lookalike, "worker"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
             for log in logs]  # fmt: skip
    try:
        while not all("waiting for index jobs" in log.read_text() for log in logs):
            time.sleep(0.2)
        subprocess.run([*lookalike, "jobs", "add", str(folder)], env=env, capture_output=True, check=True)
        with sqlite3.connect(home / "catalog.sqlite", timeout=30) as db:
            while True:
                state, started, finished = db.execute("SELECT state, started_at, finished_at FROM jobs").fetchone()
                if state not in ("queued", "running"):
                    break
                time.sleep(0.2)
            assert state == "done", state
            frames = db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
            ranges = db.execute("SELECT COUNT(*) FROM job_tasks WHERE kind = 'index'").fetchone()[0]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(60)
    return finished - started, frames, ranges


def split(args: argparse.Namespace) -> None:
    """A long video in one job: one worker, or two sharing its time ranges (``--split``)."""
    plan = shots(args.seconds, random.Random(args.seed))
    work = Path(tempfile.mkdtemp(prefix="lookalike-video-split-"))
    rows = []
    try:
        folder = work / "video"
        folder.mkdir()
        spans = make_video(folder / "long.mp4", plan, size=(1280, 720), fps=30, bitrate=args.bitrates[0])
        duration = spans[-1][1]
        print(f"made a {duration:.0f} s 720p video at {args.bitrates[0] / 1e6:g} Mbit/s", flush=True)
        for name, workers, chunk in (("1 worker, whole", 1, duration * 2), ("1 worker, 2 ranges", 1, duration / 2),
                                     ("2 workers, 2 ranges", 2, duration / 2)):  # fmt: skip
            home = work / name.replace(" ", "").replace(",", "-")
            home.mkdir()
            seconds, frames, ranges = job_seconds(home, workers, chunk, folder)
            rows.append((name, ranges, seconds, duration / seconds, frames))
            print(f"  {name}: {seconds:.1f} s, {duration / seconds:.1f}x real time, {frames} frames", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| job | tasks | seconds | x real time | frames kept |")
    print("|---|---|---|---|---|")
    for name, ranges, seconds, speed, frames in rows:
        print(f"| {name} | {ranges} | {seconds:.1f} | {speed:.1f}x | {frames} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="length of the test video")
    parser.add_argument("--bitrates", type=int, nargs="+", default=[2_500_000, 500_000])
    parser.add_argument("--intervals", type=float, nargs="+", default=[10.0, 2.0], help="LOOKALIKE_VIDEO_INTERVAL")
    parser.add_argument("--screenshots", type=int, default=40)
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--split", action="store_true", help="one long video, one worker or two sharing its ranges")
    args = parser.parse_args()
    split(args) if args.split else run(args)


if __name__ == "__main__":
    main()
