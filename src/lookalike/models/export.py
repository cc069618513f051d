"""Export a timm or OpenCLIP model into a Lookalike model folder (run once, on a machine with internet).

Lookalike runs models from ONNX files and ships no weights but the MobileNets; this writes the folder
`lookalike models` lists and `--model NAME` uses: for timm, ``model.onnx`` + ``lookalike.json`` (the
model's own preprocessing from its pretrained config); for OpenCLIP, immich's layout (visual and
textual ONNX, ``config.json``, ``preprocess_cfg.json``, ``tokenizer.json`` built from the wheel's BPE).
Needs ``pip install torch timm`` or ``pip install torch open_clip_torch`` (and ``onnx``), not Lookalike's
runtime. ``--random-weights`` exports the architecture untrained (no download): for timing it offline.

    python -m lookalike.models.export timm vit_base_patch16_224.augreg2_in21k_ft_in1k --name vit_b16
    python -m lookalike.models.export timm resnet50.a1_in1k --name resnet50
    python -m lookalike.models.export open_clip ViT-B-32 --pretrained openai --name clip_vit_b32
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import sys
from pathlib import Path

from lookalike.config import Settings
from lookalike.models import clip_tokenizer

OPSET = 17


def _export(module, example, path: Path, input_name: str) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module, (example,), str(path), input_names=[input_name], output_names=["embedding"],
            dynamic_axes={input_name: {0: "n"}, "embedding": {0: "n"}}, opset_version=OPSET, dynamo=False,
        )  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_timm(arch: str, folder: Path, random_weights: bool = False) -> dict:
    import timm
    import torch

    model = timm.create_model(arch, pretrained=not random_weights, num_classes=0).eval()  # pooled features
    cfg = timm.data.resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    resize_size = math.floor(size / cfg.get("crop_pct", 1.0))  # what timm's eval transform resizes to
    _export(model, torch.zeros(1, 3, size, size), folder / "model.onnx", "input")
    pretrained = getattr(model, "pretrained_cfg", {}) or {}
    manifest = {
        "description": f"timm {arch}" + (" (random weights: for timing only)" if random_weights else ""),
        "sha256": _sha256(folder / "model.onnx"),
        "dim": int(model.num_features),
        "input_size": size,
        "resize": "shortest" if cfg.get("crop_mode", "center") == "center" else "squash",
        "resize_size": max(size, resize_size),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "layout": "NCHW",
        "pooling": "none",
        "licence": pretrained.get("license", "see the source"),
        "source": f"timm {timm.__version__}: {arch} (huggingface.co/{pretrained.get('hf_hub_id', 'timm/' + arch)})",
    }
    (folder / "lookalike.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_open_clip(arch: str, pretrained: str | None, folder: Path, random_weights: bool = False) -> dict:
    import open_clip
    import torch

    tokenizer = open_clip.get_tokenizer(arch)
    if type(tokenizer).__name__ != "SimpleTokenizer":
        raise SystemExit(
            f"{arch} uses a Hugging Face tokenizer ({type(tokenizer).__name__}), not CLIP's BPE: save its "
            "tokenizer.json into textual/ yourself (tokenizer.save_pretrained), then check the folder with "
            "`lookalike models --check`"
        )
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=None if random_weights else pretrained)
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused attention op has no ONNX export
    config = open_clip.get_model_config(arch)
    context = int(config.get("text_cfg", {}).get("context_length", 77))
    pre = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = pre.get("size", model.visual.image_size)
    size = int(size[0] if isinstance(size, list | tuple) else size)

    class Tower(torch.nn.Module):  # the CLIP model as a submodule, so its weights export as initialisers
        def __init__(self, clip, text: bool) -> None:
            super().__init__()
            self.clip, self.text = clip, text

        def forward(self, x):  # immich's textual exports take int32 ids
            return self.clip.encode_text(x.long()) if self.text else self.clip.encode_image(x)

    _export(Tower(model, False), torch.zeros(1, 3, size, size), folder / "visual" / "model.onnx", "image")
    ids = torch.zeros(1, context, dtype=torch.int32)
    _export(Tower(model, True), ids, folder / "textual" / "model.onnx", "text")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    preprocess = {
        "size": [size, size],
        "mode": pre.get("mode", "RGB"),
        "mean": list(pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        "std": list(pre.get("std", open_clip.OPENAI_DATASET_STD)),
        "interpolation": pre.get("interpolation", "bicubic"),
        "resize_mode": pre.get("resize_mode", "shortest"),
        "fill_color": pre.get("fill_color", 0),
    }
    (folder / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess, indent=2) + "\n")
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations  # a package: imported above
    vocab = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    clip_tokenizer.write(vocab, folder / "textual")
    extras = {
        "description": f"OpenCLIP {arch} {pretrained or ''}".strip()
        + (" (random weights: for timing only)" if random_weights else ""),
        "licence": "see the source (OpenAI CLIP weights: MIT; LAION weights: MIT)",
        "source": f"open_clip {open_clip.__version__}: {arch}, pretrained={pretrained}",
    }
    (folder / "lookalike.json").write_text(json.dumps(extras, indent=2) + "\n")
    return {"dim": int(config["embed_dim"]), "input_size": size, **extras}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", choices=("timm", "open_clip"))
    parser.add_argument("arch", help="timm model name, or OpenCLIP architecture (e.g. ViT-B-32)")
    parser.add_argument("--pretrained", help="OpenCLIP weights tag (e.g. openai, laion2b_s34b_b79k)")
    parser.add_argument("--name", help="the model folder's name, used as --model NAME (default: the arch)")
    parser.add_argument("--models-dir", type=Path, help="default: LOOKALIKE_MODELS_DIR or the library's models/")
    parser.add_argument("--random-weights", action="store_true", help="untrained architecture: timing only")
    args = parser.parse_args(argv)
    models_dir = args.models_dir or Settings().resolved_models_dir
    name = args.name or args.arch.replace("/", "_")
    folder = models_dir / name
    if folder.exists() and any(folder.iterdir()):
        sys.exit(f"{folder} already exists: remove it or choose another --name")
    if args.library == "timm":
        info = export_timm(args.arch, folder, args.random_weights)
    else:
        info = export_open_clip(args.arch, args.pretrained, folder, args.random_weights)
    print(f"wrote {folder} ({info['dim']}-d, {info['input_size']} px); check it: lookalike models --check; "
          f"use it: lookalike index --model {name} PHOTOS (a new library: --home DIR)")  # fmt: skip


if __name__ == "__main__":
    main()
