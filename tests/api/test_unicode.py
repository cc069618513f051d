"""Lone UTF-16 surrogates (JSON's "\\ud800") in what the API stores or passes on: a 422 naming the problem, nothing
stored, and a job stored with one before (an old row) still listed. No 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike.library import Library
from tests.api.test_api import API, jpeg, problem
from tests.conftest import TOWHEE, photo

JSON = {"content-type": "application/json"}
NOT_UNICODE = "not valid Unicode"


@pytest.fixture
def client(open_client, photo_dir: Path) -> TestClient:
    return open_client(lambda lib: lib.index([str(photo_dir)]), source_roots=[str(TOWHEE.parent)])


def raw(client: TestClient, method: str, path: str, body: str):
    """``body`` sent as it is written: httpx's own JSON encoder cannot write a lone surrogate."""
    return client.request(method, f"{API}{path}", content=body.encode(), headers=JSON)


def jobs(client: TestClient) -> list[dict]:
    r = client.get(f"{API}/jobs")
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def test_patch_with_a_surrogate_is_422_and_changes_nothing(client: TestClient) -> None:
    image = client.get(f"{API}/images", params={"limit": 1}).json()["images"][0]
    client.patch(f"{API}/images/{image['id']}", json={"fields": {"title": "mug", "tags": ["a"]}}).raise_for_status()
    before = client.get(f"{API}/images/{image['id']}").json()["fields"]
    for body in ('{"fields": {"title": "\\ud800"}}', '{"fields": {"tags": ["ok", "\\udcff"]}}',
                 '{"fields": {"title": "x\\udfff y"}}', '{"fields": {"t\\ud800": "x"}}',
                 '{"fields": {"title": {"nested": "\\ud800"}}}', '{"\\ud800": 1, "fields": {}}'):  # fmt: skip
        r = raw(client, "PATCH", f"/images/{image['id']}", body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"], body
    problem(raw(client, "PATCH", f"/images/{image['id']}", '{"fields": {"title": "\\ud800"}}'), 422, NOT_UNICODE)
    assert client.get(f"{API}/images/{image['id']}").json()["fields"] == before == {"title": "mug", "tags": ["a"]}
    # a valid pair (an emoji written as two escapes) is text like any other
    r = raw(client, "PATCH", f"/images/{image['id']}", '{"fields": {"title": "\\ud83d\\ude00"}}')
    assert r.status_code == 200 and r.json()["fields"]["title"] == "\U0001f600", r.text


def test_upload_with_a_surrogate_in_its_fields_is_422_and_stores_nothing(client: TestClient) -> None:
    total = client.get(f"{API}/images").json()["total"]
    known = jobs(client)
    upload = [("images", jpeg(photo("goldfish", 0, "test")))]
    for fields in ('{"title": "\\ud800"}', '{"tags": ["\\udcff"]}', '{"title": "ok", "note": "\\udfff"}'):
        r = client.post(f"{API}/images", files=upload, data={"fields": fields})
        problem(r, 422, NOT_UNICODE)
    assert client.get(f"{API}/images").json()["total"] == total
    assert jobs(client) == known


def test_index_job_with_a_surrogate_is_422_and_not_queued(client: TestClient) -> None:
    known = jobs(client)
    for body in ('{"paths": ["http://127.0.0.1/\\ud800"]}', '{"paths": ["/tmp/\\ud800"]}',
                 f'{{"paths": ["{TOWHEE / "train"}"], "label": "\\ud800"}}'):  # fmt: skip
        r = raw(client, "POST", "/jobs/index", body)
        problem(r, 422, NOT_UNICODE)
    assert jobs(client) == known


def test_search_strings_with_a_surrogate_are_422(client: TestClient) -> None:
    for body in ('{"image_id": 1, "label": "\\ud800"}', '{"text": "\\ud800"}', '{"url": "http://127.0.0.1/\\ud800"}',
                 '{"image_id": 1, "detected_label": "\\ud800", "match": "objects"}'):  # fmt: skip
        problem(raw(client, "POST", "/search", body), 422, NOT_UNICODE)  # the Unicode check's own 422, not another


def test_a_job_stored_with_a_surrogate_is_still_listed(open_client) -> None:
    """A job written before surrogates were refused (or by another client of the queue) is shown with the
    surrogate as its escape, not a 500 on every listing."""
    ids: list[int] = []

    def old_row(lib: Library) -> None:
        ids.append(lib.jobs.submit("index", {"paths": ["http://127.0.0.1:9/\ud800"], "label": "a\udcffb",
                                             "prune": False, "objects": False}))  # fmt: skip

    client = open_client(old_row)
    listed = jobs(client)
    assert [j["id"] for j in listed] == ids and listed[0]["paths"] == ["http://127.0.0.1:9/\\ud800"]
    assert listed[0]["label"] == "a\\udcffb"
    r = client.get(f"{API}/jobs/{ids[0]}")
    assert r.status_code == 200 and r.json()["paths"] == ["http://127.0.0.1:9/\\ud800"], r.text
