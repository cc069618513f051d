"""S3-compatible object storage (MinIO, AWS S3, Ceph RGW, SeaweedFS): photo files and photo sources.

``S3ImageStore`` keeps thumbnails and originals by content hash, like the local store, so a
library's catalog can stay small while its files live in a bucket. ``list_photos`` and ``read``
let ``lookalike index s3://bucket/prefix`` ingest a bucket with the same incremental rules as a
folder (size + last-modified).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlparse

from lookalike.config import Settings
from lookalike.store.errors import StoreUnavailable
from lookalike.store.images import LIBRARIES, Kind, is_digest, kind_folder, library_key, relative_key


@contextlib.contextmanager
def reachable(where: str) -> Iterator[None]:
    """An S3 server that cannot be reached (restarting, network down, timing out) or answers 5xx after the
    client's own retries is an outage of the store: ``StoreUnavailable``, not an error of the photo being read or
    written."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        yield
    except (BotoConnectionError, HTTPClientError) as exc:
        raise StoreUnavailable(f"{where} is unreachable: {exc}") from exc
    except ClientError as exc:  # 5xx (InternalError, ServiceUnavailable, SlowDown): the server's trouble, not ours
        if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500:
            raise StoreUnavailable(f"{where} is failing: {exc}") from exc
        raise


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # without leading slash; "" or ending in "/"

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket/prefix address: {uri!r}")
        prefix = parsed.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(parsed.netloc, prefix)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"


def is_s3(text: str) -> bool:
    return text.startswith("s3://")


def s3_client(settings: Settings):
    """A boto3 client for the configured endpoint (path-style addressing works everywhere)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
        region_name=settings.s3_region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=settings.url_timeout,
            read_timeout=settings.url_timeout,
        ),
    )


RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")  # one plain range; 18 digits: past any object, never a huge int


@dataclass(frozen=True)
class Part:
    """What ``S3ImageStore.open_range`` found: the status to answer (200, 206, 416), the object's size, the bytes sent,
    their Content-Range and the bytes themselves."""

    status: int
    size: int
    length: int
    content_range: str | None
    chunks: Iterator[bytes]
    close: Callable[[], None] = lambda: None  # the transfer dropped unread (a HEAD request wants only the headers)


class S3ImageStore:
    """Thumbnails, originals and features in a bucket: ``prefix/thumbnails/ab/<sha>.jpg``,
    ``prefix/originals/ab/<sha>``, ``prefix/features/ab/<sha>``."""

    def __init__(self, client, location: S3Location, create_bucket: bool = True) -> None:
        self.client, self.location = client, location
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.location.bucket)

    def key(self, kind: Kind, sha256: str) -> str:
        return f"{self.location.prefix}{relative_key(kind, sha256)}"

    @property
    def where(self) -> str:
        return f"the image store {self.location.uri(self.location.prefix)}"

    def put(self, kind: Kind, sha256: str, data: bytes) -> None:
        content_type = "image/jpeg" if kind == "thumbnail" else "application/octet-stream"
        with reachable(self.where):
            self.client.put_object(Bucket=self.location.bucket, Key=self.key(kind, sha256), Body=data,
                                   ContentType=content_type)  # fmt: skip

    def put_file(self, kind: Kind, sha256: str, fh: BinaryIO) -> None:
        """A file's bytes (an uploaded video), sent a part at a time from where ``fh`` stands."""
        with reachable(self.where):
            self.client.upload_fileobj(fh, self.location.bucket, self.key(kind, sha256),
                                       ExtraArgs={"ContentType": "application/octet-stream"})  # fmt: skip

    @contextlib.contextmanager
    def as_file(self, kind: Kind, sha256: str, suffix: str = "") -> Iterator[str | None]:
        """The object fetched a part at a time into a temporary file, for a decoder that reads files (a video); None
        when there is no such object."""
        from botocore.exceptions import ClientError

        with tempfile.NamedTemporaryFile(prefix="lookalike-stored-", suffix=suffix) as out:
            try:
                with reachable(self.where):
                    self.client.download_fileobj(self.location.bucket, self.key(kind, sha256), out)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    yield None
                    return
                raise
            out.flush()
            yield out.name

    def open_range(self, kind: Kind, sha256: str, http_range: str | None) -> Part:
        """An object, or the one byte range of it that ``http_range`` asks for, as pieces to stream (a video played from
        the bucket through the service). A header that is not one plain range is ignored (the whole object, as RFC 9110
        allows); a range past the end is ``status`` 416."""
        from botocore.exceptions import ClientError

        args = {"Bucket": self.location.bucket, "Key": self.key(kind, sha256)}
        wanted = RANGE.fullmatch(http_range.strip()) if http_range else None
        if wanted is not None and wanted.group(1) + wanted.group(2) and not (
            wanted.group(1) and wanted.group(2) and int(wanted.group(2)) < int(wanted.group(1))
        ):
            args["Range"] = f"bytes={wanted.group(1)}-{wanted.group(2)}"
        try:
            with reachable(self.where):
                response = self.client.get_object(**args)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            with reachable(self.where):
                size = int(self.client.head_object(Bucket=args["Bucket"], Key=args["Key"])["ContentLength"])
            return Part(416, size, 0, None, iter(()))
        length = int(response["ContentLength"])
        content_range = response.get("ContentRange")
        size = int(content_range.rsplit("/", 1)[1]) if content_range else length
        body = response["Body"]
        return Part(206 if content_range else 200, size, length, content_range, body.iter_chunks(2**16), body.close)

    def get(self, kind: Kind, sha256: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            with reachable(self.where):
                return self.client.get_object(Bucket=self.location.bucket, Key=self.key(kind, sha256))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def delete(self, kind: Kind, sha256: str) -> None:
        with reachable(self.where):
            self.client.delete_object(Bucket=self.location.bucket, Key=self.key(kind, sha256))

    def exists(self, kind: Kind, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with reachable(self.where):
                self.client.head_object(Bucket=self.location.bucket, Key=self.key(kind, sha256))
            return True
        except ClientError:
            return False

    def written(self, kind: Kind, sha256: str) -> float | None:
        """When an object was last written (seconds since the epoch), None when there is none."""
        from botocore.exceptions import ClientError

        try:
            with reachable(self.where):
                head = self.client.head_object(Bucket=self.location.bucket, Key=self.key(kind, sha256))
        except ClientError:
            return None
        return head["LastModified"].timestamp()

    def stored(self, kind: Kind) -> Iterator[tuple[str, float]]:
        """The sha256 of every object of a kind, with when it was written (seconds since the epoch)."""
        prefix = f"{self.location.prefix}{kind_folder(kind)}/"
        with reachable(self.where):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    digest = obj["Key"].rsplit("/", 1)[-1].removesuffix(".jpg")
                    if is_digest(digest):
                        yield digest, obj["LastModified"].timestamp()

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the bucket answers now (readiness checks)."""
        from botocore.exceptions import ClientError

        try:
            with reachable(self.where):
                self.client.head_bucket(Bucket=self.location.bucket)
        except ClientError as exc:
            raise StoreUnavailable(f"{self.where}: {exc}") from exc

    def claim(self, library_id: str) -> None:
        """Note that library ``library_id`` keeps its objects under this prefix (see ``LocalImageStore.claim``)."""
        with reachable(self.where):
            self.client.put_object(Bucket=self.location.bucket, Key=f"{self.location.prefix}{library_key(library_id)}",
                                   Body=b"")  # fmt: skip

    def libraries(self) -> set[str]:
        """The ids of the libraries that claimed this prefix."""
        prefix = f"{self.location.prefix}{LIBRARIES}/"
        with reachable(self.where):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix)
            return {obj["Key"].removeprefix(prefix) for page in pages for obj in page.get("Contents", [])}

    def disk_bytes(self) -> int:
        total = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=self.location.prefix
        ):
            total += sum(obj["Size"] for obj in page.get("Contents", []))
        return total

    def presigned_url(self, kind: Kind, sha256: str, expires: int = 3600) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.location.bucket, "Key": self.key(kind, sha256)}, ExpiresIn=expires
        )


@dataclass(frozen=True)
class S3Object:
    uri: str
    size: int
    mtime_ns: int


def list_photos(client, location: S3Location) -> Iterator[S3Object]:
    """Every object under the prefix (formats are sniffed from content later), sorted by key."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue
            yield S3Object(location.uri(obj["Key"]), int(obj["Size"]), int(obj["LastModified"].timestamp() * 1e9))


def read(client, uri: str, max_bytes: int) -> bytes:
    """An object's bytes, refusing ones over ``max_bytes`` before downloading them."""
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    from lookalike.ingest.fetch import FetchError

    parsed = urlparse(uri)
    try:
        response = client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        size = int(response.get("ContentLength", 0))
        if size > max_bytes:
            response["Body"].close()
            raise FetchError(f"object too large: {size} bytes exceeds max_file_bytes={max_bytes}")
        return response["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise FetchError(f"S3 {code}: {uri}") from None
    except (BotoConnectionError, HTTPClientError) as exc:  # the server is away, not the object bad: run it again
        raise StoreUnavailable(f"S3 unreachable while reading {uri}: {exc}") from exc
    except BotoCoreError as exc:
        raise FetchError(f"S3 error: {exc}") from None
