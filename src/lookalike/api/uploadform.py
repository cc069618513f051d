"""The upload form, read as it streams: the photos of one request keep their limit while they arrive.

Starlette's form parser keeps every file part of up to 1 MB in memory until the whole body is read, and the body
of an upload may be as large as a video (``LOOKALIKE_VIDEO_UPLOAD_MAX_BYTES``, 1 GiB): a thousand parts of just
under 1 MB held a gigabyte before the photos' limit could be checked (hostile probe). Here the photos' bytes are
counted part by part as they come, and 413 is answered the moment the photos together pass
``LOOKALIKE_MAX_UPLOAD_BYTES``; every other file part (a video, a file of another type, a photo over the limit on
its own) goes to a file on disk, so memory holds at most the photos' limit and one part. The same rules as the
route's per-file checks decide what a part is: a photo over the limit on its own, or a file declared as neither
photo nor video, is rejected alone later and does not count.
"""

from __future__ import annotations

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartParser
from starlette.requests import Request

from lookalike.api.forms import declared_photo, video_upload
from lookalike.api.problems import Problem


def too_large(limit: int) -> Problem:
    return Problem(413, "Request too large", f"the photos of one request exceed max_upload_bytes={limit} in all "
                   "(LOOKALIKE_MAX_UPLOAD_BYTES); send fewer at a time")  # fmt: skip


class UploadFormParser(MultiPartParser):
    """Starlette's multipart parser with the photos' bytes counted as they stream (see the module)."""

    def __init__(self, request: Request, photo_limit: int, max_files: int, max_fields: int) -> None:
        super().__init__(request.headers, request.stream(), max_files=max_files, max_fields=max_fields)
        self.photo_limit = photo_limit
        self.photos = 0  # bytes of the photos that count (each within the limit on its own)
        self.part = 0  # bytes of the part being read
        self.counted = False  # whether the part being read is a photo that counts

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._current_part.content_disposition)
        # the first Content-Type, as the route reads it (Starlette's Headers.get): a second one must not pass a
        # photo off as uncounted
        ctype = next((v for k, v in self._current_part.item_headers if k == b"content-type"), b"")
        ctype_text = ctype.decode("latin-1").split(";")[0].strip().lower()
        name = options.get(b"filename", b"").decode("latin-1")
        video = b"filename" in options and video_upload(name, ctype_text)
        self.counted = b"filename" in options and not video and declared_photo(ctype_text)
        self.part = 0
        # a file that does not count (a video, a file of another type, rejected alone later) goes to disk from its
        # first byte: kept in memory, a thousand of them were a gigabyte again (review)
        counted_or_field = self.counted or b"filename" not in options
        self.spool_max_size = MultiPartParser.spool_max_size if counted_or_field else 1
        super().on_headers_finished()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.counted:
            n = end - start
            self.part += n
            if self.part <= self.photo_limit:
                self.photos += n
            elif self.part - n <= self.photo_limit:  # over the limit on its own just now: rejected alone, uncounted,
                self.photos -= self.part - n  # and off to disk with what it holds already
                file = self._current_part.file
                if file is not None and hasattr(file.file, "rollover"):
                    file.file.rollover()
            if self.photos > self.photo_limit:
                raise too_large(self.photo_limit)
        super().on_part_data(data, start, end)


async def read_upload_form(request: Request, photo_limit: int, max_files: int = 1000, max_fields: int = 20
                           ) -> FormData:  # fmt: skip
    """The form of an upload request (its files spooled; close it when done), or the Problem that stops it: 413 as
    soon as its photos pass ``photo_limit`` together, 400 for a body that is not a valid multipart form."""
    from starlette.formparsers import MultiPartException

    parser = UploadFormParser(request, photo_limit, max_files, max_fields)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise Problem(400, "Invalid form", exc.message) from None
