"""The command line, run as a user would: every command through the real app."""

from __future__ import annotations

import json
import shutil
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


def test_a_run_whose_every_file_is_rejected_exits_with_1(run, tmp_path: Path, photo_dir: Path) -> None:
    """`index empty.jpg trunc.jpg` rejected both and exited 0: a script read it as done. Some taken is 0."""
    empty, cut = tmp_path / "empty.jpg", tmp_path / "trunc.jpg"
    empty.write_bytes(b"")
    cut.write_bytes(photo("goldfish", 0).read_bytes()[:300])
    assert "2 rejected" in run("index", str(empty), str(cut), code=1).output
    assert len(json.loads(run("index", str(empty), str(cut), "--json", code=1).output)["rejected"]) == 2
    good = sorted((photo_dir / "goldfish").iterdir())[0]
    assert "1 added" in run("index", str(empty), str(good)).output
    assert "1 unchanged" in run("index", str(empty), str(good)).output


def test_index_search_stats_remove(run, photo_dir: Path) -> None:
    salt(photo_dir / "junk")
    out = run("index", str(photo_dir)).output
    assert "12 added" in out and "5 rejected" in out and "too many pixels" in out
    report = json.loads(run("index", str(photo_dir), "--json").output)
    assert report["unchanged"] == 12 and len(report["rejected"]) == 5

    hits = json.loads(run("search", str(photo("goldfish", 0, "test")), "-k", "3", "--json").output)["hits"]
    assert len(hits) == 3 and hits[0]["label"] == "goldfish" and hits[0]["sources"]
    table = run("search", str(photo("goldfish", 0, "test")), "-k", "2").output
    assert "goldfish" in table and "similarity" in table
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and all("…/goldfish/" in r for r in rows), table  # a row a hit at 80 columns

    by_id = json.loads(run("search", str(hits[0]["id"]), "--json").output)["hits"]
    assert hits[0]["id"] not in [h["id"] for h in by_id]
    filtered = json.loads(run("search", str(photo("goldfish", 0, "test")), "--label", "tiger_cat", "--json").output)
    assert {h["label"] for h in filtered["hits"]} == {"tiger_cat"}

    stats = json.loads(run("stats", "--json").output)
    assert stats["images"] == 12 and stats["model"] == "mobilenet_v2"
    shown = run("stats").output  # for people: no Python dicts, lists, quotes or True/None
    assert "images" in shown and "backend embedded" in shown and stats["collections"][0] in shown
    assert not any(c in shown for c in "{}[]'") and "None" not in shown and "False" not in shown
    assert "removed 1" in run("remove", str(hits[0]["id"])).output
    assert "no image with id 99999" in run("remove", "99999", code=1).output
    assert json.loads(run("stats", "--json").output)["images"] == 11
    assert "rebuilt flat index with 11 vectors of 1280 dimensions" in run("reindex").output


def test_a_removed_photo_stays_removed_until_asked_back(run, photo_dir: Path) -> None:
    """`remove` sticks: the next index of the folder leaves the file out and says so; --include-removed adds it."""
    run("index", str(photo_dir))
    hits = json.loads(run("search", str(photo("goldfish", 0, "test")), "-k", "1", "--json").output)["hits"]
    victim, path = hits[0]["id"], hits[0]["sources"][0]
    assert "leaves their files out" in run("remove", str(victim)).output
    again = json.loads(run("index", str(photo_dir), "--json").output)
    assert again["added"] == 0 and again["excluded"] == [path] and again["total"] == 11
    printed = run("index", str(photo_dir)).output
    assert "left out 1 file(s) removed before" in printed and "--include-removed" in printed
    assert json.loads(run("stats", "--json").output)["images"] == 11
    back = json.loads(run("index", str(photo_dir), "--include-removed", "--json").output)
    assert back["added"] == 1 and back["excluded"] == []
    assert json.loads(run("index", str(photo_dir), "--json").output)["excluded"] == []  # forgotten for good
    assert json.loads(run("stats", "--json").output)["images"] == 12


def test_another_photo_saved_under_a_removed_name_is_indexed(run, photo_dir: Path) -> None:
    """A removal is of the file removed: another photo saved under its name later (a camera's counter reset, an
    export over a bad shot) was left out for good and reported as "removed before" (hostile probe)."""
    run("index", str(photo_dir))
    hits = json.loads(run("search", str(photo("goldfish", 0, "test")), "-k", "1", "--json").output)["hits"]
    victim, path = hits[0]["id"], hits[0]["sources"][0]
    run("remove", str(victim))
    shutil.copy(photo("pizza", 0), path)  # other bytes, another size, under the removed name
    again = json.loads(run("index", str(photo_dir), "--json").output)
    assert again["excluded"] == [] and again["added"] == 1 and again["total"] == 12
    found = json.loads(run("search", str(photo("pizza", 0)), "-k", "1", "--json").output)["hits"][0]
    assert found["similarity"] > 0.999 and found["sources"] == [path]


def test_long_work_without_a_terminal_prints_progress_lines(run, photo_dir: Path, monkeypatch) -> None:
    """In a log or a pipe there is no bar to draw: plain lines on stderr instead (every 10 s; every update here)."""
    from lookalike import cli

    monkeypatch.setattr(cli.LogProgress, "PERIOD", 0.0)
    out = run("index", str(photo_dir)).output
    lines = [line for line in out.splitlines() if line.startswith("indexing: ")]
    assert lines and lines[-1].startswith("indexing: 12/12 (100%), ") and " s" in lines[-1], out
    assert "\x1b[" not in out  # no bar drawn, no cursor movement


def test_iphone_heic_photos_are_indexed_and_searched(run, photo_dir: Path, tmp_path: Path) -> None:
    """A .heic photo in a folder is indexed like any photo, and searching with a HEIC finds its JPEG original."""
    from PIL import Image

    import lookalike.imaging  # noqa: F401 - registers pillow-heif's HEIF plugin with Pillow (to write the test photos)

    original = sorted((photo_dir / "goldfish").iterdir())[0]
    Image.open(original).convert("RGB").save(photo_dir / "goldfish" / "IMG_0001.HEIC", format="HEIF", quality=80)
    report = json.loads(run("index", str(photo_dir), "--json").output)
    assert report["added"] == 13 and report["rejected"] == []
    query = tmp_path / "IMG_0002.heic"
    Image.open(original).convert("RGB").resize((200, 150)).save(query, format="HEIF", quality=60)
    hits = json.loads(run("search", str(query), "-k", "3", "--json").output)["hits"]
    assert {Path(h["sources"][0]).name for h in hits if h["copy"]} == {original.name, "IMG_0001.HEIC"}


def test_camera_raw_photos_are_indexed_and_searched(run, photo_dir: Path, tmp_path: Path) -> None:
    """A camera's DNG in a folder is indexed like any photo, and searching with a DNG finds its JPEG original."""
    from PIL import Image

    from tests import rawfiles

    original = sorted((photo_dir / "goldfish").iterdir())[0]
    (photo_dir / "goldfish" / "DSC_0001.DNG").write_bytes(rawfiles.dng(Image.open(original), preview=True))
    report = json.loads(run("index", str(photo_dir), "--json").output)
    assert report["added"] == 13 and report["rejected"] == []
    query = tmp_path / "DSC_0002.dng"
    query.write_bytes(rawfiles.dng(Image.open(original).resize((200, 150))))
    hits = json.loads(run("search", str(query), "-k", "3", "--json").output)["hits"]
    assert {Path(h["sources"][0]).name for h in hits if h["copy"]} == {original.name, "DSC_0001.DNG"}


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


@pytest.mark.parametrize("command", [["stats"], ["search", "QUERY"], ["index", "FOLDER"], ["duplicates"], ["doctor"],
                                     ["copies"], ["reindex"]])  # fmt: skip
def test_an_unreachable_engine_is_one_line_in_every_command(command: list[str], tmp_path: Path, photo_dir: Path,
                                                            monkeypatch) -> None:  # fmt: skip
    """An engine that refuses connections (a closed loopback port) is a message and exit status 1, never a traceback,
    whichever step of the command first needs it."""
    monkeypatch.setenv("LOOKALIKE_VECTOR_BACKEND", "tcvectordb+http://127.0.0.1:9")
    monkeypatch.setenv("LOOKALIKE_TCVECTORDB_KEY", "x")
    args = [{"QUERY": str(photo("goldfish", 0, "test")), "FOLDER": str(photo_dir)}.get(a, a) for a in command]
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "h"), *args])
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Tencent VectorDB at http://127.0.0.1:9" in result.output and "unreachable" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception


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


def test_rough_edges_of_a_first_hour(run, photo_dir: Path, tmp_path: Path) -> None:
    """What a new user ran into: each gives a message that says what to do, never a traceback."""
    query = str(photo("goldfish", 0, "test"))
    assert "the library is empty" in run("search", query).output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "nothing to index" in run("index", str(empty)).output
    assert "no such file" in run("search", str(tmp_path / "mistyped.jpg"), code=1).output
    run("index", str(photo_dir))
    out = run("search", query, "--label", "no-such-label", code=1).output
    assert "no photo has the label 'no-such-label'" in out and "goldfish" in out
    victim = json.loads(run("search", query, "-k", "1", "--json").output)["hits"][0]["id"]
    assert "removed 1" in run("remove", str(victim)).output
    twice = run("remove", str(victim), code=1).output
    assert "removed 0" not in twice and f"no image with id {victim}" in twice
    assert "unknown image type .xyz" in run("detect", query, "--draw", str(tmp_path / "out.xyz"), code=1).output
    assert "does not exist" in run("detect", query, "--draw", str(tmp_path / "no" / "out.jpg"), code=1).output
    assert "Traceback" not in twice


def test_detect_runs_without_the_embedding_model(tmp_path: Path) -> None:
    """Only the detector's files are needed: a models folder without the embedding model still detects."""
    import shutil

    from tests.conftest import MODELS

    models = tmp_path / "models"
    models.mkdir()
    for name in ("nanodet_m.param", "nanodet_m.bin"):
        shutil.copy(MODELS / name, models / name)
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "h"), "--models-dir", str(models), "detect",
                                      str(photo("Afghan_hound", 0, "test")), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "dog" in [o["label"] for o in json.loads(result.output)["objects"]]


def test_help_is_quiet_and_clean() -> None:
    """No runtime chatter on stderr, no "<bool>" after flags."""
    import subprocess
    import sys

    from tests.services import lookalike_env

    run = subprocess.run([sys.executable, "-m", "lookalike", "search", "--help"], capture_output=True, text=True,
                         env=lookalike_env(Path("/tmp/unused")))  # fmt: skip
    assert run.returncode == 0 and "<bool>" not in run.stdout and "--json" in run.stdout and run.stderr == ""
    search = subprocess.run([sys.executable, "-m", "lookalike", "search", str(photo("goldfish", 0))],
                            capture_output=True, text=True, env=lookalike_env(Path("/tmp/unused-home")))  # fmt: skip
    assert "XNNPACK" not in search.stderr and "INFO" not in search.stderr


def test_copies_gives_photos_indexed_without_the_copy_stage_their_descriptor(tmp_path: Path, photo_dir: Path,
                                                                             monkeypatch) -> None:  # fmt: skip
    """A library indexed with the copy stage off (as before copy descriptors): `lookalike copies` fills them in with
    progress, a second run has nothing to do, and an edited copy is then found through the copy collection."""
    runner = CliRunner()
    home = ["--home", str(tmp_path / "h")]
    monkeypatch.setenv("LOOKALIKE_COPY_CANDIDATES", "0")
    assert runner.invoke(app, [*home, "index", str(photo_dir)]).exit_code == 0
    assert json.loads(runner.invoke(app, [*home, "stats", "--json"]).output)["copy_vectors"] == 0
    off = runner.invoke(app, [*home, "copies"])
    assert off.exit_code == 1 and "LOOKALIKE_COPY_CANDIDATES=0" in off.output
    monkeypatch.delenv("LOOKALIKE_COPY_CANDIDATES")
    assert "12 (`lookalike copies` describes them)" in runner.invoke(app, [*home, "stats"]).output
    done = runner.invoke(app, [*home, "copies"])
    assert done.exit_code == 0 and "copy descriptors stored for 12 photos (0 from their thumbnail)" in done.output
    assert "stored for 0 photos" in runner.invoke(app, [*home, "copies"]).output
    stats = json.loads(runner.invoke(app, [*home, "stats", "--json"]).output)
    assert stats["copy_vectors"] == stats["part_vectors"] == 12 and stats["copies_to_describe"] == 0
    from PIL import Image, ImageOps

    query = tmp_path / "mirrored.jpg"
    ImageOps.mirror(Image.open(photo("goldfish", 0)).convert("RGB")).save(query, quality=90)
    hits = json.loads(runner.invoke(app, [*home, "search", str(query), "--copies", "--json"]).output)["hits"]
    assert len(hits) == 1 and hits[0]["copy"] and hits[0]["label"] == "goldfish"


def test_a_product_csvs_records_in_the_table_and_set_by_hand(run, tmp_path: Path) -> None:
    from tests.shop import product_rows, write_csv

    rows = product_rows(skus=2, per_sku=3)
    csv_path = write_csv(tmp_path / "shop.csv", rows)
    run("index", str(csv_path), "--field", "price:str", "--field", "tags:list")
    hits = json.loads(run("search", rows[0]["path"], "-k", "1", "--json").output)["hits"]
    assert hits[0]["fields"]["price"] == rows[0]["price"] and hits[0]["fields"]["tags"] == ["dairy", "shelf0"]
    table = run("search", rows[0]["path"], "-k", "2", "--show", "brand,price").output
    assert "brand" in table and rows[0]["brand"] in table and rows[0]["price"] in table
    image_id = str(hits[0]["id"])
    shown = json.loads(run("set", image_id, "price=3.5", "title=Sour milk", "tags=", "--json").output)
    assert shown["fields"]["price"] == 3.5 and shown["fields"]["title"] == "Sour milk" and "tags" not in shown["fields"]
    assert "field name" in run("set", image_id, "bad key=1", code=1).output
    assert "no image with id" in run("set", "999999", "a=1", code=1).output
    assert "NAME:TYPE" in run("index", str(csv_path), "--field", "price:money", code=1).output


def test_search_where_filters_on_fields(run, tmp_path: Path) -> None:
    from tests.shop import product_rows, write_csv

    rows = product_rows(skus=3, per_sku=4)
    run("index", str(write_csv(tmp_path / "shop.csv", rows)))
    title = rows[-1]["title"]  # another product than the query's
    hits = json.loads(run("search", rows[0]["path"], "-k", "12", "--where", f'title = "{title}"', "--json").output)
    assert len(hits["hits"]) == 4 and {h["fields"]["title"] for h in hits["hits"]} == {title}
    assert "cannot read the filter" in run("search", rows[0]["path"], "--where", "brand =", code=1).output
    summary = {f["name"]: f for f in json.loads(run("fields", "--json").output)}
    assert summary["title"]["values"] == {r["title"]: 4 for r in rows[::4]}
    assert summary["price"]["photos"] == {"num": 12}
    assert "title" in run("fields").output


def test_index_prune_of_an_emptied_folder_says_it_kept_the_photos(photo_dir: Path, tmp_path, monkeypatch) -> None:
    """The text report stopped at "nothing to index" and never said what --prune did to an emptied folder."""
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path / "lib"))
    assert CliRunner().invoke(app, ["index", str(photo_dir)]).exit_code == 0
    photo_dir.rename(tmp_path / "away")
    photo_dir.mkdir()
    result = CliRunner().invoke(app, ["index", str(photo_dir), "--prune"], terminal_width=400)
    assert result.exit_code == 1, result.output  # nothing taken, the folder reported: a cron job must notice
    assert "nothing pruned (an unmounted disk" in result.output
    assert "12 indexed file(s) no longer exist; kept: their folder lists nothing" in result.output
    assert json.loads(CliRunner().invoke(app, ["stats", "--json"]).output)["images"] == 12
    emptied = CliRunner().invoke(app, ["index", str(photo_dir), "--prune-empty"], terminal_width=400)  # on purpose
    assert emptied.exit_code == 0 and "(12 pruned)" in emptied.output, emptied.output
    assert "12 indexed file(s) no longer exist and were pruned:" in emptied.output  # and which, by name
    assert str(tmp_path / "photos" / "goldfish") in emptied.output or str(photo_dir / "goldfish") in emptied.output
    assert json.loads(CliRunner().invoke(app, ["stats", "--json"]).output)["images"] == 0


def test_a_full_disk_is_one_line_not_a_traceback(tmp_path: Path, photo_dir: Path, monkeypatch) -> None:
    """A library on a disk that fills up mid-run: every command ended in a traceback (OSError ENOSPC, SQLite's
    "database or disk is full"), the index run after its batches were committed (hostile probe). Now one line, exit
    1; run again once there is room, it resumes."""
    import subprocess

    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        monkeypatch.setenv("LOOKALIKE_HOME", str(disk / "lib"))
        result = CliRunner().invoke(app, ["index", str(photo_dir)], terminal_width=400)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "make room" in result.output and "Traceback" not in result.output
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = CliRunner().invoke(app, ["index", str(photo_dir), "--json"], terminal_width=400)
        assert again.exit_code == 0, again.output
        assert json.loads(CliRunner().invoke(app, ["stats", "--json"]).output)["images"] == 12
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_full_or_read_only_names_a_full_disk_and_a_full_database() -> None:
    """The errors a full disk gives, made for real: a write to /dev/full, SQLite past its page limit."""
    import errno
    import sqlite3

    import sqlalchemy as sa

    from lookalike.cli.app import full_or_read_only

    with pytest.raises(OSError) as disk, open("/dev/full", "wb") as full:
        full.write(b"x")
        full.flush()
    assert disk.value.errno == errno.ENOSPC and "make room" in (full_or_read_only(disk.value) or "")
    engine = sa.create_engine("sqlite://")
    with pytest.raises(sa.exc.OperationalError) as db, engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA max_page_count = 2")
        conn.exec_driver_sql("CREATE TABLE t(x)")
        conn.exec_driver_sql("INSERT INTO t VALUES (?)", (b"\0" * 100_000,))
    assert isinstance(db.value.orig, sqlite3.OperationalError)
    assert "(the catalog database)" in (full_or_read_only(db.value) or "")
    assert full_or_read_only(ValueError("a bug")) is None and full_or_read_only(FileNotFoundError(2, "x")) is None
