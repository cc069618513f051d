"""The demo's photos for a clone that has no ``../shared`` beside it: `python -m lookalike.demo DIR`.

The Towhee reverse-image-search subset (1,000 ImageNet photos in 100 classes, ``train/``, and 100 queries,
``test/``) is fetched file by file from the public repository the shared copy came from, at a pinned commit, and
every file is checked against the sha256 in ``demo_photos.csv`` (made from that commit, byte for byte), as the
model files are. Files already present and correct are kept, so an interrupted fetch resumes. Offline, one line
says so and names what to do instead. (File by file rather than an archive: GitHub's archives are not
byte-stable, so no checksum could pin one.)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
from rich import progress as bar
from rich.text import Text

COMMIT = "b5b483309410be3dc6c803cd367d1688ce768230"
BASE_URL = f"https://raw.githubusercontent.com/meetjeff/reverse-image-search/{COMMIT}/images"
TIMEOUT = 30.0  # seconds a connection or a read may take
FILE_DEADLINE = 60.0  # seconds a whole photo may take (the largest is under 1 MB)
THREADS = 8  # files fetched at once: small files, so round trips dominate


class DemoFetchError(RuntimeError):
    """The demo photos are missing and could not be fetched (offline, or a file did not match its sha256)."""


@dataclass(frozen=True)
class DemoPhoto:
    path: str  # relative: train/<class>/<file>.JPEG or test/<class>/<file>.JPEG
    size: int
    sha256: str


def manifest() -> list[DemoPhoto]:
    """Every demo photo with its size and sha256, as pinned in the package."""
    text = resources.files("lookalike").joinpath("demo_photos.csv").read_text()
    return [DemoPhoto(r["path"], int(r["bytes"]), r["sha256"]) for r in csv.DictReader(text.splitlines())]


def _present(folder: Path, photo: DemoPhoto) -> bool:
    path = folder / photo.path
    if not path.is_file() or path.stat().st_size != photo.size:
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == photo.sha256


def _fetch_one(client: httpx.Client, base_url: str, folder: Path, photo: DemoPhoto) -> None:
    """One photo, streamed: never more bytes than the manifest says it has, never longer than ``FILE_DEADLINE``
    (a server dripping a byte at a time passes every per-read timeout)."""
    url = f"{base_url}/{photo.path}"
    started, body = time.monotonic(), bytearray()
    with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise DemoFetchError(f"{url}: HTTP {response.status_code}")
        for chunk in response.iter_bytes():  # as it arrives: a chunk size would wait for 64 KiB of a drip
            body += chunk
            if len(body) > photo.size:
                raise DemoFetchError(f"{url} is longer than the pinned {photo.size} bytes: refusing to use it")
            if time.monotonic() - started > FILE_DEADLINE:
                raise DemoFetchError(f"{url} took longer than {FILE_DEADLINE:.0f} s: the server is too slow")
    if hashlib.sha256(body).hexdigest() != photo.sha256:
        raise DemoFetchError(f"{url} does not match its pinned sha256 {photo.sha256}: refusing to use it")
    target = folder / photo.path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(tmp, target)  # a photo is there whole or not at all
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def missing(folder: Path, photos: list[DemoPhoto] | None = None) -> list[DemoPhoto]:
    """The demo photos that ``folder`` lacks or holds damaged (wrong size or sha256)."""
    return [p for p in (photos if photos is not None else manifest()) if not _present(folder, p)]


def fetch(folder: Path, photos: list[DemoPhoto], base_url: str = BASE_URL,
          advance: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Fetch ``photos`` into ``folder``, each checked against its sha256 before it is put in place."""
    transport = httpx.HTTPTransport(retries=2)  # connection retries; a wrong file is never retried into place
    try:
        with (
            httpx.Client(transport=transport, timeout=TIMEOUT, follow_redirects=True) as client,
            ThreadPoolExecutor(THREADS) as pool,
        ):

            def one(photo: DemoPhoto) -> None:
                _fetch_one(client, base_url, folder, photo)
                if advance is not None:
                    advance()

            list(pool.map(one, photos))
    except httpx.HTTPError as exc:
        raise DemoFetchError(
            f"the demo photos are not in {folder} and could not be fetched from {base_url} "
            f"({type(exc).__name__}); offline, try the commands on a folder of your own photos instead: "
            "lookalike index DIR, then lookalike search PHOTO"
        ) from None


class RateColumn(bar.ProgressColumn):
    """Photos per second."""

    def render(self, task: bar.Task) -> Text:
        return Text(f"{task.speed:.0f} photos/s" if task.speed else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookalike.demo", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the demo photos go (train/ and test/)")
    parser.add_argument("--url", default=BASE_URL, help="where to fetch them from (a mirror with the same layout)")
    args = parser.parse_args(argv)
    photos = manifest()
    lacking = missing(args.folder, photos)
    if lacking:
        columns = (bar.TextColumn("[bold]demo photos"), bar.BarColumn(), bar.MofNCompleteColumn(), RateColumn(),
                   bar.TimeElapsedColumn(), bar.TextColumn("ETA"), bar.TimeRemainingColumn())  # fmt: skip
        with bar.Progress(*columns) as progress:
            task = progress.add_task("fetch", total=len(photos), completed=len(photos) - len(lacking))
            try:
                fetch(args.folder, lacking, args.url, lambda: progress.advance(task))
            except DemoFetchError as exc:
                progress.stop()
                print(f"error: {exc}", file=sys.stderr)
                return 1
    print(f"{args.folder}: all {len(photos)} demo photos ({len(lacking)} fetched now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
