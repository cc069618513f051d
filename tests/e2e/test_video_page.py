"""The page with a video's frame among the results, in a real headless Chromium against a live server: the card names
the video and the moment, and the viewer plays the video from that second (the player's Range requests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from lookalike.library import Library
from tests.conftest import photo
from tests.e2e.test_page import ARTIFACTS, CHROMIUM, serve
from tests.search.test_video_search import SHOTS, screenshot
from tests.videos import make_video

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make system-deps)")


@pytest.fixture(params=["folder", "upload"])
def video_page(settings, embedder, tmp_path: Path, request: pytest.FixtureRequest):
    """The page of a library holding the video: indexed from a folder, or uploaded (POST /api/v1/images) and played
    from the image store."""
    from playwright.sync_api import sync_playwright

    folder = tmp_path / "media"
    folder.mkdir()
    clip = folder / "clip.webm"  # VP8: a codec every Chromium build plays
    make_video(clip, SHOTS, size=(480, 270), codec="libvpx")
    shutil.copy(photo("goldfish", 5), folder / "goldfish.jpg")
    lib = Library(settings, embedder=embedder)
    if request.param == "folder":
        assert lib.index([str(folder)]).videos == 1
    servers = serve(settings, lib)
    base = next(servers)
    if request.param == "upload":
        up = httpx.post(f"{base}/api/v1/images", files={"images": ("clip.webm", clip.read_bytes(), "video/webm")},
                        timeout=120)  # fmt: skip
        assert up.status_code == 201 and len(up.json()["added"][0]["frames"]) >= 5, up.text
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(base)
        yield pg, clip
        browser.close()
    next(servers, None)  # stops the server
    assert not errors, errors


def test_a_frame_hit_names_the_moment_and_plays_from_it(video_page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page, clip = video_page
    query = tmp_path / "shot.jpg"
    query.write_bytes(screenshot(clip, 12.4))  # the pan's start (12 s), its first kept frame
    expect(page.locator("#stats")).to_contain_text("indexed")
    page.set_input_files("#file-input", str(query))
    card = page.locator(".hit").first
    expect(card.locator(".source")).to_have_text("clip.webm @ 00:12.0")
    card.click()
    video = page.locator("#viewer-video")
    expect(video).to_be_visible()
    expect(page.locator("#viewer-img")).to_be_hidden()
    src = video.get_attribute("src") or ""
    assert "/video#t=" in src
    t = float(src.rsplit("#t=", 1)[1])
    page.wait_for_function("() => document.querySelector('#viewer-video').readyState >= 1", timeout=15_000)
    assert abs(page.evaluate("document.querySelector('#viewer-video').currentTime") - t) < 0.5
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "40-video-frame.png"), full_page=True)
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()
    assert page.evaluate("document.querySelector('#viewer-video').paused")
