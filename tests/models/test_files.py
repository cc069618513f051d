"""Model files: found and verified in the models directory, fetched when missing, clear errors offline."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from lookalike.models import files
from lookalike.models.files import ModelFile, ModelFileError, resolve
from tests.conftest import MODELS

REAL = files.MOBILENET_V2_QUANT


def closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/{name}"


def test_pinned_checksums_match_the_shared_files() -> None:
    for f in (files.MOBILENET_V2_QUANT, files.MOBILENET_V1_EMBEDDER, files.NANODET_PARAM, files.NANODET_BIN):
        assert resolve(f, MODELS, allow_download=False) == MODELS / f.name


def test_missing_offline_names_the_file_and_the_setting(tmp_path: Path) -> None:
    offline = ModelFile(REAL.name, REAL.sha256, closed_port_url(REAL.name))
    with pytest.raises(ModelFileError) as err:
        resolve(offline, tmp_path)
    msg = str(err.value)
    assert REAL.name in msg and "LOOKALIKE_MODELS_DIR" in msg and "models_dir" in msg and str(tmp_path) in msg


def test_missing_with_downloads_off(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="downloads are off"):
        resolve(REAL, tmp_path, allow_download=False)


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    (tmp_path / REAL.name).write_bytes(b"not the model")
    with pytest.raises(ModelFileError, match="expected 7aad0c74"):
        resolve(REAL, tmp_path)


def test_download_from_pinned_address(tmp_path: Path, http_server: str, http_root: Path) -> None:
    shutil.copy(MODELS / REAL.name, http_root / REAL.name)
    served = ModelFile(REAL.name, REAL.sha256, f"{http_server}/{REAL.name}")
    target = tmp_path / "models"
    path = resolve(served, target)
    assert path == target / REAL.name and files.sha256_file(path) == REAL.sha256
    assert [p.name for p in target.iterdir()] == [REAL.name]  # no temp files left


def test_download_with_wrong_content_is_discarded(tmp_path: Path, http_server: str, http_root: Path) -> None:
    (http_root / REAL.name).write_bytes(b"tampered")
    served = ModelFile(REAL.name, REAL.sha256, f"{http_server}/{REAL.name}")
    with pytest.raises(ModelFileError, match="refusing to use it"):
        resolve(served, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []
