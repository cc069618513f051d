"""Videos over HTTP: a screenshot's hit names the video and the second, the frame's original is a JPEG, and the
video itself is served with Range requests so the page's player can start at that second."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.library import Library
from tests.conftest import photo
from tests.search.test_video_search import SHOTS, screenshot
from tests.security.serving import client_for
from tests.videos import make_video

API = "/api/v1"


@pytest.fixture
def served(tmp_path: Path, settings: Settings, embedder):
    folder = tmp_path / "media"
    folder.mkdir()
    clip = folder / "clip.webm"
    make_video(clip, SHOTS, size=(480, 270), codec="libvpx")
    shutil.copy(photo("goldfish", 5), folder / "goldfish.jpg")
    lib = Library(settings, embedder=embedder)
    assert lib.index([str(folder)]).videos == 1
    with TestClient(create_app(settings, library=lib)) as client:
        yield client, clip
    lib.close()


def test_a_hit_plays_its_video_from_the_second(served: tuple[TestClient, Path]) -> None:
    client, clip = served
    shot = screenshot(clip, 6.8)
    r = client.post(f"{API}/search", files={"image": ("shot.jpg", shot, "image/jpeg")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    hit = r.json()["hits"][0]
    assert hit["video"] is True and hit["video_source"] == str(clip) and abs(hit["t"] - 6.8) <= 1.0
    assert hit["video_url"] == f"{API}/images/{hit['id']}/video"
    original = client.get(hit["original_url"])
    assert original.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(original.content)).size == (480, 270)
    data = clip.read_bytes()
    part = client.get(hit["video_url"], headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.headers["content-type"] == "video/webm" and part.headers["accept-ranges"] == "bytes"
    whole = client.get(hit["video_url"])
    assert whole.status_code == 200 and whole.content == data
    head = client.head(hit["video_url"])  # what a player may ask first
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(data)


def test_a_photo_or_a_changed_video_has_no_video(served: tuple[TestClient, Path]) -> None:
    client, clip = served
    photo_hit = client.post(f"{API}/search", files={"image": ("q.jpg", photo("goldfish", 5).read_bytes(),
                                                              "image/jpeg")}).json()["hits"][0]  # fmt: skip
    assert photo_hit["video"] is False and photo_hit["video_url"] is None
    assert client.get(f"{API}/images/{photo_hit['id']}/video").status_code == 404
    frame = client.post(f"{API}/search", files={"image": ("s.jpg", screenshot(clip, 1.0), "image/jpeg")})
    frame_id = frame.json()["hits"][0]["id"]
    os.utime(clip, ns=(0, 0))  # the file is not the one indexed any more
    assert client.get(f"{API}/images/{frame_id}/video").status_code == 404


def frame_id(client: TestClient, clip: Path) -> int:
    r = client.post(f"{API}/search", files={"image": ("s.jpg", screenshot(clip, 1.0), "image/jpeg")})
    hit = r.json()["hits"][0]
    assert hit["video"] is True
    return int(hit["id"])


MANY = ",".join(f"{2 * i}-{2 * i}" for i in range(99))  # 99 ranges: Starlette's most (100) not reached


HOSTILE_RANGES = [
    ("bytes=abc", 200),  # not a range: ignored (RFC 9110 14.2), the whole file
    ("bytes=5-2", 200),  # last before first: invalid, ignored
    ("bytes=", 200),
    ("items=0-10", 200),  # a unit other than bytes: ignored
    ("bytes=0-1" + ",3-4" * 400, 200),  # hundreds of ranges: the whole file once, not hundreds of parts
    ("bytes=0-" + "9" * 5000, 200),  # a number too long to read: ignored
    ("bytes=-0", 416),  # the last 0 bytes: unsatisfiable
    ("bytes=99999999999999999999999-", 416),  # past the end
    ("bytes=0-99999999999999999999999", 206),  # to the end
    ("bytes=-100", 206),
    (f"bytes={MANY}", 206),
]


def test_hostile_range_headers_get_200_206_or_416(served: tuple[TestClient, Path]) -> None:
    client, clip = served
    data = clip.read_bytes()
    url = f"{API}/images/{frame_id(client, clip)}/video"
    for header, status in HOSTILE_RANGES:
        r = client.get(url, headers={"Range": header})
        assert r.status_code == status, (header[:40], r.status_code, r.text[:200])
        if status == 200:
            assert r.content == data
        elif status == 416:
            assert r.headers["content-range"] == f"bytes */{len(data)}"
        elif header == f"bytes={MANY}":
            assert r.headers["content-type"].startswith("multipart/byteranges")
            assert r.content.count(b"Content-Range: bytes ") == 99
        else:
            start = len(data) - 100 if header == "bytes=-100" else 0
            assert r.content == data[start:]
            assert r.headers["content-range"] == f"bytes {start}-{len(data) - 1}/{len(data)}"


def test_a_photo_has_no_video_to_play(served: tuple[TestClient, Path]) -> None:
    client, _ = served
    photo_id = client.get(f"{API}/images", params={"name": "goldfish"}).json()["images"][0]["id"]
    r = client.get(f"{API}/images/{photo_id}/video")
    assert r.status_code == 404
    assert "is a photo, not a video's frame" in r.json()["detail"]


def test_the_video_follows_the_read_rule(served: tuple[TestClient, Path]) -> None:
    client, clip = served
    frame = frame_id(client, clip)
    lib = client.app.state.lookalike.library  # type: ignore[attr-defined]
    key = "k" * 32
    with client_for(lib, api_key=key) as locked:  # with a key, reads need it by default
        assert locked.get(f"{API}/images/{frame}/video").status_code == 401
        assert locked.get(f"{API}/images/{frame}/video", headers={"X-API-Key": key}).status_code == 200
        assert locked.post(f"{API}/session", headers={"X-API-Key": key}).status_code == 204
        # the page's <video> sends the read cookie that gave it, as <img> does
        r = locked.get(f"{API}/images/{frame}/video", headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.headers["cache-control"].startswith("private")
    with client_for(lib, api_key=key, api_key_for_reads=False) as writes_only:  # the operator opened reads
        assert writes_only.get(f"{API}/images/{frame}/video").status_code == 200
