"""Would an int8 copy model pay? Quantise sscd_distilled statically in memory (ONNX Runtime QDQ, per-channel
weights, min-max calibration on Towhee train photos) and compare it with the float model: time per pass, how far
its descriptors lie from the float ones, and how copies and outsiders separate (10 edits of every 10th Towhee
train photo against the 1,000; outsiders: 10 edits of the 100 test photos). Not kept (bench/RESULTS.md, "The copy
stage's budget"); this script is the record of why.

    python bench/copyint8.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from PIL import Image
from rich.console import Console
from rich.table import Table

from lookalike.config import Settings
from lookalike.copyedits import EDITS, edited
from lookalike.models import copy_descriptor as cd

ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "towhee_reverse_image_search"


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def quantised(model: cd.CopyDescriptor, source: Path, calibration: list[Path], folder: Path) -> str:
    """The float graph (fp16 initializers folded by ORT's basic optimisation), then its static int8 version."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folder / "fp32.onnx")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    feeds = [{model.input: model.prepare(Image.open(p).convert("RGB"))[None]} for p in calibration]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    out = folder / "int8.onnx"
    quantize_static(str(folder / "fp32.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    return str(out)


def vector(sess: ort.InferenceSession, model: cd.CopyDescriptor, image: Image.Image) -> np.ndarray:
    out = sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: model.prepare(image)[None]})[0][0]
    return out / np.linalg.norm(out)


def main() -> None:
    settings = Settings()
    source = cd.model_path(settings.models_dir)
    model = cd.CopyDescriptor(source, 160, 1)
    library = sorted((ROOT / "train").rglob("*.JPEG"))
    outsiders = sorted((ROOT / "test").rglob("*.JPEG"))
    with tempfile.TemporaryDirectory() as tmp:
        int8 = session(quantised(model, source, library[5::10][:100], Path(tmp)))
    images = [Image.open(p).convert("RGB") for p in library]
    others = [Image.open(p).convert("RGB") for p in outsiders]
    table = Table(title="sscd_distilled at 160 px: float against int8 (one thread)")
    for column in ("model", "ms a pass", "cosine to float (mean / min)", "copy top-1", "copies >= COPY_SURE",
                   "outsiders' nearest, 97th pct"):  # fmt: skip
        table.add_column(column)
    reference = None
    for name, sess in (("float", model.session), ("int8", int8)):
        start = time.process_time()
        stored = np.array([vector(sess, model, im) for im in images])
        ms = 1000 * (time.process_time() - start) / len(images)
        reference = stored if reference is None else reference
        drift = (stored * reference).sum(1)
        top, cosines, nearest = [], [], []
        for edit in EDITS:
            for i in range(0, len(images), 10):
                scores = stored @ vector(sess, model, edited(images[i], edit))
                top.append(int(scores.argmax()) == i)
                cosines.append(scores[i])
            nearest += [float((stored @ vector(sess, model, edited(im, edit))).max()) for im in others]
        table.add_row(name, f"{ms:.2f}", f"{drift.mean():.3f} / {drift.min():.3f}", f"{np.mean(top):.3f}",
                      f"{np.mean(np.array(cosines) >= 0.85):.3f}", f"{np.percentile(nearest, 97):.3f}")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
