"""Model folders in ``models_dir``: a user's own ONNX models, found by name and described for `lookalike models`.

A folder counts as a model when it holds a manifest (``lookalike.json``), an ONNX file, or a CLIP
``config.json``; anything else in ``models_dir`` (the built-in models' files) is left alone. Reading a
folder checks its manifest and files but runs nothing: loading (and its dry run) happens on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lookalike.models.manifest import (
    CLIP_CONFIG,
    MANIFEST,
    ClipManifest,
    ImageManifest,
    ManifestError,
    read_clip_manifest,
    read_image_manifest,
)


@dataclass(frozen=True)
class ModelFolder:
    name: str
    path: Path
    kind: str  # "onnx" or "clip"
    manifest: ImageManifest | None = None  # the image model, or a CLIP model's visual tower
    clip: ClipManifest | None = None
    problem: str | None = None  # why it cannot be used, when it cannot

    @property
    def has_text(self) -> bool:
        return self.kind == "clip"


def is_model_folder(path: Path) -> bool:
    if not path.is_dir() or path.name.startswith("."):
        return False
    return any((path / f).exists() for f in (MANIFEST, CLIP_CONFIG, "model.onnx", "visual"))


def read_folder(path: Path) -> ModelFolder:
    """The folder's model, or a ModelFolder whose ``problem`` says what is wrong."""
    clip_like = (path / CLIP_CONFIG).exists() or (path / "visual").is_dir()
    kind = "clip" if clip_like else "onnx"
    try:
        if clip_like:
            clip = read_clip_manifest(path)
            manifest = clip.visual
        else:
            if not (path / MANIFEST).exists():
                raise ManifestError(
                    f"{path} holds an ONNX model but no {MANIFEST}: write one (see the README, 'Bring your own model')"
                )
            clip, manifest = None, read_image_manifest(path)
    except ManifestError as exc:
        return ModelFolder(path.name, path, kind, problem=str(exc))
    if manifest.name is not None and manifest.name != path.name:
        problem = f"{path / MANIFEST}: name {manifest.name!r} differs from the folder's name {path.name!r}; rename one"
        return ModelFolder(path.name, path, kind, problem=problem)
    return ModelFolder(path.name, path, kind, manifest, clip)


def scan(models_dir: Path) -> list[ModelFolder]:
    if not models_dir.is_dir():
        return []
    return [read_folder(p) for p in sorted(models_dir.iterdir()) if is_model_folder(p)]


def find(models_dir: Path, name: str) -> ModelFolder | None:
    path = models_dir / name
    if "/" in name or name in ("", ".", "..") or not is_model_folder(path):
        return None
    return read_folder(path)


def load(folder: ModelFolder, threads: int = 0):
    """The folder's embedder: an OnnxImageEmbedder, or a ClipEmbedder for a CLIP-style folder."""
    from lookalike.models.onnx_embedder import OnnxImageEmbedder

    if folder.problem is not None:
        raise ManifestError(folder.problem)
    assert folder.manifest is not None
    visual = OnnxImageEmbedder(folder.name, folder.path, folder.manifest, threads)
    if folder.clip is None:
        return visual
    from lookalike.models.clip import ClipEmbedder, ClipTextEncoder

    return ClipEmbedder(visual, ClipTextEncoder(folder.path, folder.clip, visual.dim, threads))
