"""Issue #24, point 8: a web page the operator visits must not drive the anonymous loopback service, neither
by a cross-site post nor by DNS rebinding. Raw requests, then a real Chromium (Debian's, via Playwright) whose
resolver maps the attacker's name to 127.0.0.1 (no DNS is asked for any name)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import photo
from tests.services import Service, free_port

API = "/api/v1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "rebind.evil.example"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("origins") / "home").start()
    yield svc
    svc.stop()


def upload(service: Service, **headers: str) -> httpx.Response:
    files = {"images": ("a.jpg", photo("goldfish", 0).read_bytes(), "image/jpeg")}
    return httpx.post(f"{service.url}{API}/images", files=files, headers=headers, timeout=60)


def test_writes_from_a_foreign_origin_and_requests_to_a_foreign_host_are_refused(service: Service) -> None:
    assert upload(service, origin="https://evil.example").status_code == 403
    assert upload(service, origin="null").status_code == 403
    r = httpx.post(f"{service.url}{API}/jobs/1/cancel", headers={"origin": "https://evil.example"}, timeout=30)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    # the guard's own answers are not framed or sniffed either (they were outside the app's headers: review)
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    rebound = {"host": f"{EVIL}:{service.port}"}
    for method, path in (("GET", f"{API}/stats"), ("GET", f"{API}/images"), ("GET", "/")):
        assert httpx.request(method, f"{service.url}{path}", headers=rebound, timeout=30).status_code == 403
    assert upload(service, **rebound, origin=f"http://{EVIL}:{service.port}").status_code == 403
    assert httpx.get(f"{service.url}{API}/images", timeout=30).json()["total"] == 0  # nothing got in
    # the service's own page, and clients that are not browsers, are not affected
    assert upload(service, origin=service.url).status_code == 201
    assert httpx.get(f"{service.url}{API}/stats", headers={"host": f"localhost:{service.port}"}).status_code == 200


def test_allowed_hosts_names_the_service(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home", allowed_hosts='["photos.lan"]').start()
    try:
        assert httpx.get(f"{svc.url}{API}/stats", headers={"host": "photos.lan"}, timeout=30).status_code == 200
        assert httpx.get(f"{svc.url}{API}/stats", headers={"host": "other.lan"}, timeout=30).status_code == 403
    finally:
        svc.stop()


UPLOAD_JS = """async ([url, b64]) => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    const form = new FormData();
    form.append("images", new Blob([bytes], {type: "image/jpeg"}), "evil.jpg");
    try {
        const r = await fetch(url, {method: "POST", body: form, mode: url.startsWith("/") ? "same-origin" : "no-cors"});
        return r.status;
    } catch (e) { return String(e); }
}"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make system-deps)")
def test_a_page_in_chromium_can_neither_post_across_sites_nor_rebind(service: Service) -> None:
    from playwright.sync_api import sync_playwright

    jpeg = base64.b64encode(photo("tiger_cat", 0).read_bytes()).decode()
    before = httpx.get(f"{service.url}{API}/images", timeout=30).json()["total"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            f"--host-resolver-rules=MAP {EVIL} 127.0.0.1, MAP * ~NOTFOUND",  # no name leaves the machine
        ])  # fmt: skip
        try:
            page = browser.new_page()
            # an attacker's page on another site posts to the loopback service (a simple request: no preflight)
            page.route(
                "http://evil.example/", lambda route: route.fulfill(body="<p>cats</p>", content_type="text/html")
            )
            page.goto("http://evil.example/")
            page.evaluate(UPLOAD_JS, [f"{service.url}{API}/images", jpeg])
            # the same page after DNS rebinding: its name now resolves to 127.0.0.1, so it is same-origin
            response = page.goto(f"http://{EVIL}:{service.port}/")
            assert response is not None and response.status == 403
            assert page.evaluate(UPLOAD_JS, [f"{API}/images", jpeg]) == 403
        finally:
            browser.close()
    assert httpx.get(f"{service.url}{API}/images", timeout=30).json()["total"] == before  # nothing got in


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make system-deps)")
def test_a_page_elsewhere_cannot_frame_the_service(service: Service) -> None:
    """Web review, finding 2 (clickjacking): a page of another app on the same host framed the service's page,
    whose clicks are same-origin writes that the Origin guard lets through. Chromium must show no such frame."""
    from playwright.sync_api import sync_playwright

    other = f"http://127.0.0.1:{free_port()}/"  # another app on the same host (loopback to loopback)
    framing = "".join(f'<iframe id="f{i}" src="{service.url}{path}"></iframe>'
                      for i, path in enumerate(("/", "/docs", f"{API}/stats")))  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no name leaves the machine; the
            # service's address is not remapped (MAP * alone turned every frame into an error page, headers or not)
            # Chromium's Local Network Access would block the frame for a loopback service whatever it answers; a
            # service behind a reverse proxy under a public name (the README's deployment) does not have that help
            "--disable-features=LocalNetworkAccessChecks",
        ])  # fmt: skip
        try:
            page = browser.new_page()
            page.route(other, lambda route: route.fulfill(body=framing, content_type="text/html"))
            page.goto(other)
            page.wait_for_load_state("load")
            framed = [f for f in page.frames if f != page.main_frame]
            assert len(framed) == 3
            for frame in framed:  # blocked: Chromium's error page in place of the service's
                assert frame.url.startswith("chrome-error://"), frame.url
                shown = frame.evaluate("!!document.getElementById('drop') || !!document.querySelector('.swagger-ui')")
                assert shown is False
                assert '"photos"' not in frame.evaluate("document.documentElement.outerHTML")  # no stats JSON
            assert httpx.get(f"{service.url}/", timeout=30).status_code == 200  # the service itself still answers
        finally:
            browser.close()
