"""Photos in a bucket (a real SeaweedFS S3 server): indexed incrementally, stored in S3, served over HTTP."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.library import Library
from lookalike.store.s3 import s3_client
from tests.badfiles import salt
from tests.conftest import photo


def upload_folder(client, bucket: str, prefix: str, folder: Path) -> list[str]:
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    keys = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder)}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
    return keys


@pytest.fixture
def bucket_photos(s3_settings: Settings, photo_dir: Path) -> str:
    client = s3_client(s3_settings)
    salt(photo_dir / "junk")
    prefix = s3_settings.image_store.rsplit("/", 1)[-1] + "-roll"  # unique per test
    upload_folder(client, "camera", prefix, photo_dir)
    return f"s3://camera/{prefix}"


def test_bucket_is_indexed_incrementally_with_labels(s3_settings, embedder, bucket_photos) -> None:
    with Library(s3_settings, embedder=embedder) as lib:
        report = lib.index([bucket_photos])
        assert len(report.added) == 12 and len(report.rejected) == 5
        assert lib.catalog.labels() == {"goldfish": 4, "tiger_cat": 4, "bullet_train": 4}
        hit = lib.search(str(photo("goldfish", 0)), k=1).hits[0]
        assert hit.similarity == pytest.approx(1.0, abs=1e-4) and hit.sources[0].startswith(
            f"{bucket_photos}/goldfish/"
        )
        assert lib.original_bytes(hit.id) == photo("goldfish", 0).read_bytes()  # read back from the bucket
        again = lib.index([bucket_photos])
        assert again.unchanged == 12 and not again.added and len(again.rejected) == 5

        client = lib.s3()
        gone = hit.sources[0].removeprefix("s3://camera/")
        client.delete_object(Bucket="camera", Key=gone)
        report = lib.index([bucket_photos], prune=True)
        assert report.vanished == [hit.sources[0]] and report.pruned == 1 and lib.catalog.count() == 11


def test_thumbnails_live_in_the_bucket_and_are_served(s3_settings, embedder, bucket_photos) -> None:
    presign = Settings(**{**s3_settings.model_dump(), "s3_presign": True})
    with Library(presign, embedder=embedder) as lib:
        lib.index([bucket_photos])
        store = lib.images
        image_id = int(lib.catalog.ids()[0])
        sha = lib.catalog.get(image_id).sha256
        assert store.exists("thumbnail", sha) and not (presign.home / "images").exists()
        with TestClient(create_app(presign, library=lib)) as http:
            r = http.get(f"/api/v1/images/{image_id}/thumbnail", follow_redirects=False)
            assert r.status_code == 307 and "Signature=" in r.headers["location"]
            import httpx

            assert httpx.get(r.headers["location"]).content == store.get("thumbnail", sha)
            original = http.get(f"/api/v1/images/{image_id}/original")
            assert original.status_code == 200 and len(original.content) == lib.catalog.get(image_id).bytes


def test_unknown_bucket_is_a_clear_error(s3_settings, embedder) -> None:
    from lookalike.ingest.sources import SourceError

    with Library(s3_settings, embedder=embedder) as lib, pytest.raises(SourceError, match="cannot list the bucket"):
        lib.index(["s3://no-such-bucket-here/x"])


def test_a_video_in_a_bucket_is_indexed_and_found(s3_settings, embedder, tmp_path: Path) -> None:
    from tests.videos import Shot, make_video

    folder = tmp_path / "clips"
    folder.mkdir()
    make_video(folder / "clip.mkv", [Shot(photo(label, 1), 3) for label in ("goldfish", "tiger_cat")])
    prefix = s3_settings.image_store.rsplit("/", 1)[-1] + "-clips"
    upload_folder(s3_client(s3_settings), "camera", prefix, folder)
    with Library(s3_settings, embedder=embedder) as lib:
        report = lib.index([f"s3://camera/{prefix}"])
        assert (report.videos, report.frames, report.rejected) == (1, 2, [])
        hit = lib.search(str(photo("tiger_cat", 1)), k=1).hits[0]
        assert (hit.video, hit.t) == (f"s3://camera/{prefix}/clip.mkv", 3.0)
        assert lib.index([f"s3://camera/{prefix}"]).unchanged == 1
