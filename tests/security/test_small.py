"""Issue #24, point 15: the smaller ones."""

from __future__ import annotations

import io
import ipaddress
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.api.app import create_app
from lookalike.config import Settings
from lookalike.ingest.fetch import is_internal
from lookalike.library import Library
from tests.conftest import photo

API = "/api/v1"


@pytest.fixture
def client(settings: Settings, embedder, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):  # ids 1..12: /images/1_0 must not be image 10
        shutil.copy(photo(("goldfish", "tiger_cat", "bullet_train")[i % 3], i // 3), folder / f"{i:02d}.jpg")
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(folder)])
        with TestClient(create_app(settings, library=lib)) as c:
            yield c


def test_ids_are_plain_digits(client: TestClient) -> None:
    assert client.get(f"{API}/images/10").status_code == 200
    for spelled in ("1_0", "+10", "\u0661\u0660", " 10", "10.0", "0x0a"):
        r = client.get(f"{API}/images/{spelled}")
        assert r.status_code in (404, 422), (spelled, r.status_code)
        assert client.get(f"{API}/jobs/{spelled}").status_code in (404, 422), spelled


def test_labels_have_a_length_limit(client: TestClient) -> None:
    data = photo("tiger_cat", 0).read_bytes()
    r = client.post(f"{API}/images", files={"images": ("a.jpg", data, "image/jpeg")}, data={"label": "x" * 2**20})
    assert r.status_code == 422
    r = client.post(f"{API}/jobs/index", json={"paths": ["https://example.invalid/a.jpg"], "label": "x" * 100_000})
    assert r.status_code == 422
    r = client.post(f"{API}/jobs/index", json={"paths": ["https://example.invalid/a.jpg"], "label": "x" * 2**20})
    assert r.status_code == 413  # past the 1 MiB of a JSON body before any label is read


@pytest.mark.parametrize("fmt", ["PCX", "SGI", "TGA", "XBM", "ICO", "PPM", "IM", "DDS"])
def test_only_the_documented_formats_are_decoded(client: TestClient, fmt: str) -> None:
    buf = io.BytesIO()
    Image.open(photo("goldfish", 0)).convert("1" if fmt == "XBM" else "RGB").resize((64, 64)).save(buf, fmt)
    r = client.post(f"{API}/search", files={"image": ("q.bin", buf.getvalue(), "image/x-other")})
    assert r.status_code == 400 and "supported format" in r.json()["detail"], (fmt, r.status_code)


INTERNAL = ["::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::7f00:1", "2002:7f00:1::",
            "2002:c0a8:101::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"]  # fmt: skip


@pytest.mark.parametrize("address", INTERNAL)
def test_loopback_and_private_addresses_inside_ipv6_are_internal(address: str) -> None:
    assert is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_stay_public(address: str) -> None:
    assert not is_internal(ipaddress.ip_address(address))


def test_a_trailing_slash_is_not_redirected_to_the_callers_host(client: TestClient) -> None:
    r = client.get(f"{API}/stats/", headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "evil.example" not in r.headers.get("location", "") + r.text


def test_the_name_search_and_hide_copies_take_hostile_values_without_a_500(client: TestClient) -> None:
    """The inputs this stop added to the API: a file-name filter and hide_copies."""
    assert client.get(f"{API}/images", params={"name": "05"}).json()["total"] == 1
    for name in ("%", "_", "\\", "'; DROP TABLE images; --", "\u00c9t\u00e9", "\u202e"):
        r = client.get(f"{API}/images", params={"name": name})
        assert r.status_code == 200 and r.json()["total"] == 0, (name, r.text)
    for name in ("a\u0000b", "\u0000"):  # no name holds one (PostgreSQL stores none): refused, not a 500 there
        r = client.get(f"{API}/images", params={"name": name})
        assert r.status_code == 422 and "NUL" in r.json()["detail"], (name, r.text)
    r = client.get(f"{API}/images", params={"name": "x" * 201})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    data = photo("tiger_cat", 0).read_bytes()
    for value in ("yes", "2", "", "[]"):
        r = client.post(f"{API}/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"hide_copies": value})
        assert r.status_code in (200, 422), (value, r.status_code)
    for value in (2, None, [], {}, "maybe"):
        r = client.post(f"{API}/search", json={"image_id": 1, "hide_copies": value})
        assert r.status_code in (200, 422), (value, r.status_code)
    r = client.post(f"{API}/search", json={"text": "a cat", "hide_copies": True})
    assert r.status_code == 422  # a text search judges no copies
