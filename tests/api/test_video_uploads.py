"""Videos uploaded over HTTP (POST /api/v1/images): kept in the image store, indexed by the upload's job as their
frames, found by a screenshot and played from the store; bad, truncated and oversized ones refused per file, and a
video sent as a search query refused with what to send instead."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.datastructures import Headers, UploadFile

from lookalike.api.app import create_app
from lookalike.api.forms import check_not_video
from lookalike.api.problems import Problem
from lookalike.config import Settings
from lookalike.library import Library
from tests.conftest import photo
from tests.search.test_video_search import SHOTS, screenshot
from tests.videos import make_video

API = "/api/v1"
Client = Callable[..., TestClient]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    make_video(path, SHOTS, size=(320, 180))
    return path


@pytest.fixture
def make_client(open_client: Client) -> Client:
    return open_client


def jpeg() -> bytes:
    return photo("goldfish", 5).read_bytes()


def test_an_uploaded_video_is_indexed_found_and_played(make_client: Client, clip: Path) -> None:
    client = make_client()
    data = clip.read_bytes()
    r = client.post(f"{API}/images", files=[("images", ("clip.mp4", data, "video/mp4")),
                                            ("images", ("fish.jpg", jpeg(), "image/jpeg"))])  # fmt: skip
    assert r.status_code == 201, r.text
    added = {a["name"]: a for a in r.json()["added"]}
    assert set(added) == {"clip.mp4", "fish.jpg"} and added["fish.jpg"]["frames"] is None, r.json()
    frames = added["clip.mp4"]["frames"]
    assert len(frames) >= 5 and added["clip.mp4"]["id"] == frames[0]
    shot = screenshot(clip, 4.5)
    hit = client.post(f"{API}/search", files={"image": ("s.jpg", shot, "image/jpeg")}).json()["hits"][0]
    assert hit["video"] is True and hit["video_source"].endswith("/clip.mp4") and abs(hit["t"] - 4.5) <= 1.5
    assert hit["id"] in frames
    whole = client.get(hit["video_url"])
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "video/mp4"
    part = client.get(hit["video_url"], headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    original = client.get(hit["original_url"])
    assert original.status_code == 200 and Image.open(io.BytesIO(original.content)).size == (320, 180)
    again = client.post(f"{API}/images", files={"images": ("clip.mp4", data, "application/octet-stream")})
    assert again.status_code == 200, again.text
    assert [(d["name"], d["frames"]) for d in again.json()["duplicates"]] == [("clip.mp4", frames)]


def test_a_video_is_taken_by_its_type_without_a_suffix(make_client: Client, tmp_path: Path) -> None:
    client = make_client()
    webm = tmp_path / "recording.webm"
    make_video(webm, SHOTS[:2], size=(320, 180), codec="libvpx")
    r = client.post(f"{API}/images", files={"images": ("recording", webm.read_bytes(), "video/webm")})
    assert r.status_code == 201, r.text
    assert r.json()["added"][0]["name"] == "recording.webm" and len(r.json()["added"][0]["frames"]) >= 2
    odd = client.post(f"{API}/images", files={"images": ("x", b"data", "video/x-flv")})
    assert odd.status_code == 200 and "x is video/x-flv; upload a video as .avi" in odd.json()["rejected"][0]["reason"]


def test_bad_video_uploads_are_refused_each_and_the_others_indexed(make_client: Client, clip: Path) -> None:
    client = make_client()
    data = clip.read_bytes()
    r = client.post(f"{API}/images", files=[
        ("images", ("photo.mp4", jpeg(), "video/mp4")),  # a JPEG under a video's name
        ("images", ("noise.mp4", bytes(range(256)) * 64, "application/octet-stream")),
        ("images", ("cut.mp4", data[: len(data) // 2], "video/mp4")),  # truncated: its index is at the end
        ("images", ("empty.mov", b"", "video/quicktime")),
        ("images", ("fish.jpg", jpeg(), "image/jpeg")),
    ])  # fmt: skip
    assert r.status_code == 201, r.text
    assert [a["name"] for a in r.json()["added"]] == ["fish.jpg"]
    reasons = {x["name"]: x["reason"] for x in r.json()["rejected"]}
    assert set(reasons) == {"photo.mp4", "noise.mp4", "cut.mp4", "empty.mov"}, reasons
    assert all(reason for reason in reasons.values())
    stats = client.get(f"{API}/stats").json()
    assert (stats["images"], stats["videos"]) == (1, 0)


def test_a_video_over_its_limit_is_refused(make_client: Client, clip: Path) -> None:
    size = clip.stat().st_size
    client = make_client(video_upload_max_bytes=size // 2)  # under the photos' 20 MB: refused per file
    r = client.post(f"{API}/images", files=[("images", ("clip.mp4", clip.read_bytes(), "video/mp4")),
                                            ("images", ("fish.jpg", jpeg(), "image/jpeg"))])  # fmt: skip
    assert r.status_code == 201, r.text
    assert [a["name"] for a in r.json()["added"]] == ["fish.jpg"]
    assert "exceeds video_upload_max_bytes" in r.json()["rejected"][0]["reason"]
    small = make_client(max_upload_bytes=size // 4, video_upload_max_bytes=size // 2)  # the whole body: 413
    r = small.post(f"{API}/images", files={"images": ("clip.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 413 and "LOOKALIKE_VIDEO_UPLOAD_MAX_BYTES" in r.json()["detail"]


def test_a_photo_keeps_its_limit_where_videos_may_be_larger(make_client: Client, clip: Path) -> None:
    photo_bytes = jpeg()
    client = make_client(max_upload_bytes=len(photo_bytes) - 1, video_upload_max_bytes=4 * clip.stat().st_size)
    r = client.post(f"{API}/images", files=[("images", ("fish.jpg", photo_bytes, "image/jpeg")),
                                            ("images", ("clip.mp4", clip.read_bytes(), "video/mp4"))])  # fmt: skip
    assert r.status_code == 201, r.text
    assert [a["name"] for a in r.json()["added"]] == ["clip.mp4"]
    assert "exceeds max_upload_bytes" in r.json()["rejected"][0]["reason"]
    search = client.post(f"{API}/search", files={"image": ("fish.jpg", photo_bytes, "image/jpeg")})
    assert search.status_code == 413  # other routes keep the photos' limit


def test_the_photos_of_one_request_keep_the_photos_limit_in_all(make_client: Client) -> None:
    """The body limit of uploads is the videos' (so a video fits); photos are read into memory, so together they keep
    the photos' limit, as the whole body did before videos: 413, nothing indexed."""
    data = jpeg()
    client = make_client(max_upload_bytes=2 * len(data) + 100, video_upload_max_bytes=100 * len(data))
    files = [("images", (f"p{i}.jpg", data + bytes([i]) * 10, "image/jpeg")) for i in range(3)]
    r = client.post(f"{API}/images", files=files)
    assert r.status_code == 413 and "LOOKALIKE_MAX_UPLOAD_BYTES" in r.json()["detail"], r.text
    assert client.get(f"{API}/stats").json()["images"] == 0
    assert client.post(f"{API}/images", files=files[:2]).status_code == 201


def test_a_rejected_upload_of_a_videos_bytes_leaves_the_video_in_place(make_client: Client, clip: Path) -> None:
    """The same bytes uploaded again as a photo are rejected; the video uploaded first keeps its bytes in the store
    (its frames' sha256 are not the video's, so the photo rule alone deleted them: found in review)."""
    client = make_client()
    data = clip.read_bytes()
    first = client.post(f"{API}/images", files=[("images", ("clip.mp4", data, "video/mp4"))])
    assert first.status_code == 201, first.text
    frame = first.json()["added"][0]["id"]
    again = client.post(f"{API}/images", files=[("images", ("clip.jpg", data, "image/jpeg"))])
    assert again.status_code == 200 and again.json()["rejected"], again.text
    assert client.get(f"{API}/images/{frame}/video").status_code == 200
    assert client.get(f"{API}/images/{frame}/original").status_code == 200


def test_searching_by_a_video_says_to_send_a_frame(make_client: Client, clip: Path) -> None:
    client = make_client()
    for name, ctype in (("clip.mp4", "video/mp4"), ("clip.mp4", "application/octet-stream"), ("q.jpg", "image/jpeg")):
        r = client.post(f"{API}/search", files={"image": (name, clip.read_bytes(), ctype)})
        assert r.status_code == 415, (name, ctype, r.text)
        assert "is a video: a search takes a photo. Upload a frame of it (a screenshot)" in r.json()["detail"]


def test_photos_in_iso_media_boxes_are_not_taken_for_videos() -> None:
    """HEIC, AVIF and Canon's CR3 raw are ISO base media files like an MP4: told apart by their major brand."""
    for name, brand in (("IMG_0001.HEIC", b"heic"), ("a.avif", b"avif"), ("IMG_0001.CR3", b"crx ")):
        head = b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x01"
        check_not_video(UploadFile(io.BytesIO(head), filename=name, headers=Headers({"content-type": ""})), head)
    head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00"
    with pytest.raises(Problem, match="is a video"):
        check_not_video(UploadFile(io.BytesIO(head), filename="upload", headers=Headers({"content-type": ""})), head)


def test_an_uploaded_video_in_a_bucket_is_streamed_or_presigned(s3_settings: Settings, embedder, clip: Path) -> None:
    data = clip.read_bytes()
    with Library(s3_settings, embedder=embedder) as lib, TestClient(create_app(s3_settings, library=lib)) as client:
        r = client.post(f"{API}/images", files={"images": ("clip.mp4", data, "video/mp4")})
        assert r.status_code == 201, r.text
        frame = r.json()["added"][0]["frames"][1]
        url = f"{API}/images/{frame}/video"
        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "video/mp4"
        part = client.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == data[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
        for header, status in (("bytes=abc", 200), ("bytes=5-2", 200), ("bytes=0-1,3-4", 200), ("bytes=-100", 206),
                               ("bytes=" + "9" * 30 + "-", 200), ("bytes=99999999-", 416)):  # fmt: skip
            got = client.get(url, headers={"Range": header})
            assert got.status_code == status, (header, got.status_code, got.text[:200])
            if status == 416:
                assert got.headers["content-range"] == f"bytes */{len(data)}"
        assert client.get(url, headers={"Range": "bytes=-100"}).content == data[-100:]
        head = client.head(url)  # the headers, without reading the object from the bucket to drop it
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(data)
        original = client.get(f"{API}/images/{frame}/original")  # decoded from the object fetched to a temporary file
        assert original.status_code == 200 and Image.open(io.BytesIO(original.content)).size == (320, 180)
    presigning = Settings(**{**s3_settings.model_dump(), "s3_presign": True})
    with Library(presigning, embedder=embedder) as lib, TestClient(create_app(presigning, library=lib)) as client:
        moved = client.get(f"{API}/images/{frame}/video", follow_redirects=False)
        assert moved.status_code == 307
        assert httpx.get(moved.headers["location"], headers={"Range": "bytes=0-9"}).content == data[:10]


def test_an_uploaded_video_whose_frames_are_all_removed_leaves_the_store(make_client: Client, clip: Path) -> None:
    client = make_client()
    data = clip.read_bytes()
    first = client.post(f"{API}/images", files={"images": ("clip.mp4", data, "video/mp4")}).json()["added"][0]
    lib: Library = client.app.state.lookalike.library  # type: ignore[attr-defined]
    digest = hashlib.sha256(data).hexdigest()
    for frame in first["frames"][:-1]:
        assert client.delete(f"{API}/images/{frame}").status_code == 204
    assert lib.images.exists("original", digest)  # a frame is left: the video plays
    assert client.get(f"{API}/images/{first['frames'][-1]}/video").content == data
    assert client.delete(f"{API}/images/{first['frames'][-1]}").status_code == 204
    assert not lib.images.exists("original", digest)
    again = client.post(f"{API}/images", files={"images": ("clip.mp4", data, "video/mp4")})
    assert again.status_code == 201, again.text
    assert len(again.json()["added"][0]["frames"]) == len(first["frames"])
