"""CLIP-style models: photos and text in one space, from an immich-layout ONNX export.

The visual tower is an ``OnnxImageEmbedder``; the text tower reads ids from the folder's
``tokenizer.json`` with Hugging Face ``tokenizers`` (the library immich uses for the same files),
padded and truncated to the model's context length, as open_clip's tokenizer does.
"""

from __future__ import annotations

import html
import string
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.models.embedder import l2_normalize
from lookalike.models.manifest import ClipManifest, ManifestError
from lookalike.models.onnx_embedder import OnnxImageEmbedder
from lookalike.models.onnx_session import make_session

MAX_TEXT_CHARS = 1000
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, mode: str = "lower") -> str:
    """open_clip's text cleaning (HTML entities, runs of white space, case), without ftfy's mojibake repair."""
    text = " ".join(html.unescape(html.unescape(text)).split())
    if mode == "canonicalize":
        return text.translate(_PUNCTUATION).lower()
    return text.lower() if mode == "lower" else text


class ClipTextEncoder:
    """Text -> unit vectors with ``textual/model.onnx`` and ``textual/tokenizer.json``."""

    def __init__(self, folder: Path, manifest: ClipManifest, dim: int, threads: int = 0) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ManifestError("text search needs the tokenizers package: pip install tokenizers") from exc
        path = folder / "textual" / "tokenizer.json"
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a plain Exception for a file it cannot parse
            raise ManifestError(f"{path} is not a tokenizer file the tokenizers library can read: {exc}") from exc
        self.context_length, self.clean, self.dim = manifest.context_length, manifest.clean, dim
        pad_token = manifest.pad_token
        pad_id = 0 if pad_token is None else self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ManifestError(
                f"{folder / 'textual' / 'tokenizer_config.json'}: pad_token {pad_token!r} is not in {path}"
            )
        self.tokenizer.enable_padding(length=self.context_length, pad_id=pad_id, pad_token=pad_token or "")
        self.tokenizer.enable_truncation(max_length=self.context_length)
        model_path = folder / "textual" / "model.onnx"
        self.session = make_session(model_path, threads)
        inputs = self.session.get_inputs()
        self._ids = inputs[0]
        self._mask = next((i.name for i in inputs[1:] if "mask" in i.name), None)
        if self._ids.type not in ("tensor(int32)", "tensor(int64)"):
            raise ManifestError(
                f"{model_path} input {self._ids.name} is {self._ids.type}; token ids are int32 or int64"
            )
        self._dtype = np.int32 if self._ids.type == "tensor(int32)" else np.int64
        length = self._ids.shape[-1] if len(self._ids.shape) == 2 else None
        if isinstance(length, int) and length != self.context_length:
            raise ManifestError(
                f"{model_path} takes {length} tokens, but config.json says context_length {self.context_length}"
            )
        self._batched = not isinstance(self._ids.shape[0], int)
        try:
            out = self._run(["a photo"])
        except Exception as exc:
            raise ManifestError(f"{model_path} fails on a tokenized text: {str(exc)[:300]}") from exc
        if out.shape != (1, dim):
            raise ManifestError(f"{model_path} gives {out.shape[1:]} per text, but config.json says embed_dim {dim}")

    def token_ids(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch([clean_text(t, self.clean) for t in texts])
        return np.array([e.ids for e in encodings], dtype=self._dtype)

    def _run(self, texts: list[str]) -> np.ndarray:
        ids = self.token_ids(texts)
        feeds = {self._ids.name: ids}
        if self._mask is not None:
            padding = self.tokenizer.padding
            assert padding is not None  # enabled in __init__
            feeds[self._mask] = (ids != padding["pad_id"]).astype(self._dtype)
        if self._batched:
            raw = self.session.run(None, feeds)[0]
        else:
            raw = np.concatenate(
                [self.session.run(None, {k: v[i : i + 1] for k, v in feeds.items()})[0] for i in range(len(ids))]
            )
        return np.asarray(raw, dtype=np.float32).reshape(len(ids), -1)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        for t in texts:
            if not t.strip():
                raise ValueError("the text is empty")
            if len(t) > MAX_TEXT_CHARS:
                raise ValueError(f"the text is longer than {MAX_TEXT_CHARS} characters")
        return l2_normalize(self._run(texts))


class ClipEmbedder:
    """A photo embedder that also embeds text into the same space (``embed_text``)."""

    def __init__(self, visual: OnnxImageEmbedder, text: ClipTextEncoder) -> None:
        self.visual, self.text = visual, text
        self.name, self.dim, self.input_size = visual.name, visual.dim, visual.input_size

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.visual.prepare(image)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self.visual.embed(batch)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.text.embed_text(texts)
