"""A user's own image model from an ONNX file, fed and read the way its manifest says.

The checks that can fail on a wrong manifest (input name, rank, layout, size, output, dimension)
all run when the model is loaded, on one blank input, so a mistake is one clear error at start-up
and never a batch of rejected photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.models import files
from lookalike.models.embedder import l2_normalize, square_input
from lookalike.models.manifest import ImageManifest, ManifestError
from lookalike.models.onnx_session import make_session

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def prepare_square(image: Image.Image, size: int, crop: float | None, interpolation: str) -> np.ndarray:
    """Resize + centre crop in one resampling step: cropping the matching box of the original before
    resizing is the same picture as resizing then cropping, without a full-size intermediate."""
    if crop is None:
        return np.asarray(image.resize((size, size), _RESAMPLE[interpolation]), dtype=np.uint8)
    return square_input(image, size, crop, _RESAMPLE[interpolation])


class OnnxImageEmbedder:
    """Photos -> unit vectors with ``model.onnx``; one onnxruntime session shared by all threads."""

    def __init__(self, name: str, folder: Path, manifest: ImageManifest, threads: int = 0) -> None:
        self.name, self.dim, self.input_size = name, manifest.dim, manifest.input_size
        self.manifest = manifest
        path = folder / manifest.file
        if manifest.sha256 is not None and files.sha256_file(path) != manifest.sha256:
            raise ManifestError(f"{path} does not match the sha256 in its manifest; replace the file or the checksum")
        self.session = make_session(path, threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if manifest.input is None and len(inputs) != 1:
            raise ManifestError(f"{path} has inputs {sorted(inputs)}: say which one takes the photo (manifest 'input')")
        inp = inputs.get(manifest.input) if manifest.input else next(iter(inputs.values()))
        if inp is None:
            raise ManifestError(f"{path} has no input {manifest.input!r}; its inputs: {', '.join(sorted(inputs))}")
        self._input = inp.name
        self._uint8 = inp.type == "tensor(uint8)"
        if not self._uint8 and inp.type not in ("tensor(float)", "tensor(float16)"):
            raise ManifestError(f"{path} input {inp.name} is {inp.type}; photos go into float or uint8 inputs")
        self._float16 = inp.type == "tensor(float16)"
        self._check_shape(path, list(inp.shape))
        outputs = [o.name for o in self.session.get_outputs()]
        if manifest.output is not None and manifest.output not in outputs:
            raise ManifestError(f"{path} has no output {manifest.output!r}; its outputs: {', '.join(outputs)}")
        self._output = manifest.output or outputs[0]
        self._mean = np.array(manifest.mean, dtype=np.float32) * 255.0
        self._inv_std = 1.0 / (np.array(manifest.std, dtype=np.float32) * 255.0)
        self._dry_run(path)

    def _check_shape(self, path: Path, shape: list) -> None:
        m = self.manifest
        if len(shape) != 4:
            raise ManifestError(f"{path} input {self._input} has shape {shape}; an image input is 4-d ({m.layout})")
        channels, spatial = (shape[1], shape[2:]) if m.layout == "NCHW" else (shape[3], shape[1:3])
        if isinstance(channels, int) and channels != 3:
            raise ManifestError(
                f"{path} input {self._input} has shape {shape}: {channels} channels where the manifest's layout "
                f"{m.layout} puts the 3 colour channels; check 'layout'"
            )
        for side in spatial:
            if isinstance(side, int) and side != m.input_size:
                raise ManifestError(
                    f"{path} input {self._input} has shape {shape}, which does not take "
                    f"{m.input_size} x {m.input_size} photos (manifest input_size)"
                )
        self._batched = not isinstance(shape[0], int) or shape[0] < 1
        if isinstance(shape[0], int) and shape[0] > 1:
            raise ManifestError(
                f"{path} input {self._input} has a fixed batch of {shape[0]}; export it with 1 or a dynamic batch"
            )

    def _dry_run(self, path: Path) -> None:
        try:
            out = self._run(np.zeros((1, self.input_size, self.input_size, 3), dtype=np.uint8))
        except ManifestError as exc:
            raise ManifestError(f"{path}: {exc}") from None
        except Exception as exc:
            raise ManifestError(
                f"{path} fails on a {self.input_size} x {self.input_size} photo: {str(exc)[:300]}"
            ) from exc
        if out.shape != (1, self.dim):
            raise ManifestError(
                f"{path} output {self._output} gives {out.shape[1]} values per photo after pooling "
                f"'{self.manifest.pooling}', but the manifest says dim {self.dim}"
            )

    def prepare(self, image: Image.Image) -> np.ndarray:
        m = self.manifest
        return prepare_square(image, self.input_size, m.crop, m.interpolation)

    def _tensor(self, batch: np.ndarray) -> np.ndarray:
        x = batch[..., ::-1] if self.manifest.channels == "BGR" else batch
        if not self._uint8:
            x = (x.astype(np.float32) - self._mean) * self._inv_std
            x = x.astype(np.float16) if self._float16 else x
        if self.manifest.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def _pool(self, raw: np.ndarray) -> np.ndarray:
        m, raw = self.manifest, raw.astype(np.float32)
        if m.pooling == "none":
            return raw.reshape(len(raw), -1)
        if m.pooling == "cls":
            if raw.ndim != 3:
                raise ManifestError(f"pooling 'cls' needs an (n, tokens, dim) output, not {raw.shape}")
            return raw[:, 0]
        if raw.ndim == 4:
            cells = raw.reshape(raw.shape[0], raw.shape[1], -1).transpose(0, 2, 1) if m.output_layout == "NCHW" \
                else raw.reshape(raw.shape[0], -1, raw.shape[3])  # fmt: skip
        elif raw.ndim == 3:
            cells = raw
        else:
            raise ManifestError(f"pooling '{m.pooling}' needs a 3-d or 4-d output, not {raw.shape}")
        if m.pooling == "avg":
            return cells.mean(axis=1)
        if m.pooling == "max":
            return cells.max(axis=1)
        cells = np.maximum(cells, 1e-6)  # GeM: the generalised mean of the cells' positive parts
        return np.power(np.mean(cells**m.gem_p, axis=1), 1.0 / m.gem_p)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = self._tensor(batch)
        if self._batched:
            raw = self.session.run([self._output], {self._input: x})[0]
        else:
            raw = np.concatenate(
                [self.session.run([self._output], {self._input: x[i : i + 1]})[0] for i in range(len(x))]
            )
        return self._pool(np.asarray(raw))

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.uint8)
        if batch.ndim != 4 or batch.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected (n, {self.input_size}, {self.input_size}, 3) uint8, got {batch.shape}")
        return l2_normalize(self._run(batch))
