"""The command line, run as a user would: every command through the real app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike.cli import app
from tests.badfiles import salt
from tests.conftest import photo


@pytest.fixture
def run(tmp_path: Path):
    runner = CliRunner()
    home = tmp_path / "clihome"

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(app, ["--home", str(home), *args])
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return invoke


def test_index_search_stats_remove(run, photo_dir: Path) -> None:
    salt(photo_dir / "junk")
    out = run("index", str(photo_dir)).output
    assert "12 added" in out and "5 rejected" in out and "too many pixels" in out
    report = json.loads(run("index", str(photo_dir), "--json").output)
    assert report["unchanged"] == 12 and len(report["rejected"]) == 5

    hits = json.loads(run("search", str(photo("goldfish", 0, "test")), "-k", "3", "--json").output)["hits"]
    assert len(hits) == 3 and hits[0]["label"] == "goldfish" and hits[0]["sources"]
    table = run("search", str(photo("goldfish", 0, "test")), "-k", "2").output
    assert "goldfish" in table and "score" in table

    by_id = json.loads(run("search", str(hits[0]["id"]), "--json").output)["hits"]
    assert hits[0]["id"] not in [h["id"] for h in by_id]
    filtered = json.loads(run("search", str(photo("goldfish", 0, "test")), "--label", "tiger_cat", "--json").output)
    assert {h["label"] for h in filtered["hits"]} == {"tiger_cat"}

    stats = json.loads(run("stats", "--json").output)
    assert stats["images"] == 12 and stats["model"] == "mobilenet_v2"
    assert "removed 1" in run("remove", str(hits[0]["id"])).output
    assert "no image with id 99999" in run("remove", "99999", code=1).output
    assert json.loads(run("stats", "--json").output)["images"] == 11
    assert "rebuilt flat index with 11 vectors of 1280 dimensions" in run("reindex").output


def test_models_lists_registry(run) -> None:
    rows = {r["name"]: r for r in json.loads(run("models", "--json").output)}
    assert rows["mobilenet_v2"]["status"] == "ready" and rows["mobilenet_v2"]["default"]
    assert rows["mobilenet_v1"]["dim"] == 1024 and "mobilenet_v2_fp32" in rows


def test_errors_are_messages_not_tracebacks(run, tmp_path: Path) -> None:
    assert "no such file" in run("index", str(tmp_path / "nowhere"), code=1).output
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    assert "empty file" in run("search", str(bad), code=1).output
    assert "unknown model" in run("--model", "nope", "stats", code=1).output


def test_missing_model_offline_is_a_clear_error(tmp_path: Path, photo_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOOKALIKE_ALLOW_DOWNLOAD", "0")
    result = CliRunner().invoke(
        app, ["--home", str(tmp_path / "h"), "--models-dir", str(tmp_path / "empty"), "index", str(photo_dir)]
    )
    assert result.exit_code == 1
    assert "mobilenet_v2_1.0_224_quant.tflite" in result.output and "LOOKALIKE_MODELS_DIR" in result.output


def test_eval_json_on_labelled_folder(run, photo_dir: Path) -> None:
    result = json.loads(run("eval", str(photo_dir), "-k", "3", "--json").output)
    assert result["mode"] == "leave-one-out" and result["precision@3"] > 0.5
