"""The HTTP API against the real app, the real model and real photos (httpx via TestClient)."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike.api import app as app_module
from lookalike.api.app import create_app, wait_ready
from lookalike.config import Settings
from tests.badfiles import bomb_png, real_jpeg
from tests.conftest import MODELS, TOWHEE, photo, side_by_side

API = "/api/v1"


def jpeg(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/jpeg")


@pytest.fixture
def make_client(open_client, photo_dir: Path):
    def make(**overrides) -> TestClient:  # the shared photos are a root HTTP callers may index
        settings = {"source_roots": [str(TOWHEE.parent)], **overrides}
        return open_client(lambda lib: lib.index([str(photo_dir)]), **settings)

    return make


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def problem(response, status: int, fragment: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and fragment in body["detail"], body
    return body


def test_search_by_upload_finds_the_class(client: TestClient) -> None:
    r = client.post(f"{API}/search", files={"image": jpeg(photo("goldfish", 0, "test"))}, data={"k": "5"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["width"] > 0 and body["query"]["kind"] == "upload"
    assert len(body["hits"]) == 5 and body["hits"][0]["label"] == "goldfish"
    hit = body["hits"][0]
    assert hit["thumbnail_url"] == f"{API}/images/{hit['id']}/thumbnail" and hit["source"].endswith(".JPEG")


def test_phone_and_camera_photos_are_searched_by_upload(client: TestClient) -> None:
    """An iPhone's HEIC and a camera's DNG as uploads find the photo they show; a truncated DNG is a clear 400/422,
    never a 500."""
    from PIL import Image

    import lookalike.imaging  # noqa: F401 - registers pillow-heif's HEIF plugin with Pillow (to write the HEIC)
    from tests import rawfiles

    picture = Image.open(photo("goldfish", 0)).convert("RGB")
    heic = io.BytesIO()
    picture.save(heic, format="HEIF", quality=80)
    for name, data, kind in (("IMG_0001.HEIC", heic.getvalue(), "image/heic"),
                             ("DSC_0001.DNG", rawfiles.dng(picture, preview=True), "image/x-adobe-dng")):  # fmt: skip
        r = client.post(f"{API}/search", files={"image": (name, data, kind)}, data={"k": "3"})
        assert r.status_code == 200, r.text
        assert r.json()["hits"][0]["copy"] and r.json()["hits"][0]["label"] == "goldfish", name
    data = rawfiles.dng(picture)
    r = client.post(f"{API}/search", files={"image": ("DSC_0002.DNG", data[: len(data) // 3], "image/x-adobe-dng")})
    assert r.status_code in (400, 422) and "RAW" in r.json()["detail"], r.text


def test_search_by_url_and_by_id(client: TestClient, http_server: str, http_root: Path) -> None:
    shutil.copy(photo("tiger_cat", 0, "test"), http_root / "cat.jpg")
    r = client.post(f"{API}/search", json={"url": f"{http_server}/cat.jpg", "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["label"] == "tiger_cat"
    first = r.json()["hits"][0]["id"]
    r = client.post(f"{API}/search", json={"image_id": first, "k": 3, "label": "tiger_cat"})
    hits = r.json()["hits"]
    assert first not in [h["id"] for h in hits] and {h["label"] for h in hits} == {"tiger_cat"}
    assert r.json()["query"]["image_id"] == first and "source" not in r.json()["query"]
    region = client.post(f"{API}/search", json={"image_id": first, "k": 3, "box": [0, 0, 100, 100]})
    assert region.status_code == 200, region.text
    assert region.json()["query"]["image_id"] == first and "source" not in region.json()["query"]  # not "upload"


def test_region_search_finds_what_is_in_the_box(client: TestClient) -> None:
    """A photo made of a goldfish (left) and a bullet train (right): each half finds its class."""
    both = side_by_side("goldfish", "bullet_train", 300)
    for box, label in (("0,0,300,300", "goldfish"), ("300,0,600,300", "bullet_train")):
        r = client.post(f"{API}/search", files={"image": ("both.jpg", both, "image/jpeg")}, data={"box": box, "k": "3"})
        assert r.status_code == 200, r.text
        assert r.json()["hits"][0]["label"] == label and r.json()["query"]["box"] == [float(v) for v in box.split(",")]
    problem(
        client.post(f"{API}/search", files={"image": ("b.jpg", both, "image/jpeg")}, data={"box": "500,0,700,300"}),
        422,
        "not inside",
    )


def test_a_thin_photo_or_a_one_pixel_box_is_searched_not_a_500(client: TestClient) -> None:
    """A 3 x 1200 photo (1 pixel wide at the size local features are found at) or a box 1 pixel wide made OpenCV's
    ORB assert inside the copy check: 500 (hostile probe). Too thin a picture has no local features; the search
    answers, and a thin photo indexed is a candidate like any other."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    first = client.get(f"{API}/images", params={"limit": 1}).json()["images"][0]["id"]
    for box in ([0, 0, 1, 140], [0, 0, 240, 1]):
        r = client.post(f"{API}/search", json={"image_id": first, "box": box})
        assert r.status_code == 200, r.text
    for w, h in ((3, 1200), (1200, 3), (1, 900)):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out, "PNG")
        thin = ("thin.png", out.getvalue(), "image/png")
        assert client.post(f"{API}/search", files={"image": thin}).status_code == 200
        assert client.post(f"{API}/images", files={"images": thin}).status_code in (200, 201)
        r = client.post(f"{API}/search", files={"image": thin})  # now its own thumbnail is a candidate
        assert r.status_code == 200, r.text


def test_a_body_that_is_not_a_form_is_limited_to_a_mebibyte(client: TestClient) -> None:
    """JSON is parsed whole, and FastAPI parses it on the event loop: 18 MB of nested arrays (under the upload limit
    of 20 MiB) held every other request, liveness too, for 4 s (hostile probe). No JSON body needs more than 1 MiB;
    photos come in multipart forms, which keep their own limit."""
    from lookalike.api.limits import JSON_MAX_BYTES

    big = b'{"image_id": 1, "x": [' + b",".join([b"[]"] * (JSON_MAX_BYTES // 3 + 10)) + b"]}"
    json_type = {"content-type": "application/json"}
    problem(client.post(f"{API}/search", content=big, headers=json_type), 413, f"limited to {JSON_MAX_BYTES} bytes")
    problem(client.post(f"{API}/jobs/index", content=big, headers=json_type), 413, "multipart form")
    first = client.get(f"{API}/images", params={"limit": 1}).json()["images"][0]["id"]
    small = json.dumps({"image_id": first, "k": 2, "x": [[]] * 1000})
    assert client.post(f"{API}/search", content=small, headers=json_type).status_code == 200
    photo_form = {"image": ("p.jpg", photo("pizza", 0).read_bytes() + b"\0" * JSON_MAX_BYTES, "image/jpeg")}
    assert client.post(f"{API}/search", files=photo_form).status_code == 200  # a form: the upload limit


def test_bad_inputs_get_the_right_status(make_client) -> None:
    client = make_client(max_upload_bytes=2 * 2**20)
    data = real_jpeg()
    search = f"{API}/search"
    problem(client.post(search, files={"image": ("x.jpg", b"hello" * 100, "image/jpeg")}), 400, "not an image")
    problem(client.post(search, files={"image": ("x.jpg", data[: len(data) // 3], "image/jpeg")}), 400, "truncated")
    problem(client.post(search, files={"image": ("x.jpg", b"", "image/jpeg")}), 400, "empty")
    problem(client.post(search, files={"image": ("notes.txt", b"text", "text/plain")}), 415, "text/plain")
    problem(client.post(search, files={"image": ("bomb.png", bomb_png(), "image/png")}), 413, "too many pixels")
    problem(
        client.post(search, files={"image": ("big.jpg", b"\xff" * (3 * 2**20), "image/jpeg")}), 413, "max_upload_bytes"
    )
    problem(client.post(search, content=b"raw", headers={"content-type": "text/plain"}), 415)
    problem(client.post(search, content=b"{nope", headers={"content-type": "application/json"}), 400)
    problem(client.post(search, json={"url": "http://x.org/a.jpg", "image_id": 1}), 422, "exactly one")
    problem(client.post(search, json={"image_id": 1, "k": 0}), 422, "k")
    problem(client.post(search, json={"image_id": 1, "min_score": 5}), 422, "min_score")
    problem(client.post(search, files={"other": ("x.jpg", data, "image/jpeg")}), 422, "'image'")
    problem(client.post(search, json={"image_id": 999999}), 404, "no image with id 999999")
    problem(client.get(f"{API}/images/999999"), 404)
    problem(client.get(f"{API}/images/999999/thumbnail"), 404)
    problem(client.get(f"{API}/images/abc"), 422)
    problem(client.post(search, json={"url": "http://xn--/x.jpg"}), 422, "not a valid URL")  # IDNA: was a 500


def test_private_urls_are_refused_unless_allowed(make_client) -> None:
    client = make_client(url_allow_private=False)
    for url in ("http://127.0.0.1:1/x.jpg", "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/a.jpg"):
        problem(client.post(f"{API}/search", json={"url": url}), 422, "refusing to fetch")


def test_upload_duplicates_rejects_metadata_files_and_delete(client: TestClient) -> None:
    files = [
        ("images", jpeg(photo("pizza", 0))),
        ("images", jpeg(photo("pizza", 1))),
        ("images", ("notes.txt", b"not a photo", "text/plain")),
        ("images", ("broken.jpg", b"\xff\xd8\xff garbage", "image/jpeg")),
    ]
    r = client.post(f"{API}/images", files=files, data={"label": "pizza"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["added"]) == 2 and not body["duplicates"]
    assert {x["name"] for x in body["rejected"]} == {"notes.txt", "broken.jpg"}
    again = client.post(f"{API}/images", files=files[:2]).json()
    assert not again["added"] and sorted(d["id"] for d in again["duplicates"]) == sorted(a["id"] for a in body["added"])
    data = photo("pizza", 2).read_bytes()  # the same bytes twice in one request: added once, then a duplicate of it
    twice = client.post(f"{API}/images", files=[("images", ("first.jpg", data, "image/jpeg")),
                                                ("images", ("second.jpg", data, "image/jpeg"))]).json()  # fmt: skip
    assert [a["name"] for a in twice["added"]] == ["first.jpg"], twice
    assert [(d["name"], d["id"]) for d in twice["duplicates"]] == [("second.jpg", twice["added"][0]["id"])]
    data = photo("pizza", 3).read_bytes()  # the same name too: one item of the job, still one added
    same = client.post(f"{API}/images", files=[("images", ("same.jpg", data, "image/jpeg"))] * 2).json()
    assert len(same["added"]) == 1 and [d["id"] for d in same["duplicates"]] == [same["added"][0]["id"]], same

    image_id = body["added"][0]["id"]
    meta = client.get(f"{API}/images/{image_id}").json()
    assert meta["label"] == "pizza" and meta["format"] == "JPEG" and meta["sources"][0].startswith("upload:")
    thumb = client.get(f"{API}/images/{image_id}/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg" and "immutable" in thumb.headers["cache-control"]
    assert (
        client.get(f"{API}/images/{image_id}/thumbnail", headers={"If-None-Match": thumb.headers["etag"]}).status_code
        == 304
    )
    original = client.get(f"{API}/images/{image_id}/original")
    assert original.content == photo("pizza", 0).read_bytes() or original.content == photo("pizza", 1).read_bytes()
    assert original.headers["content-type"] == "image/jpeg" and original.headers["etag"]
    found = client.post(f"{API}/search", files={"image": jpeg(photo("pizza", 0))}, data={"k": "1"}).json()
    assert found["hits"][0]["similarity"] > 0.999 and found["hits"][0]["source"].startswith("upload: ")

    # as a copy of another photo (the page's Duplicates view): only while that one is there with a file
    other = body["added"][1]["id"]
    gone = client.get(f"{API}/images/{other}").json()
    assert client.delete(f"{API}/images/{other}").status_code == 204
    problem(client.delete(f"{API}/images/{image_id}?kept={other}"), 409, "is not in the library with a file")
    problem(client.delete(f"{API}/images/{image_id}?kept=abc"), 422)
    problem(client.delete(f"{API}/images/{image_id}?kept={image_id}"), 422, "not kept in its own place")
    assert client.get(f"{API}/images/{image_id}").status_code == 200 and gone["id"] == other
    assert client.delete(f"{API}/images/{image_id}").status_code == 204
    problem(client.get(f"{API}/images/{image_id}"), 404)
    problem(client.delete(f"{API}/images/{image_id}"), 404)
    # an upload is explicit: a photo deleted before can be uploaded again (only index runs leave removed files out)
    back = client.post(f"{API}/images", files=[f for f in files[:2] if meta["sources"][0].endswith(f[1][0])]).json()
    assert len(back["added"]) == 1, back


def test_original_of_a_folder_photo_is_read_from_its_file(client: TestClient) -> None:
    hit = client.post(f"{API}/search", files={"image": jpeg(photo("goldfish", 1))}, data={"k": "1"}).json()["hits"][0]
    r = client.get(hit["original_url"])
    assert r.status_code == 200 and r.content == photo("goldfish", 1).read_bytes()
    # HEAD (curl -I, link checkers) answers what GET would, without the bytes: it was a 405
    head = client.head(hit["original_url"])
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == r.headers["etag"]
    assert int(head.headers["content-length"]) == len(r.content)
    thumb = client.head(hit["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content == b""
    assert client.head("/").status_code == 200
    assert client.head(f"{API}/images/999999/thumbnail").status_code == 404


KEY = "s3cret-s3cret-s3cret"  # keys under 16 characters are refused


def test_api_key_guards_writes_and_optionally_reads(make_client) -> None:
    client = make_client(api_key=KEY)
    problem(client.post(f"{API}/images", files=[("images", jpeg(photo("pizza", 0)))]), 401, "X-API-Key")
    problem(client.post(f"{API}/images", files=[("images", jpeg(photo("pizza", 0)))], headers={"X-API-Key": "no"}), 401)
    ok = client.post(f"{API}/images", files=[("images", jpeg(photo("pizza", 0)))], headers={"X-API-Key": KEY})
    assert ok.status_code == 201
    problem(client.delete(f"{API}/images/1"), 401)
    problem(client.get(f"{API}/stats"), 401)  # with a key, reads need it too by default
    assert client.head(f"{API}/images/1/thumbnail").status_code == 401  # HEAD is a read like GET
    assert client.get(f"{API}/stats", headers={"X-API-Key": KEY}).status_code == 200
    open_reads = make_client(api_key=KEY, api_key_for_reads=False)  # LOOKALIKE_API_KEY_FOR_READS=0
    assert open_reads.get(f"{API}/stats").status_code == 200
    problem(open_reads.delete(f"{API}/images/1"), 401)


def test_cors_when_configured(make_client) -> None:
    client = make_client(cors_origins=["https://shop.example"])
    r = client.get(f"{API}/stats", headers={"Origin": "https://shop.example"})
    assert r.headers["access-control-allow-origin"] == "https://shop.example"


def test_index_job_reports_progress_and_searches_run_meanwhile(client: TestClient) -> None:
    problem(client.post(f"{API}/jobs/index", json={"paths": ["/no/such/folder"]}), 403, "LOOKALIKE_SOURCE_ROOTS")
    missing = str(TOWHEE.parent / "no-such-folder")  # inside the root: then existence may be told
    problem(client.post(f"{API}/jobs/index", json={"paths": [missing]}), 422, "no such file")
    problem(client.get(f"{API}/jobs/12345"), 404)
    r = client.post(f"{API}/jobs/index", json={"paths": [str(TOWHEE / "train")]})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    searches_during_job = 0
    deadline = time.time() + 300
    while time.time() < deadline:
        job = client.get(f"{API}/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            break
        s = client.post(f"{API}/search", files={"image": jpeg(photo("goldfish", 0, "test"))}, data={"k": "3"})
        assert s.status_code == 200
        if client.get(f"{API}/jobs/{job_id}").json()["state"] == "running":
            searches_during_job += 1
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == 1000 and job["rate"] > 0 and job["rejected"] == 0 and job["errors"] == []
    # the 12 fixture photos are copies of train photos: stored once, reported as duplicates
    assert job["added"] == 988 and job["duplicates"] == 12
    listed = client.get(f"{API}/jobs").json()["jobs"]
    assert [j["id"] for j in listed][:1] == [job_id] and listed[0]["state"] == "done"
    problem(client.post(f"{API}/jobs/424242/cancel"), 404)
    assert client.post(f"{API}/jobs/{job_id}/cancel").json()["state"] == "done"  # finished: nothing to cancel
    assert searches_during_job >= 3  # searches were answered while the job ran
    stats = client.get(f"{API}/stats").json()
    assert stats["images"] == 1000 and stats["model"] == "mobilenet_v2"


def test_information_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    stats = client.get(f"{API}/stats").json()
    assert stats["images"] == 12 and stats["dim"] == 1280 and stats["index"] == "flat" and "disk_bytes" in stats
    assert client.get(f"{API}/labels").json() == {"goldfish": 4, "tiger_cat": 4, "bullet_train": 4}
    client.post(f"{API}/search", files={"image": jpeg(photo("goldfish", 0))})
    metrics = client.get("/metrics").text
    assert 'lookalike_searches_total{kind="upload"} 1.0' in metrics
    assert "lookalike_http_request_duration_seconds_bucket" in metrics and "lookalike_images 12.0" in metrics
    for n in range(3):  # made-up methods (any token is one): one "other" series, not one each for ever
        assert client.request(f"X{n}" * 50, f"{API}/stats").status_code == 405
    metrics = client.get("/metrics").text
    assert "X0X0" not in metrics and 'method="other"' in metrics
    assert "/api/v1/search" in client.get("/openapi.json").text
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "Lookalike" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_503_while_loading_then_ready(settings: Settings, monkeypatch) -> None:
    release = threading.Event()
    real_open = app_module.State.open

    def slow_open(self) -> None:
        release.wait(30)
        real_open(self)

    monkeypatch.setattr(app_module.State, "open", slow_open)
    app = create_app(settings.model_copy(update={"models_dir": MODELS}))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 503
        problem(client.post(f"{API}/search", json={"image_id": 1}), 503, "loading")
        release.set()
        wait_ready(app)
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get(f"{API}/stats").status_code == 200


def test_detect_and_match_objects_over_http(make_client) -> None:
    client = make_client()
    up = client.post(
        f"{API}/images",
        files=[("images", jpeg(photo("ambulance", i))) for i in range(3)],
        data={"objects": "true", "label": "ambulance"},
    )
    assert up.status_code == 201 and len(up.json()["added"]) == 3
    r = client.post(
        f"{API}/search",
        files={"image": jpeg(photo("ambulance", 0, "test"))},
        data={"detect": "true", "match": "both", "k": "3"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["objects"][0]["label"] == "bus" and len(body["query"]["objects"][0]["box"]) == 4
    assert body["hits"][0]["label"] == "ambulance"
    # two of the three uploaded ambulances hold a detected truck (checked with `lookalike detect`)
    r = client.post(
        f"{API}/search",
        files={"image": jpeg(photo("ambulance", 0, "test"))},
        data={"detected_label": "truck", "k": "5"},
    )
    hits = r.json()["hits"]
    assert len(hits) == 2 and all(h["detected_label"] == "truck" and len(h["box"]) == 4 for h in hits)
    assert all(0.5 <= h["detected_score"] <= 1 for h in hits)  # how sure the detector's guess was, with the guess
    problem(client.post(f"{API}/search", json={"image_id": 1, "match": "sideways"}), 422, "match")


def test_scores_come_in_the_order_of_the_hits(client: TestClient) -> None:
    """The score shown orders the hits (re-ranking included); the similarity to the photo is beside it."""
    for q in (photo("goldfish", 0, "test"), photo("tiger_cat", 0, "test")):
        hits = client.post(f"{API}/search", files={"image": jpeg(q)}, data={"k": "12"}).json()["hits"]
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True) and all(-1 <= h["similarity"] <= 1 for h in hits)
    same = client.post(f"{API}/search", files={"image": jpeg(photo("goldfish", 0))}, data={"k": "1"}).json()["hits"][0]
    assert same["similarity"] == pytest.approx(1.0, abs=1e-4)


def test_a_nul_in_a_label_or_a_file_name_loses_nothing_on_postgresql(open_client, pg_url: str) -> None:
    """PostgreSQL's text refuses a NUL character: a label or an uploaded file's name holding one failed the whole
    upload's job (the good photo of the request with it, and the job's error showed the SQL statement and its
    parameters), and a label filter holding one answered 500 (hostile probe). A label or a filter with one is
    refused (422); a name is kept with the NUL written as a path's is (\\0)."""
    client = open_client(database_url=pg_url)
    good = jpeg(photo("pizza", 0))
    problem(client.post(f"{API}/images", files=[("images", good)], data={"label": "a\x00b"}), 422, "NUL")
    problem(client.get(f"{API}/images", params={"label": "a\x00b"}), 422, "NUL")
    problem(client.get(f"{API}/images", params={"name": "a\x00b"}), 422, "NUL")
    problem(client.post(f"{API}/search", json={"image_id": 1, "label": "a\x00b"}), 422, "NUL")
    parts = [b'--B\r\nContent-Disposition: form-data; name="images"; filename="' + name + b'"\r\n'
             b"Content-Type: image/jpeg\r\n\r\n" + photo("pizza", n).read_bytes() + b"\r\n"
             for n, name in ((0, b"good.jpg"), (1, b"bad\x00name.jpg"))]  # a raw NUL: httpx would escape it
    r = client.post(f"{API}/images", content=b"".join(parts) + b"--B--\r\n",
                    headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 201, r.text
    assert sorted(a["name"] for a in r.json()["added"]) == ["bad\\0name.jpg", "good.jpg"]
    assert not r.json()["rejected"] and client.get(f"{API}/images").json()["total"] == 2


def test_records_travel_with_uploads_hits_and_patches(make_client) -> None:
    """A shop uploads a product photo with its record, finds it by a customer's photo with the record on the hit,
    corrects the price with PATCH; bad records are 422 naming the problem, and nothing is written."""
    client = make_client(api_key=KEY, api_key_for_reads=False)  # writes need the key, reads are open
    auth = {"X-API-Key": KEY}
    record = {"title": "Pizza Margherita", "price": 8.5, "url": "https://shop.example/p/pizza", "tags": ["hot"]}
    r = client.post(f"{API}/images", files=[("images", jpeg(photo("pizza", 0)))], data={"fields": json.dumps(record)},
                    headers=auth)  # fmt: skip
    assert r.status_code == 201, r.text
    image_id = r.json()["added"][0]["id"]
    hits = client.post(f"{API}/search", files={"image": jpeg(photo("pizza", 0))}).json()["hits"]
    assert hits[0]["id"] == image_id and hits[0]["fields"] == record
    assert all(h["fields"] == {} for h in hits[1:])  # the folder's photos have no record
    problem(client.patch(f"{API}/images/{image_id}", json={"fields": {"price": 7}}), 401, "X-API-Key")
    patched = client.patch(f"{API}/images/{image_id}", json={"fields": {"price": 7.25, "tags": None}}, headers=auth)
    assert patched.status_code == 200 and patched.json()["fields"] == {"title": "Pizza Margherita", "price": 7.25,
                                                                       "url": record["url"]}  # fmt: skip
    assert client.get(f"{API}/images/{image_id}").json()["fields"]["price"] == 7.25
    for bad, fragment in (({"fields": {"bad key": 1}}, "field name"), ({"fields": {"price": [1, 2]}}, "strings only"),
                          ({"fields": {"t": "x" * 3000}}, "at most"), ({"title": "x"}, "fields"),
                          ({"fields": {"n": {"deep": {"er": 1}}}}, "not dict")):  # fmt: skip
        problem(client.patch(f"{API}/images/{image_id}", json=bad, headers=auth), 422, fragment)
    problem(client.patch(f"{API}/images/999999", json={"fields": {"a": 1}}, headers=auth), 404)
    assert client.get(f"{API}/images/{image_id}").json()["fields"]["price"] == 7.25  # nothing written
    for text, fragment in (("{oops", "not JSON"), ('["a"]', "object"), ('{"a b": 1}', "field name"),
                           ("[" * 20000 + "]" * 20000, "fields")):  # fmt: skip
        r = client.post(f"{API}/images", files=[("images", jpeg(photo("pizza", 1)))], data={"fields": text},
                        headers=auth)  # fmt: skip
        problem(r, 422, fragment)


def test_searches_filter_on_fields_as_text_or_json_and_bad_filters_are_422(make_client) -> None:
    client = make_client(api_key=KEY, api_key_for_reads=False)  # writes need the key, reads are open
    auth = {"X-API-Key": KEY}
    for n, price in ((0, 8.5), (1, 12.0), (2, 30.0)):
        record = json.dumps({"title": f"Pizza {n}", "price": price, "tags": ["hot"] if n else ["cold"]})
        r = client.post(f"{API}/images", files=[("images", jpeg(photo("pizza", n)))], data={"fields": record},
                        headers=auth)  # fmt: skip
        assert r.status_code == 201, r.text
    upload = {"image": jpeg(photo("pizza", 0))}
    hits = client.post(f"{API}/search", files=upload, data={"where": "price < 20 and tags contains 'hot'"}).json()
    assert [h["fields"]["title"] for h in hits["hits"]] == ["Pizza 1"]
    as_json = {"and": [{"field": "price", "op": ">=", "value": 8.5}, {"not": {"field": "title", "op": "=",
                                                                              "value": "Pizza 2"}}]}  # fmt: skip
    by_id = client.post(f"{API}/search", json={"image_id": 1, "k": 20, "where": as_json}).json()["hits"]
    assert {h["fields"]["title"] for h in by_id} <= {"Pizza 0", "Pizza 1"} and by_id
    form_json = client.post(f"{API}/search", files=upload, data={"where": json.dumps(as_json)}).json()["hits"]
    assert {h["fields"]["title"] for h in form_json} == {"Pizza 0", "Pizza 1"}
    for bad, fragment in (("price <", "column"), ('{"field": "a", "op": "~"}', "op"),
                          ("title = '\" or 1=1 --'", ""), ("(" * 20 + "a = 1" + ")" * 20, "nests"),
                          ('{"not": ' * 400 + "1" + "}" * 400, "nests"),
                          ("a = 1 or " * 600 + "a = 2", "4096")):  # fmt: skip
        r = client.post(f"{API}/search", files=upload, data={"where": bad})
        if fragment:
            problem(r, 422, fragment)
        else:  # an injection attempt is a value like any other: it matches nothing
            assert r.status_code == 200 and r.json()["hits"] == []
    problem(client.post(f"{API}/search", json={"image_id": 1, "where": {"and": [{"not": {"x": 1}}]}}), 422)


def test_an_index_job_can_prune_an_emptied_folder_on_request(client: TestClient) -> None:
    """prune_empty (pipeline.EMPTY_ROOT: prune alone leaves a folder that lists nothing) implies prune."""
    r = client.post(f"{API}/jobs/index", json={"paths": [str(TOWHEE / "test")], "prune_empty": True})
    assert r.status_code == 202 and r.json()["prune"] is True, r.text
    client.post(f"{API}/jobs/{r.json()['id']}/cancel")
    problem(client.post(f"{API}/jobs/index", json={"paths": [str(TOWHEE / "test")], "prune_empty": "maybe"}), 422)
