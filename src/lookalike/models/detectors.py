"""Object detectors: find the subjects in a photo so each can be indexed and searched on its own.

The decoders (NanoDet's per-level class scores + distance distributions, and the
ultralytics YOLO 84 x N layout) and non-maximum suppression are written here in
numpy: the runtimes only give raw tensors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the photo's pixels
    label: str
    score: float

    def as_dict(self) -> dict:
        return {"box": [round(v, 1) for v in self.box], "label": self.label, "score": round(self.score, 4)}


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: Image.Image) -> list[Detection]:
        """RGB photo -> detections, best first, boxes in the photo's pixels."""
        ...


# --- post-processing ----------------------------------------------------------------------------------
def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with many (x1, y1, x2, y2)."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        best = order[0]
        keep.append(int(best))
        if len(order) == 1:
            break
        rest = order[1:]
        order = rest[iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    offset = (labels.astype(np.float64) * (boxes.max() + 1.0))[:, None]
    keep = nms(boxes + offset, scores, iou_threshold)
    return keep


def nanodet_decode(
    cls_preds: list[np.ndarray],
    dis_preds: list[np.ndarray],
    strides: list[int],
    width: int,
    height: int,
    score_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode NanoDet heads into (boxes, scores, labels) in input-tensor pixels.

    For each level with stride s the grid is (height/s) x (width/s) in row-major order;
    ``cls_preds[l]`` is (cells, classes) of sigmoid scores, ``dis_preds[l]`` is
    (cells, 4 * (reg_max + 1)): for each side (left, top, right, bottom) a distribution over
    0..reg_max bins whose softmax expectation, times s, is the distance from the cell centre
    ((col + 0.5) * s, (row + 0.5) * s) to that side of the box.
    """
    all_boxes, all_scores, all_labels = [], [], []
    for cls, dis, stride in zip(cls_preds, dis_preds, strides, strict=True):
        cols = int(np.ceil(width / stride))
        cells = cls.shape[0]
        labels = cls.argmax(axis=1)
        scores = cls[np.arange(cells), labels]
        hit = np.nonzero(scores >= score_threshold)[0]
        if len(hit) == 0:
            continue
        bins = dis[hit].reshape(len(hit), 4, -1)
        bins = np.exp(bins - bins.max(axis=2, keepdims=True))
        bins /= bins.sum(axis=2, keepdims=True)
        dist = (bins * np.arange(bins.shape[2], dtype=np.float32)).sum(axis=2) * stride  # (n, 4) l, t, r, b
        cx = (hit % cols + 0.5) * stride
        cy = (hit // cols + 0.5) * stride
        all_boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1))
        all_scores.append(scores[hit])
        all_labels.append(labels[hit])
    if not all_boxes:
        return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64)
    return (np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_scores).astype(np.float32),
            np.concatenate(all_labels).astype(np.int64))  # fmt: skip


def yolo_decode(output: np.ndarray, score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode an ultralytics YOLO(v8/11) export: (1, 4 + classes, N) or (4 + classes, N), rows cx, cy, w, h, scores."""
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 3:
        out = out[0]
    if out.ndim != 2 or out.shape[0] < 5:
        raise ValueError(f"expected a (4 + classes, N) YOLO output, got {output.shape}")
    scores_all = out[4:]
    labels = scores_all.argmax(axis=0)
    scores = scores_all[labels, np.arange(out.shape[1])]
    hit = scores >= score_threshold
    cx, cy, w, h = out[0, hit], out[1, hit], out[2, hit], out[3, hit]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes.astype(np.float32), scores[hit].astype(np.float32), labels[hit].astype(np.int64)


@dataclass(frozen=True)
class Letterbox:
    """How a photo was fitted into the model input, to map boxes back."""

    scale: float
    pad_x: int
    pad_y: int
    width: int  # original photo size
    height: int

    def to_photo(self, boxes: np.ndarray) -> np.ndarray:
        out = boxes.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


def letterbox(image: Image.Image, size: int, multiple: int | None, fill: float) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect to fit ``size``, pad (centred) to ``size`` or to a multiple; float32 HWC RGB."""
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(image.resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
    pw = (nw + multiple - 1) // multiple * multiple if multiple else size
    ph = (nh + multiple - 1) // multiple * multiple if multiple else size
    canvas = np.full((ph, pw, 3), fill, dtype=np.float32)
    ox, oy = (pw - nw) // 2, (ph - nh) // 2
    canvas[oy : oy + nh, ox : ox + nw] = resized
    return canvas, Letterbox(scale, ox, oy, w, h)


def _detections(boxes, scores, labels, names, max_detections: int) -> list[Detection]:
    out = []
    for b, s, lab in zip(boxes[:max_detections], scores[:max_detections], labels[:max_detections], strict=True):
        if b[2] - b[0] >= 1 and b[3] - b[1] >= 1:
            name = names[lab] if lab < len(names) else f"class_{lab}"
            out.append(Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), name, float(s)))
    return out


# --- runtimes ----------------------------------------------------------------------------------------------
class NanoDetDetector:
    """NanoDet-m (COCO, 320 px) on the ncnn runtime."""

    name = "nanodet_m"
    strides = (8, 16, 32)
    outputs = (("792", "795"), ("814", "817"), ("836", "839"))
    mean = np.array([103.53, 116.28, 123.675], dtype=np.float32)  # BGR, as the model was trained
    norm = np.array([0.017429, 0.017507, 0.017125], dtype=np.float32)

    def __init__(
        self,
        param: Path,
        weights: Path,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        threads: int = 1,
        size: int = 320,
    ) -> None:
        import ncnn

        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        self.net.opt.use_vulkan_compute = False
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise ValueError(f"ncnn could not load {param.name} / {weights.name}")
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        self.max_detections, self.size = max_detections, size
        self._lock = threading.Lock()

    def raw(self, image: Image.Image) -> tuple[list[np.ndarray], list[np.ndarray], Letterbox, tuple[int, int]]:
        """The model's raw head outputs for a photo (for tests and debugging)."""
        canvas, fit = letterbox(image.convert("RGB"), self.size, 32, 0.0)
        x = np.ascontiguousarray(((canvas[:, :, ::-1] - self.mean) * self.norm).transpose(2, 0, 1))
        mat = self._ncnn.Mat(x)  # wraps x's memory: x must stay alive until extraction ends
        ex = self.net.create_extractor()
        ex.input("input.1", mat)
        cls_preds, dis_preds = [], []
        for cls_name, dis_name in self.outputs:
            cls_preds.append(np.array(ex.extract(cls_name)[1]))
            dis_preds.append(np.array(ex.extract(dis_name)[1]))
        del mat, x
        return cls_preds, dis_preds, fit, (canvas.shape[1], canvas.shape[0])

    def detect(self, image: Image.Image) -> list[Detection]:
        cls_preds, dis_preds, fit, (w, h) = self.raw(image)
        boxes, scores, labels = nanodet_decode(cls_preds, dis_preds, list(self.strides), w, h, self.score_threshold)
        keep = batched_nms(boxes, scores, labels, self.iou_threshold)
        return _detections(fit.to_photo(boxes[keep]), scores[keep], labels[keep], COCO_LABELS, self.max_detections)


class YoloOnnxDetector:
    """A user's own YOLO ONNX export (ultralytics layout, 84 x N for COCO) on onnxruntime."""

    name = "yolo_onnx"

    def __init__(
        self,
        path: Path,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        labels: tuple[str, ...] = COCO_LABELS,
        threads: int = 1,
    ) -> None:
        from lookalike.models.onnx_session import make_session

        self.session = make_session(path, threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else 640
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        self.max_detections, self.labels = max_detections, labels

    def detect(self, image: Image.Image) -> list[Detection]:
        canvas, fit = letterbox(image.convert("RGB"), self.size, None, 114.0)
        x = (canvas / 255.0).transpose(2, 0, 1)[None].astype(np.float32)
        (output,) = self.session.run(None, {self.input_name: x})[:1]
        boxes, scores, labels = yolo_decode(output, self.score_threshold)
        keep = batched_nms(boxes, scores, labels, self.iou_threshold)
        return _detections(fit.to_photo(boxes[keep]), scores[keep], labels[keep], self.labels, self.max_detections)
