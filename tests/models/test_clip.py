"""CLIP-style model folders (immich's layout): the real CLIP tokenizer, and text search end to end through
the library, the CLI and the API, with a small colour model whose right answers the test knows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from lookalike.api.app import create_app
from lookalike.cli import app
from lookalike.config import Settings
from lookalike.library import Library, TextSearchError
from lookalike.models import clip_tokenizer
from lookalike.models.clip import ClipEmbedder
from lookalike.models.files import ModelFileError
from lookalike.models.registry import all_specs, get_spec
from tests.conftest import TOWHEE
from tests.modelfolders import (
    COLOURS,
    build_color_clip,
    chroma_direction,
    models_dir_with_builtins,
    open_clip_tokenizer,
    open_clip_vocab,
)

NAME = "color_clip"
TEXTS = [
    "a photo of a goldfish",
    "Red bicycle at night!",
    "it's 2024: 3.5 kg of café crème",
    "  many   spaces\tand\nnew lines ",
    "naïve résumé Ünïcödé 東京 タワー",
    "don't we'll they're I'd you've",
    "hello, world... (test) #hashtag @user https://example.com/a?b=c",
    "émoji 😀 and ✓ ½",
    "word " * 100,  # longer than the context: truncated, the end token kept
    "",
]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = models_dir_with_builtins(tmp_path_factory.mktemp("models"))
    build_color_clip(root / NAME)
    return root


@pytest.fixture(scope="module")
def test_photos() -> list[Path]:
    return sorted((TOWHEE / "test").rglob("*.JPEG"))


@pytest.fixture(scope="module")
def library(models_dir: Path, test_photos, tmp_path_factory: pytest.TempPathFactory):
    s = Settings(home=tmp_path_factory.mktemp("clip-lib"), models_dir=models_dir, allow_download=False, model=NAME)
    lib = Library(s)
    report = lib.index([str(TOWHEE / "test")])
    assert len(report.added) == len(test_photos) == 100
    yield lib
    lib.close()


def expected_first(lib: Library, colour: str) -> str:
    """The photo whose mean colour points most towards ``colour``, from the pixels, not from the model."""
    direction = np.array(COLOURS[colour]) / np.linalg.norm(COLOURS[colour])
    best, best_score = "", -2.0
    for path in sorted((TOWHEE / "test").rglob("*.JPEG")):
        pixels = lib.embedder.prepare(Image.open(path).convert("RGB"))
        score = float(chroma_direction(pixels) @ direction)
        if score > best_score:
            best, best_score = path.name, score
    return best


def test_the_tokenizer_gives_open_clips_ids() -> None:
    ours = clip_tokenizer.build(open_clip_vocab())
    ours.enable_padding(length=77, pad_id=0, pad_token=clip_tokenizer.PAD)
    ours.enable_truncation(max_length=77)
    theirs = open_clip_tokenizer()
    for text in TEXTS:
        assert ours.encode(text).ids == theirs([text])[0].tolist(), text


def test_the_folder_is_read_as_a_text_model(models_dir: Path) -> None:
    s = Settings(models_dir=models_dir, allow_download=False)
    spec = get_spec(NAME, s)
    assert spec.text and spec.dim == 8 and spec.status(s) == "ready"
    model = spec.load(s)
    assert isinstance(model, ClipEmbedder) and model.input_size == 64
    vectors = model.embed_text(["red", "a photo of something RED", "blue"])
    assert vectors.shape == (3, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.95 and vectors[0] @ vectors[2] < 0


def test_text_search_finds_the_photo_of_that_colour(library: Library) -> None:
    for colour in COLOURS:
        result = library.search_text(f"something {colour}", k=5)
        assert len(result.hits) == 5 and result.query == {"text": f"something {colour}"}
        assert Path(result.hits[0].sources[0]).name == expected_first(library, colour), colour
        scores = [h.score for h in result.hits]
        assert scores == sorted(scores, reverse=True)


def test_text_search_filters_and_refuses_bad_text(library: Library) -> None:
    hits = library.search_text("red", k=3, label="goldfish").hits
    assert hits and all(h.label == "goldfish" for h in hits)
    with pytest.raises(Exception, match="empty"):
        library.search_text("   ")
    with pytest.raises(Exception, match="longer than 1000"):
        library.search_text("red " * 300)


def test_a_photo_only_model_says_which_models_can(settings: Settings, embedder) -> None:
    with Library(settings, embedder=embedder) as lib, pytest.raises(TextSearchError, match="CLIP-style"):
        lib.search_text("red")


def test_cli_text_search(library: Library, monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    monkeypatch.setenv("LOOKALIKE_HOME", str(library.home))
    monkeypatch.setenv("LOOKALIKE_MODELS_DIR", str(models_dir))
    result = CliRunner().invoke(app, ["search", "--text", "a red thing", "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert Path(body["hits"][0]["sources"][0]).name == expected_first(library, "red") and len(body["hits"]) == 3
    both = CliRunner().invoke(app, ["search", "1", "--text", "red"])
    assert both.exit_code == 1 and "one of the two" in both.output
    listing = CliRunner().invoke(app, ["models", "--json"])
    row = {r["name"]: r for r in json.loads(listing.output)}[NAME]
    assert row["text"] and row["status"] == "ready" and row["licence"].startswith("Apache")


def test_cli_text_search_on_a_photo_only_library(photo_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "plain"))
    assert CliRunner().invoke(app, ["index", str(photo_dir)]).exit_code == 0
    result = CliRunner().invoke(app, ["search", "--text", "red"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot be searched by text" in " ".join(result.output.split())


def test_api_text_search(library: Library) -> None:
    with TestClient(create_app(library.settings, library=library)) as client:
        assert client.get("/api/v1/stats").json()["text_search"] is True
        r = client.post("/api/v1/search", json={"text": "blue", "k": 4})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == {"text": "blue", "kind": "text"} and len(body["hits"]) == 4
        assert Path(body["hits"][0]["source"]).name == expected_first(library, "blue")
        for bad, fragment in (
            ({"text": ""}, "at least 1 character"),
            ({"text": "x" * 1001}, "at most 1000 characters"),
            ({"text": "red", "url": "https://example.com/a.jpg"}, "exactly one of"),
            ({"text": "red", "box": [0, 0, 5, 5]}, "compares whole photos"),
            ({"text": 5}, "valid string"),
        ):
            r = client.post("/api/v1/search", json=bad)
            assert r.status_code == 422 and fragment in r.json()["detail"], (bad, r.text)


def test_api_text_search_on_a_photo_only_library(settings: Settings, embedder, photo_dir: Path) -> None:
    with Library(settings, embedder=embedder) as lib:
        lib.index([str(photo_dir)])
        with TestClient(create_app(settings, library=lib)) as client:
            assert client.get("/api/v1/stats").json()["text_search"] is False
            r = client.post("/api/v1/search", json={"text": "red"})
            assert r.status_code == 422 and "CLIP-style" in r.json()["detail"]


CLIP_CASES = {
    "no config.json embed_dim": (lambda f: (f / "config.json").write_text("{}"), "must give embed_dim"),
    "tokenizer missing": (lambda f: (f / "textual" / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    "textual model missing": (lambda f: (f / "textual" / "model.onnx").unlink(), "textual/model.onnx is missing"),
    "unsupported resize": (
        lambda f: (f / "visual" / "preprocess_cfg.json").write_text('{"size": 64, "resize_mode": "longest"}'),
        "resize_mode 'longest' is not supported",
    ),
    "preprocess not json": (lambda f: (f / "visual" / "preprocess_cfg.json").write_text("{"), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(CLIP_CASES))
def test_a_broken_clip_folder_is_a_clear_error(models_dir: Path, tmp_path: Path, case: str) -> None:
    change, message = CLIP_CASES[case]
    root = models_dir_with_builtins(tmp_path / "models")
    shutil.copytree(models_dir / NAME, root / "mine")
    change(root / "mine")
    s = Settings(models_dir=root, allow_download=False)
    (spec,) = [sp for sp in all_specs(s) if sp.name == "mine"]
    assert message in spec.status(s)
    with pytest.raises(ModelFileError, match="mine"):
        get_spec("mine", s)


def test_a_textual_model_that_does_not_match_the_config(models_dir: Path, tmp_path: Path) -> None:
    root = models_dir_with_builtins(tmp_path / "models")
    shutil.copytree(models_dir / NAME, root / "mine")
    (root / "mine" / "config.json").write_text(json.dumps({"embed_dim": 8, "text_cfg": {"context_length": 64}}))
    s = Settings(models_dir=root, allow_download=False)
    with pytest.raises(ModelFileError, match="takes 77 tokens, but config.json says context_length 64"):
        get_spec("mine", s).load(s)
