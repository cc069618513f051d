"""Turn what the user names (folders, CSVs, JSON-lines manifests, URL lists, files, URLs) into source items.

A source item is one photo to consider: its canonical source string (absolute
path or URL), a label if one is known, the fields of its record (a CSV's extra
columns, a manifest's ``fields``), and for local files the size and mtime that
make re-runs incremental without reading the file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import itertools
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from lookalike.fields import (
    MAX_KEY,
    RESERVED,
    FieldError,
    Fields,
    check_fields,
    common_kind,
    kind_of,
    parse_cell,
)

CSV_SUFFIXES = {".csv"}
MANIFEST_SUFFIXES = {".jsonl", ".ndjson"}
URL_LIST_SUFFIXES = {".txt", ".urls", ".list"}


class SourceError(ValueError):
    """A named source cannot be read at all (not a single photo in it)."""


@dataclass(frozen=True)
class SourceItem:
    source: str  # absolute path or URL
    label: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    error: str | None = None  # set when the item is known bad before reading (unreadable entry)
    data: bytes | None = field(default=None, repr=False)  # inline bytes (uploads): nothing to read
    stored: str | None = None  # sha256 of an upload whose bytes wait in the image store (queued uploads)
    fields: Fields | None = None  # the photo's record from this source (None: the source says nothing of it)
    span: tuple[float, float | None] | None = None  # a video's time range [start, end) only (index jobs' split)

    @property
    def is_upload(self) -> bool:
        return self.data is not None or self.stored is not None

    @property
    def is_url(self) -> bool:
        return is_url(self.source)


@dataclass
class SourceSet:
    """Everything named by one argument, plus the folder prefix it covers (for vanished files)."""

    items: list[SourceItem]
    root: str | None = None  # absolute folder path with trailing separator, when a folder was named


def is_url(text: str) -> bool:
    """An http(s) URL: schemes are case-insensitive (RFC 3986), so ``HTTP://x/../etc`` is one, never a path."""
    return text[:8].lower().startswith(("http://", "https://"))


def inside_roots(path: str, roots: list[str]) -> bool:
    """Whether ``path``, with every link resolved, is a configured root or below one."""
    try:
        target = os.path.realpath(path)
    except (ValueError, OSError):  # a NUL byte, a name too long
        return False
    for root in roots:
        if root.startswith("s3://") or not os.path.isabs(root):
            continue
        real = os.path.realpath(root)
        if os.path.commonpath([target, real]) == real:
            return True
    return False


def within_roots(items: Iterator[SourceItem], roots: list[str]) -> Iterator[SourceItem]:
    """Each local item whose resolved path leaves the roots (a link to /etc, a CSV row ../../secret.jpg) is
    rejected with the reason, before anything reads it (issue #24). URLs and bucket objects pass."""
    for item in items:
        local = item.error is None and not item.is_url and not item.source.startswith("s3://")
        if local and not inside_roots(item.source, roots):
            item = SourceItem(item.source, item.label, error="outside LOOKALIKE_SOURCE_ROOTS (after links)")
        yield item


def changed_files(recorded: Mapping[str, tuple[int | None, int | None]]) -> set[str]:
    """Local files whose size or modification time differ from what was recorded (source -> (size, mtime_ns)) or
    that are gone; URLs, buckets and uploads are not looked at (an upload's bytes are the stored ones)."""
    out = set()
    for source, (size, mtime_ns) in recorded.items():
        if not source.startswith(os.sep) or size is None:
            continue
        try:
            st = os.stat(source)
        except OSError:
            out.add(source)
            continue
        if st.st_size != size or (mtime_ns is not None and st.st_mtime_ns != mtime_ns):
            out.add(source)
    return out


def _file_item(path: Path, label: str | None) -> SourceItem:
    """A file to read; one that cannot be (a broken link, a FIFO, a device) becomes an item with the reason,
    so it is reported as rejected instead of silently skipped."""
    try:
        st = path.stat()
    except FileNotFoundError:
        reason = "dangling symbolic link" if path.is_symlink() else "no such file"
        return SourceItem(str(path), label, error=reason)
    except OSError as exc:
        reason = "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot stat: {exc.strerror or exc}"
        return SourceItem(str(path), label, error=reason)
    if not stat.S_ISREG(st.st_mode):
        from lookalike.ingest.fetch import SPECIAL

        kind = "a folder" if stat.S_ISDIR(st.st_mode) else SPECIAL.get(stat.S_IFMT(st.st_mode), "a special file")
        return SourceItem(str(path), label, error=f"not a regular file: {kind}")
    return SourceItem(str(path), label, st.st_size, st.st_mtime_ns)


# Documents that live beside photos (a dataset's manifest.csv, a README): not photos, so a folder walk leaves
# them out instead of reporting each as a rejected photo. Photos are still recognised by content otherwise.
DOCUMENT_SUFFIXES = frozenset(
    [
        ".csv",
        ".tsv",
        ".txt",
        ".md",
        ".rst",
        ".json",
        ".jsonl",
        ".yaml",
        ".yml",
        ".xml",
        ".html",
        ".htm",
        ".pdf",
        ".py",
        ".ini",
        ".cfg",
        ".log",
        ".nfo",
        ".db",
        ".sqlite",
    ]
)


# in every library's folder (LOOKALIKE_HOME): a walk never goes into one, so a library kept inside the folder it
# indexes does not index its own thumbnails (each run found the last run's, and thumbnails of thumbnails)
LIBRARY_MARKER = ".lookalike-library"
LIBRARY_FOLDER = "a Lookalike library's own folder (it holds .lookalike-library): its files are never indexed"
INSIDE_LIBRARY = "inside this Lookalike library's own folder (its thumbnails, its database): never indexed"
# a library folder met inside a walk that is not the running library's own: said, and what was indexed from it kept
OTHER_LIBRARY = ("holds .lookalike-library, the mark of a Lookalike library's folder: its files are not indexed, and "
                 "photos indexed from it before are kept (delete that file if the folder holds your photos)")


def is_library_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the marker; a folder that cannot be looked into is not known to be one (the walk
    reports it as a folder it cannot list: Path.exists raised PermissionError there and ended the run)."""
    try:
        return (folder / LIBRARY_MARKER).exists()
    except OSError:
        return False


def mark_library_folder(home: Path) -> None:
    """Mark ``home`` as a library's folder (once; a folder that cannot be written is left as it is)."""
    marker = home / LIBRARY_MARKER
    if not marker.exists():
        with contextlib.suppress(OSError):
            marker.write_text("This folder is a Lookalike library: `lookalike index` never indexes its files.\n")


def walk_folder(root: Path, label: str | None = None, own: Path | None = None) -> Iterator[SourceItem]:
    """Every file below root, sorted (hidden files and folders, and documents such as a manifest.csv, skipped);
    one that is not a readable regular file (a FIFO, a device, a broken or looping link) comes with the reason
    it will be rejected for.

    The label rule: ``label`` when given, else the name of the photo's folder when that folder is below
    ``root`` (root/cats/1.jpg: "cats"), else none (a photo directly in the folder named has no label: a
    flat folder's name says nothing about its photos). Formats are sniffed from content when read.

    A library's folder (``LIBRARY_MARKER``) is never walked into. ``own``, the running library's, is passed
    silently; any other is an item rejected with the reason, so that a marker left in a folder of photos (a
    library once kept there, a folder copied from one) is seen, and ``--prune`` keeps what was indexed below it
    (vanished_under) instead of dropping those photos without a word.
    """
    root = Path(root)
    if is_library_folder(root):
        yield SourceItem(printable(root) + os.sep, label, error=LIBRARY_FOLDER)
        return
    if own is not None and any(_same_folder(folder, own) for folder in root.parents):  # `index H/images`
        yield SourceItem(printable(root) + os.sep, label, error=INSIDE_LIBRARY)
        return
    unlisted: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unlisted.append):
        yield from _unlisted(unlisted)
        folder = Path(dirpath)
        libraries = {d for d in dirnames if is_library_folder(folder / d)}
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in libraries)
        folder_label = label if label is not None else (folder.name if folder != root else None)
        for d in sorted(libraries):
            if not d.startswith(".") and not _same_folder(folder / d, own):
                yield SourceItem(printable(folder / d) + os.sep, folder_label, error=OTHER_LIBRARY)
        for d in list(dirnames):
            if (folder / d).is_symlink():
                yield SourceItem(printable(folder / d), folder_label, error="a symbolic link to a folder: not followed")
            elif (shown := printable(folder / d)) != str(folder / d):  # one item for the folder, not one per file
                dirnames.remove(d)
                yield SourceItem(shown + os.sep, folder_label, error=NOT_UTF8_FOLDER)
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() in DOCUMENT_SUFFIXES:
                continue
            path = folder / name
            if (shown := printable(path)) != str(path):
                yield SourceItem(shown, folder_label, error="the file's name is not valid UTF-8")
                continue
            yield _file_item(path, folder_label)
    yield from _unlisted(unlisted)


def _same_folder(folder: Path, other: Path | None) -> bool:
    try:
        return other is not None and folder.samefile(other)
    except OSError:
        return False


def _unlisted(errors: list[OSError]) -> Iterator[SourceItem]:
    """Folders the walk could not list, as items that are rejected with the reason. Each names its folder with a
    trailing separator, and whatever the catalog holds below it is not vanished (vanished_under): a permission
    change or a network file system's hiccup must not let ``--prune`` remove photos it could not see."""
    while errors:
        exc = errors.pop(0)
        folder = printable(Path(exc.filename)) if exc.filename else "a folder"
        yield SourceItem(folder.rstrip(os.sep) + os.sep, error=f"cannot list the folder: {exc.strerror or exc}")


NOT_UTF8_FOLDER = "the folder's name is not valid UTF-8: its photos are not indexed (rename it)"


def printable(path: Path) -> str:
    """The path as text that can be stored and shown: a name that is not valid UTF-8 (bytes Python keeps as lone
    surrogates) gets them as escapes (b'\\xff' -> '\\xff')."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


MAX_LIST_BYTES = 256 * 2**20  # a CSV or URL list larger than this is refused before it is read
MAX_LINE = 64 * 2**10  # characters in one line of a list (a path or URL is far shorter)


def open_list(path: Path) -> io.BufferedReader:
    """A CSV or URL list opened as the photos are: non-blocking and checked on the descriptor (a FIFO named
    list.txt is refused at once instead of waiting for a writer), and no larger than MAX_LIST_BYTES."""
    from lookalike.ingest.fetch import SPECIAL

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = f"not a regular file: {SPECIAL.get(stat.S_IFMT(st.st_mode), 'a special file')}"
    elif st.st_size > MAX_LIST_BYTES:
        problem = f"too large for a list: {st.st_size} bytes (at most {MAX_LIST_BYTES})"
    if problem:
        os.close(fd)
        raise SourceError(f"{path}: {problem}")
    return io.BufferedReader(io.FileIO(fd, "r"))


def bounded_lines(path: Path, fh: io.BufferedReader) -> Iterator[str]:
    """The file's lines, each at most MAX_LINE bytes, as UTF-8 text; anything else is a SourceError with
    the line number (not a traceback, not a gigabyte read for one line)."""
    number = 0
    while line := fh.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE:
            raise SourceError(f"{path}: line {number} is longer than {MAX_LINE} bytes")
        try:
            yield line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{path}: line {number} is not UTF-8 text") from None


def read_csv(path: Path, label: str | None = None, kinds: Mapping[str, str] | None = None) -> Iterator[SourceItem]:
    """The seed CSV format: a header with ``path`` (and optional ``label``), paths relative to the CSV. Every other
    column is a field of the photo's record, typed per column (``lookalike.fields``; ``kinds`` overrides), so the
    file is read twice: once for the columns' types, once for the photos."""
    columns = _csv_kinds(path, kinds or {})
    with open_list(path) as fh:
        reader = csv.DictReader(bounded_lines(path, fh))
        try:
            for row in reader:
                yield from _csv_row(path, row, label, columns)
        except csv.Error as exc:
            raise SourceError(f"{path}: malformed CSV at line {reader.line_num}: {exc}") from None


def _csv_kinds(path: Path, kinds: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Each field column's field name and type: as given in ``kinds``, else inferred from all its cells."""
    with open_list(path) as fh:
        reader = csv.DictReader(bounded_lines(path, fh))
        try:
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise SourceError(f"{path}: CSV needs a header with a 'path' column (id,path,label)")
            names = [n for n in reader.fieldnames if n not in ("path", "label")]
            columns = field_names(names)
            unknown = set(kinds) - set(columns.values())
            if unknown:
                raise SourceError(f"{path}: --field names columns it does not have: {', '.join(sorted(unknown))}")
            seen: dict[str, set[str]] = {n: set() for n, key in columns.items() if key not in kinds}
            for row in reader:
                for name, found in seen.items():
                    cell = row.get(name) or ""
                    if cell.strip() and len(found) < 3:  # int, float, str: more says nothing new
                        found.add(kind_of(cell))
        except csv.Error as exc:
            raise SourceError(f"{path}: malformed CSV at line {reader.line_num}: {exc}") from None
    return {n: (key, kinds.get(key) or common_kind(seen[n])) for n, key in columns.items()}


def field_names(columns: list[str]) -> dict[str, str]:
    """CSV column -> the field it fills: its name with every character other than a letter, digit or _ made _
    ("Product Name" -> Product_Name, "image-url" -> image_url), _ before a leading digit; columns left without a
    name (a spreadsheet's unnamed index), reserved or taken by an earlier column are left out."""
    out: dict[str, str] = {}
    for column in columns:
        key = re.sub(r"[^A-Za-z0-9_]", "_", column.strip())[:MAX_KEY]
        key = "_" + key[: MAX_KEY - 1] if key[:1].isdigit() else key
        if key.strip("_") and key not in RESERVED and key not in out.values():
            out[column] = key
    return out


def _csv_row(path: Path, row: dict, label: str | None,
             columns: Mapping[str, tuple[str, str]]) -> Iterator[SourceItem]:  # fmt: skip
    ref = (row.get("path") or "").strip()
    if not ref:
        return
    row_label = label if label is not None else (row.get("label") or "").strip() or None
    error = None
    try:
        fields = check_fields({key: parse_cell(key, row[name], kind) for name, (key, kind) in columns.items()
                               if isinstance(row.get(name), str) and row[name].strip()})  # fmt: skip
    except FieldError as exc:
        fields, error = {}, str(exc)
    yield from _item(path, ref, row_label, fields, error)


def _item(path: Path, ref: str, label: str | None, fields: Fields, error: str | None) -> Iterator[SourceItem]:
    """The photo a list names (a URL, or a path relative to the list), with its record."""
    if is_url(ref):
        yield SourceItem(ref, label, fields=fields, error=error)
    elif "\x00" in ref:
        yield SourceItem(ref.replace("\x00", "\\0"), label, error="a NUL character in the path")
    else:
        item = replace(_file_item((path.parent / ref).resolve(), label), fields=fields)
        yield item if error is None else replace(item, error=error)


def read_manifest(path: Path, label: str | None = None) -> Iterator[SourceItem]:
    """A JSON-lines manifest: one object per line, ``{"path": ..., "label": ..., "fields": {...}}`` (``label``
    and ``fields`` optional; paths relative to the manifest, or URLs). A line that is not such an object is
    reported (as its line) and skipped."""
    with open_list(path) as fh:
        for number, line in enumerate(bounded_lines(path, fh), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError) as exc:
                yield SourceItem(where, label, error=f"not a JSON object: {str(exc)[:200] or 'nested too deeply'}")
                continue
            ref = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(ref, str) or not ref.strip():
                yield SourceItem(where, label, error='a manifest line needs "path": a file or URL')
                continue
            own = entry.get("label")
            row_label = label if label is not None else (own.strip() or None if isinstance(own, str) else None)
            try:
                fields, error = check_fields(entry.get("fields") or {}), None
            except FieldError as exc:
                fields, error = {}, str(exc)
            yield from _item(path, ref.strip(), row_label, fields, error)


def read_url_list(path: Path, label: str | None = None) -> Iterator[SourceItem]:
    with open_list(path) as fh:
        for line in bounded_lines(path, fh):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if is_url(line):
                yield SourceItem(line, label)
            else:
                yield SourceItem(line, label, error="not an http(s) URL")


def _looks_like_url_list(path: Path) -> bool:
    if path.suffix.lower() not in URL_LIST_SUFFIXES:
        return False
    with open_list(path) as fh:  # a FIFO or a huge file named .txt: a SourceError, not a wait
        try:
            head = [ln.strip() for ln in itertools.islice(bounded_lines(path, fh), 64)]
        except SourceError:
            return False
    head = [ln for ln in head if ln and not ln.startswith("#")]
    return bool(head) and is_url(head[0])


def expand(arg: str, label: str | None = None, s3=None, kinds: Mapping[str, str] | None = None,
           own: Path | None = None) -> SourceSet:
    """One command-line argument -> the photos it names; ``s3`` gives a boto3 client for s3:// ones, ``kinds``
    the types of a CSV's field columns (else inferred), ``own`` the running library's folder (walk_folder)."""
    root, items = iter_expand(arg, label, s3, kinds=kinds, own=own)
    return SourceSet(list(items), root=root)


def _checked(items: Iterator[SourceItem]) -> Iterator[SourceItem]:
    """Read the first item now, so a source that cannot be read at all (a CSV without its header) fails
    when it is named rather than half-way through a job."""
    first = next(items, None)
    return itertools.chain([first] if first is not None else [], items)


def iter_expand(
    arg: str, label: str | None = None, s3=None, roots: list[str] | None = None,
    kinds: Mapping[str, str] | None = None, own: Path | None = None,
) -> tuple[str | None, Iterator[SourceItem]]:
    """Like ``expand``, streamed: (the folder prefix it covers, the photos one by one). A folder or a bucket
    of millions is listed without holding the listing in memory (index jobs cut it into chunks). With
    ``roots`` (an HTTP caller's job), every local photo must resolve inside one of them."""
    root, items = _iter_expand(arg, label, s3, kinds, own)
    return root, (items if roots is None else within_roots(items, roots))


def _iter_expand(arg: str, label: str | None, s3, kinds: Mapping[str, str] | None,
                 own: Path | None) -> tuple[str | None, Iterator[SourceItem]]:  # fmt: skip
    if arg.startswith("s3://"):
        from lookalike.store.s3 import S3Location, list_photos

        if s3 is None:
            raise SourceError(f"{arg}: no S3 client configured")
        location = S3Location.parse(arg)
        objects = list_photos(s3(), location)
        try:
            first = next(objects, None)  # a bucket that cannot be listed fails here, not half-way
        except Exception as exc:  # botocore raises many types; all mean the bucket cannot be listed
            raise SourceError(f"{arg}: cannot list the bucket: {exc}") from None

        def bucket() -> Iterator[SourceItem]:
            for o in itertools.chain([first] if first is not None else [], objects):
                below = o.uri.removeprefix(location.uri(location.prefix))  # the key under the prefix named
                folder = below.rsplit("/", 2)[-2] if "/" in below else None  # the folder rule, as for folders
                yield SourceItem(o.uri, label if label is not None else (folder or None), o.size,
                                 o.mtime_ns)  # fmt: skip

        return location.uri(location.prefix), bucket()
    if is_url(arg):
        return None, iter([SourceItem(arg, label)])
    if "\x00" in arg:
        raise SourceError("a path cannot contain a NUL character")
    path = Path(arg).expanduser()
    try:
        if not path.exists():
            raise SourceError(f"{arg}: no such file or folder")
        path = path.resolve()
    except OSError as exc:  # a name too long, a loop of links
        raise SourceError(f"{arg[:200]}: cannot be read: {exc.strerror or exc}") from None
    if (shown := printable(path)) != str(path):  # the catalog stores paths as text: it would fail at the first write
        raise SourceError(f"{shown[:200]}: the path is not valid UTF-8 (rename it)")
    if path.is_dir():
        return str(path) + os.sep, walk_folder(path, label, own)
    if path.suffix.lower() in CSV_SUFFIXES:
        return None, _checked(read_csv(path, label, kinds))
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return None, _checked(read_manifest(path, label))
    if _looks_like_url_list(path):
        return None, read_url_list(path, label)
    return None, iter([_file_item(path, label)])  # a single file: labelled only when asked
