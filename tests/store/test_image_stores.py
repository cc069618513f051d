"""One conformance suite for the image stores: local directory and S3 (a real SeaweedFS server)."""

from __future__ import annotations

import httpx
import pytest

from lookalike.store.images import LocalImageStore
from lookalike.store.s3 import S3ImageStore, S3Location
from tests import s3server

SHA = "ab" * 32
OTHER = "cd" * 32


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalImageStore(tmp_path / "images")
    endpoint = request.getfixturevalue("s3_endpoint")
    prefix = "conf" + str(abs(hash(request.node.nodeid)))[:10]
    return S3ImageStore(s3server.make_client(endpoint), S3Location.parse(f"s3://library/{prefix}"))


def test_put_get_exists_delete(store) -> None:
    assert store.get("thumbnail", SHA) is None and not store.exists("thumbnail", SHA)
    store.put("thumbnail", SHA, b"\xff\xd8thumb")
    store.put("original", SHA, b"original bytes")
    store.put("features", SHA, b"features")
    assert store.get("thumbnail", SHA) == b"\xff\xd8thumb" and store.get("original", SHA) == b"original bytes"
    assert store.get("features", SHA) == b"features" and not store.exists("features", OTHER)
    assert store.exists("thumbnail", SHA) and not store.exists("thumbnail", OTHER)
    assert store.disk_bytes() == len(b"\xff\xd8thumb") + len(b"original bytes") + len(b"features")
    store.delete("features", SHA)
    assert store.get("features", SHA) is None and store.exists("original", SHA)
    store.delete("thumbnail", SHA)
    store.delete("thumbnail", OTHER)  # deleting what is not there is fine
    assert store.get("thumbnail", SHA) is None and store.get("original", SHA) == b"original bytes"


def test_stored_lists_each_kind_with_when_it_was_written(store) -> None:
    """What doctor compares with the catalog: every file of a kind, by its sha256, with its time of writing."""
    import time

    store.put("thumbnail", SHA, b"\xff\xd8thumb")
    store.put("original", SHA, b"original bytes")
    store.put("features", OTHER, b"features")
    listed = {kind: dict(store.stored(kind)) for kind in ("thumbnail", "original", "features")}
    assert {kind: sorted(found) for kind, found in listed.items()} == {
        "thumbnail": [SHA], "original": [SHA], "features": [OTHER]}  # fmt: skip
    assert all(abs(time.time() - at) < 600 for found in listed.values() for at in found.values())
    assert store.written("thumbnail", SHA) == listed["thumbnail"][SHA] and store.written("thumbnail", OTHER) is None
    store.delete("thumbnail", SHA)
    assert list(store.stored("thumbnail")) == []


def test_put_is_idempotent(store) -> None:
    store.put("original", SHA, b"same")
    store.put("original", SHA, b"same")
    assert store.get("original", SHA) == b"same"


def test_keys_must_be_content_hashes(store) -> None:
    with pytest.raises(ValueError):
        store.put("original", "../../escape", b"x")


def test_s3_location_parsing() -> None:
    assert S3Location.parse("s3://photos") == S3Location("photos", "")
    assert S3Location.parse("s3://photos/a/b") == S3Location("photos", "a/b/")
    with pytest.raises(ValueError):
        S3Location.parse("http://photos/a")


def test_s3_presigned_url_serves_the_object(s3_endpoint) -> None:
    store = S3ImageStore(s3server.make_client(s3_endpoint), S3Location.parse("s3://library/presign"))
    store.put("thumbnail", SHA, b"jpeg bytes")
    assert httpx.get(store.presigned_url("thumbnail", SHA, 60)).content == b"jpeg bytes"


def test_libraries_that_claim_a_store_are_listed(store) -> None:
    """What doctor reads before judging a file unused: every library that keeps files in the store."""
    assert store.libraries() == set()
    store.claim("a1b2c3")
    store.claim("a1b2c3")  # again: the same
    store.claim("other-library")
    assert store.libraries() == {"a1b2c3", "other-library"}
    assert list(store.stored("thumbnail")) == [] and store.disk_bytes() == 0
    with pytest.raises(ValueError):
        store.claim("../../etc")


def test_putting_bytes_a_read_only_store_holds_is_no_error(tmp_path) -> None:
    """A put of bytes already stored refreshes the file's time (doctor leaves what was written lately alone); on a
    read-only store (a replica's mount) that raised where the put used to do nothing (review)."""
    import subprocess

    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        store = LocalImageStore(disk / "images")
        store.put("thumbnail", SHA, b"\xff\xd8thumb")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        store.put("thumbnail", SHA, b"\xff\xd8thumb")  # there already: nothing to write
        assert store.get("thumbnail", SHA) == b"\xff\xd8thumb"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
