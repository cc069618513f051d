"""Model files: find them in the models directory, verify them, fetch them when missing.

Weights are pinned by address and sha256 so that a library indexed today gives
the same vectors tomorrow; a file that does not match is never used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

GOOGLE_CORAL = "https://raw.githubusercontent.com/google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41"
NCNN_ASSETS = "https://raw.githubusercontent.com/nihui/ncnn-assets/9489f876aebdaa846af3786f70ea5da6be198243/models"


class ModelFileError(RuntimeError):
    """A model file is missing, cannot be fetched, or does not match its checksum."""


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    url: str


MOBILENET_V2_QUANT = ModelFile(
    "mobilenet_v2_1.0_224_quant.tflite",
    "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
    f"{GOOGLE_CORAL}/mobilenet_v2_1.0_224_quant.tflite",
)
MOBILENET_V1_EMBEDDER = ModelFile(
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
    "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319",
    f"{GOOGLE_CORAL}/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
)
NANODET_PARAM = ModelFile(
    "nanodet_m.param",
    "8543dccd5604ded10d06bdb2b2f702f8f2f1dac09652c81750f21bf0a6e3f1a8",
    f"{NCNN_ASSETS}/nanodet_m.param",
)
NANODET_BIN = ModelFile(
    "nanodet_m.bin",
    "8d7f846cfc340a3ef66389f174a66819709f7182b9d35788ee1506679caac65e",
    f"{NCNN_ASSETS}/nanodet_m.bin",
)

_verified: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """Hash a file, memoised by (path, size, mtime) so repeated opens cost nothing."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def _setting_hint(models_dir: Path) -> str:
    return f"models directory {models_dir} (setting models_dir, environment variable LOOKALIKE_MODELS_DIR)"


def resolve(file: ModelFile, models_dir: Path, allow_download: bool = True, timeout: float = 60.0) -> Path:
    """Return the verified local path of ``file``, downloading it when allowed and missing."""
    path = models_dir / file.name
    if path.exists():
        actual = sha256_file(path)
        if actual != file.sha256:
            raise ModelFileError(
                f"model file {file.name} in {_setting_hint(models_dir)} has sha256 {actual}, "
                f"expected {file.sha256}; delete it or replace it with the file from {file.url}"
            )
        return path
    if not allow_download:
        raise ModelFileError(
            f"model file {file.name} is missing from {_setting_hint(models_dir)} and downloads are off "
            f"(LOOKALIKE_ALLOW_DOWNLOAD=0); copy it there from {file.url}"
        )
    try:
        _download(file, path, timeout)
    except (httpx.HTTPError, OSError) as exc:
        raise ModelFileError(
            f"model file {file.name} is missing from {_setting_hint(models_dir)} and could not be "
            f"downloaded from {file.url} ({type(exc).__name__}: {exc}); copy it there by hand, "
            f"or point LOOKALIKE_MODELS_DIR at a directory that holds it"
        ) from exc
    return path


def _download(file: ModelFile, path: Path, timeout: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=path.parent)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", file.url, follow_redirects=True, timeout=timeout) as response,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 16):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != file.sha256:
            raise ModelFileError(
                f"downloaded {file.name} from {file.url} has sha256 {digest.hexdigest()}, "
                f"expected {file.sha256}; refusing to use it"
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
