"""Detectors: NMS and both decoders checked by hand; NanoDet-m checked on real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.config import Settings
from lookalike.models.detectors import batched_nms, iou, letterbox, nanodet_decode, nms, yolo_decode
from lookalike.models.registry import load_detector
from tests.conftest import MODELS, photo


def test_iou_by_hand() -> None:
    a = np.array([0, 0, 10, 10], dtype=np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=np.float32)
    assert iou(a, b) == pytest.approx([50 / 150, 0.0, 1.0])


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.6], dtype=np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]  # 0 and 3 overlap box 1 by IoU 0.68 and 0.61
    assert nms(boxes, scores, 0.99).tolist() == [1, 0, 2, 3]
    assert nms(np.empty((0, 4), np.float32), np.empty(0, np.float32), 0.5).tolist() == []


def test_batched_nms_never_suppresses_across_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    keep = batched_nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 2, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]


def one_hot_bins(distance_bins: list[int], reg_max: int = 7, logit: float = 60.0) -> np.ndarray:
    """NanoDet distance logits whose softmax puts all mass on the given bin for each side."""
    out = np.zeros((4, reg_max + 1), dtype=np.float32)
    for side, b in enumerate(distance_bins):
        out[side, b] = logit
    return out.reshape(-1)


def test_nanodet_decode_by_hand() -> None:
    """A 64x32 input: one confident cell at stride 16, row 1, column 2, class 5."""
    width, height, strides = 64, 32, [8, 16, 32]
    cls = [np.zeros(((height // s) * (width // s), 80), dtype=np.float32) for s in strides]
    dis = [np.zeros(((height // s) * (width // s), 32), dtype=np.float32) for s in strides]
    cell = 1 * (width // 16) + 2  # row-major: row 1, column 2 -> index 6
    cls[1][cell, 5] = 0.9
    cls[1][cell, 7] = 0.3
    dis[1][cell] = one_hot_bins([2, 1, 3, 0])  # left 2, top 1, right 3, bottom 0 bins of 16 px
    boxes, scores, labels = nanodet_decode(cls, dis, strides, width, height, 0.5)
    # centre ((2 + .5) * 16, (1 + .5) * 16) = (40, 24); box = (40 - 32, 24 - 16, 40 + 48, 24 + 0)
    assert boxes.tolist() == [pytest.approx([8.0, 8.0, 88.0, 24.0], abs=1e-3)]
    assert scores.tolist() == pytest.approx([0.9]) and labels.tolist() == [5]


def test_nanodet_decode_expectation_of_a_spread_distribution() -> None:
    cls = [np.full((1, 80), 0.0, np.float32)]
    cls[0][0, 0] = 0.8
    logits = np.full(32, -1e9, dtype=np.float32).reshape(4, 8)
    logits[:, 1] = 0.0  # half the mass on bin 1 ...
    logits[:, 3] = 0.0  # ... half on bin 3: expected distance 2 bins
    boxes, _, _ = nanodet_decode(cls, [logits.reshape(1, -1)], [32], 32, 32, 0.5)
    assert boxes.tolist() == [pytest.approx([16 - 64, 16 - 64, 16 + 64, 16 + 64], abs=1e-3)]


def test_yolo_decode_synthetic_output() -> None:
    out = np.zeros((1, 84, 4), dtype=np.float32)
    out[0, :4, 0] = [100, 50, 40, 20]  # cx, cy, w, h
    out[0, 4 + 16, 0] = 0.92  # dog
    out[0, :4, 1] = [300, 300, 100, 200]
    out[0, 4 + 0, 1] = 0.75  # person
    out[0, 4 + 2, 2] = 0.2  # car, below the threshold
    out[0, :4, 3] = [10, 10, 4, 4]
    out[0, 4 + 79, 3] = 0.51  # toothbrush
    boxes, scores, labels = yolo_decode(out, 0.5)
    assert labels.tolist() == [16, 0, 79]
    assert boxes.tolist() == [[80, 40, 120, 60], [250, 200, 350, 400], [8, 8, 12, 12]]
    assert scores.tolist() == pytest.approx([0.92, 0.75, 0.51])
    with pytest.raises(ValueError):
        yolo_decode(np.zeros((3, 10)), 0.5)


def test_letterbox_maps_boxes_back() -> None:
    image = Image.new("RGB", (500, 250))
    canvas, fit = letterbox(image, 320, 32, 0.0)
    assert canvas.shape == (160, 320, 3) and fit.scale == pytest.approx(0.64)
    back = fit.to_photo(np.array([[0, 0, 320, 160]], dtype=np.float32))
    assert back.tolist() == [pytest.approx([0, 0, 500, 250])]


@pytest.fixture(scope="module")
def nanodet():
    return load_detector(Settings(models_dir=MODELS, allow_download=False))


def detect(nanodet, label: str, split: str = "test"):
    return nanodet.detect(Image.open(photo(label, 0, split)).convert("RGB"))


def test_nanodet_finds_the_dog(nanodet) -> None:
    (dog,) = detect(nanodet, "Afghan_hound")
    assert dog.label == "dog" and dog.score > 0.6
    assert dog.box == pytest.approx((0, 21, 472, 373), abs=8)  # checked by eye on the 500x375 photo


def test_nanodet_finds_the_vehicle_and_bystanders(nanodet) -> None:
    dets = detect(nanodet, "ambulance")
    assert dets[0].label == "bus" and dets[0].box == pytest.approx((51, 42, 441, 347), abs=8)
    assert {d.label for d in dets[1:]} == {"person"}


def test_nanodet_two_traffic_lights_and_a_bicycle(nanodet) -> None:
    assert [d.label for d in detect(nanodet, "traffic_light")] == ["traffic light", "traffic light"]
    assert [d.label for d in detect(nanodet, "bicycle-built-for-two")] == ["bicycle"]


def test_nanodet_nothing_on_a_goldfish(nanodet) -> None:
    assert detect(nanodet, "goldfish") == []


def test_detector_offline_without_files_names_them(tmp_path) -> None:
    from lookalike.models.files import ModelFileError

    with pytest.raises(ModelFileError, match="nanodet_m.param.*LOOKALIKE_MODELS_DIR"):
        load_detector(Settings(models_dir=tmp_path, allow_download=False))


def test_yolo_onnx_detector_end_to_end(tmp_path) -> None:
    """A tiny ONNX model with the ultralytics output layout (constant boxes) through onnxruntime."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from lookalike.models.detectors import YoloOnnxDetector

    out = np.zeros((1, 84, 2), dtype=np.float32)
    out[0, :4, 0] = [320, 320, 320, 160]  # centre of the 640 canvas, 320x160
    out[0, 4 + 16, 0] = 0.9  # dog
    out[0, :4, 1] = [10, 10, 4, 4]
    out[0, 4 + 2, 1] = 0.1  # below threshold
    const = helper.make_node("Constant", [], ["boxes"], value=numpy_helper.from_array(out))
    shape = helper.make_node("Shape", ["images"], ["shape"])  # uses the input so the graph is well formed
    graph = helper.make_graph(
        [const, shape], "yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 84, 2]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "yolo.onnx"
    onnx.save(model, str(path))
    detector = YoloOnnxDetector(path, score_threshold=0.5)
    # a 1280x640 photo is scaled by 0.5 into the 640 canvas and padded by 160 px top and bottom
    (dog,) = detector.detect(Image.new("RGB", (1280, 640)))
    assert dog.label == "dog" and dog.score == pytest.approx(0.9)
    # canvas box (160, 240, 480, 400) -> minus padding (0, 160) -> divided by 0.5
    assert dog.box == pytest.approx((320, 160, 960, 480), abs=1e-3)
