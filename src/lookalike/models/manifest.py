"""What a model folder must say about its model: the manifest formats, read and checked.

Two layouts are understood, both in a folder of ``models_dir`` whose name is the model's name:

* an image model: ``model.onnx`` and ``lookalike.json`` (``ImageManifest``: input size, resize and
  crop rule, mean/std, layout, output and pooling, licence and source);
* a CLIP-style model in the layout immich's machine-learning service uses, so its ready exports work
  as they are: ``config.json`` (``embed_dim``, ``text_cfg.context_length``), ``visual/model.onnx``,
  ``visual/preprocess_cfg.json``, ``textual/model.onnx``, ``textual/tokenizer.json`` and
  ``textual/tokenizer_config.json`` (``pad_token``); an optional ``lookalike.json`` there may add
  ``licence``, ``source`` and ``description``.

Every mistake is a ``ManifestError`` naming the file and the field, raised before any model is run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lookalike.models.files import ModelFileError

MANIFEST = "lookalike.json"
CLIP_CONFIG = "config.json"


class ManifestError(ModelFileError):
    """A model folder whose manifest is missing, unreadable or wrong, or whose files are missing."""


Triple = tuple[float, float, float]


class ImageManifest(BaseModel):
    """``lookalike.json``: how to feed photos to ``model.onnx`` and read a vector out of it.

    A float input gets ``(pixel / 255 - mean) / std``; a uint8 input gets the pixels as they are.
    Vectors are compared by cosine, so they are always L2-normalised (``normalize`` must say "l2").
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="the model's name; the folder's name when left out")
    description: str = ""
    file: str = Field(default="model.onnx", description="the ONNX file, relative to the folder")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="when given, the file is checked against it before use"
    )
    dim: Annotated[int, Field(gt=0, le=65536)]
    input_size: Annotated[int, Field(ge=16, le=2048)]
    resize: Literal["shortest", "squash", "center_square"] = Field(
        default="shortest",
        description="shortest: shorter side to resize_size, then the centre input_size square (timm, "
        "open_clip); squash: the whole photo to input_size x input_size; center_square: the photo's "
        "full centre square to input_size (Lookalike's MobileNets)",
    )
    resize_size: Annotated[int, Field(ge=16, le=4096)] | None = Field(
        default=None, description="shorter side before the centre crop (shortest only; default input_size)"
    )
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] = "bilinear"
    mean: Triple = (0.0, 0.0, 0.0)
    std: Triple = (1.0, 1.0, 1.0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channels: Literal["RGB", "BGR"] = "RGB"
    input: str | None = Field(default=None, description="input tensor name (default: the model's only input)")
    output: str | None = Field(default=None, description="output tensor name (default: the first output)")
    pooling: Literal["none", "avg", "max", "gem", "cls"] = Field(
        default="none",
        description="none: the output is (n, dim); avg/max/gem: over the spatial cells of an (n, C, H, W) "
        "or (n, H, W, C) map or the tokens of (n, T, dim); cls: token 0 of (n, T, dim)",
    )
    output_layout: Literal["NCHW", "NHWC"] = Field(default="NCHW", description="axis order of a 4-d output")
    gem_p: Annotated[float, Field(gt=0, le=32)] = 3.0
    normalize: Literal["l2"] = "l2"
    licence: Annotated[str, Field(min_length=1)]
    source: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> ImageManifest:
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if self.resize_size is not None and self.resize != "shortest":
            raise ValueError("resize_size is only used with resize 'shortest'")
        if self.resize_size is not None and self.resize_size < self.input_size:
            raise ValueError(f"resize_size {self.resize_size} is smaller than input_size {self.input_size}")
        if Path(self.file).is_absolute() or ".." in Path(self.file).parts:
            raise ValueError("file must be a path inside the model folder")
        return self

    @property
    def crop(self) -> float | None:
        """The centre square's side as a fraction of the shorter side (None: squash)."""
        if self.resize == "squash":
            return None
        if self.resize == "center_square":
            return 1.0
        return self.input_size / (self.resize_size or self.input_size)


class ClipExtras(BaseModel):
    """The optional ``lookalike.json`` beside an immich-layout CLIP export."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    description: str = ""
    licence: str = "unknown (see the source)"
    source: str = "unknown"


class ClipManifest(BaseModel):
    """A CLIP-style folder: the visual tower as an ``ImageManifest``, and how to tokenize for the text tower."""

    visual: ImageManifest
    context_length: int
    clean: Literal["lower", "canonicalize", "whitespace"]
    pad_token: str | None


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} cannot be read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def _explain(path: Path, exc: ValidationError) -> ManifestError:
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(the whole file)"
        problems.append(f"{where}: {err['msg']}")
    return ManifestError(f"{path} is not a valid manifest: " + "; ".join(problems))


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ManifestError(f"{path} is missing")
    return path


def read_image_manifest(folder: Path) -> ImageManifest:
    path = folder / MANIFEST
    data = read_json(path)
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a JSON object")
    try:
        manifest = ImageManifest.model_validate(data)
    except ValidationError as exc:
        raise _explain(path, exc) from None
    _require(folder / manifest.file)
    return manifest


def read_clip_manifest(folder: Path) -> ClipManifest:
    """Read an immich-layout CLIP folder into one manifest; every file it needs must be there."""
    config_path = folder / CLIP_CONFIG
    config = read_json(config_path)
    pre_path = folder / "visual" / "preprocess_cfg.json"
    pre = read_json(pre_path)
    for f in ("visual/model.onnx", "textual/model.onnx", "textual/tokenizer.json"):
        _require(folder / f)
    if not isinstance(config, dict) or not isinstance(config.get("embed_dim"), int) or config["embed_dim"] <= 0:
        raise ManifestError(f"{config_path} must give embed_dim, a positive integer")
    text_cfg = config.get("text_cfg") or {}
    if not isinstance(text_cfg, dict):
        raise ManifestError(f"{config_path}: text_cfg must be an object")
    if not isinstance(pre, dict):
        raise ManifestError(f"{pre_path} must hold a JSON object")
    size = pre.get("size")
    size = size[0] if isinstance(size, list) and size and size == [size[0]] * len(size) else size
    if not isinstance(size, int):
        raise ManifestError(f"{pre_path}: size must be an integer or a list of equal integers, not {pre.get('size')!r}")
    mode = pre.get("resize_mode", "shortest")  # open_clip's default for configs older than the key
    if mode not in ("shortest", "squash"):
        raise ManifestError(f"{pre_path}: resize_mode {mode!r} is not supported (shortest, squash)")
    extras_path = folder / MANIFEST
    extras = ClipExtras()
    if extras_path.exists():
        try:
            extras = ClipExtras.model_validate(read_json(extras_path))
        except ValidationError as exc:
            raise _explain(extras_path, exc) from None
    try:
        visual = ImageManifest(
            name=extras.name, description=extras.description, file="visual/model.onnx",
            dim=config["embed_dim"], input_size=size, resize=mode,
            interpolation=pre.get("interpolation", "bicubic"),
            mean=tuple(pre.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(pre.get("std", (0.26862954, 0.26130258, 0.27577711))),
            licence=extras.licence, source=extras.source,
        )  # fmt: skip
    except ValidationError as exc:
        raise _explain(pre_path, exc) from None
    tok_cfg_path = folder / "textual" / "tokenizer_config.json"
    pad_token = None
    if tok_cfg_path.exists():
        tok_cfg = read_json(tok_cfg_path)
        pad_token = tok_cfg.get("pad_token") if isinstance(tok_cfg, dict) else None
        if isinstance(pad_token, dict):  # transformers writes AddedToken objects sometimes
            pad_token = pad_token.get("content")
    clean = (text_cfg.get("tokenizer_kwargs") or {}).get("clean", "lower")
    context_length = text_cfg.get("context_length", 77)
    if not isinstance(context_length, int) or not 2 <= context_length <= 4096:
        raise ManifestError(f"{config_path}: text_cfg.context_length must be an integer from 2 to 4096")
    if clean not in ("lower", "canonicalize", "whitespace"):
        raise ManifestError(f"{config_path}: text_cfg.tokenizer_kwargs.clean {clean!r} is not supported")
    return ClipManifest(visual=visual, context_length=context_length, clean=clean, pad_token=pad_token)
