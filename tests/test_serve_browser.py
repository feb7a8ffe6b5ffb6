"""The explorer page in a real browser: `facevae serve` in its own process, driven in headless Chromium.

Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) is driven by Playwright
through ``executable_path``, so no browser is downloaded. Set FACEVAE_CHROMIUM to use another binary and
FACEVAE_TEST_ARTIFACTS to a folder to keep the screenshot.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="facevae serve needs the serve extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the dev extra)")

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
STARTUP_SECONDS = 120
SETTLED = "el => el.dataset.pending === '0' && Number(el.dataset.renders) > Number(el.dataset.seen || 0)"


def chromium_binary() -> str | None:
    given = os.environ.get("FACEVAE_CHROMIUM")
    if given:
        return given
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or next((c for c in CHROMIUM_CANDIDATES if Path(c).is_file()), None)


@pytest.fixture(scope="module")
def served(tmp_path_factory, cvae_run, vae_run):
    """`facevae serve` over a folder of two runs, on a free port: its address."""
    root = tmp_path_factory.mktemp("browse") / "runs"
    shutil.copytree(cvae_run, root / "cvae")
    shutil.copytree(vae_run, root / "vae")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen([sys.executable, "-m", "facevae", "serve", str(root), "--port", "0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():  # the address is the line it prints once the first run is open
        for line in process.stdout:
            lines.append(line)
            if line.startswith("facevae explorer: http://"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(STARTUP_SECONDS) and process.poll() is None, "".join(lines)
        address = re.search(r"http://\S+", lines[-1]).group(0)
        assert address.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        yield address
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium; or set FACEVAE_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def pixels(page) -> np.ndarray:
    """The decoded face as shown, read back from the page."""
    data = page.evaluate("""() => {
        const img = document.getElementById('current'), c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data);
    }""")
    return np.array(data, np.uint8)


def settle(page, action=None) -> np.ndarray:
    """Do ``action``, then wait until a new face is on screen and no request is pending; its pixels."""
    page.evaluate("() => { const el = document.getElementById('current'); if (el) el.dataset.seen = el.dataset.renders; }")
    if action is not None:
        action()
    page.wait_for_function(f"() => ({SETTLED})(document.getElementById('current'))", timeout=30_000)
    return pixels(page)


def address_state(page, key: str, pattern: str | None = ".") -> dict:
    """The page's address once its ``key`` matches ``pattern`` (None: once it has no ``key``); the address is
    written a moment after the state changes."""
    page.wait_for_function("([key, pattern]) => { const value = new URLSearchParams(location.hash.slice(1)).get(key);"
                           " return pattern === null ? value === null : value !== null && new RegExp(pattern).test(value); }",
                           arg=[key, pattern], timeout=10_000)
    return {k: v[0] for k, v in parse_qs(page.evaluate("location.hash.slice(1)")).items()}


def move(page, selector: str, value: float) -> None:
    page.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", value)


def drag(page, selector: str, values: list[float]) -> None:
    """Many input events in one go, as a fast drag sends them."""
    page.eval_on_selector(selector, """(el, values) => { for (const v of values) {
        el.value = v; el.dispatchEvent(new Event('input')); } }""", values)


def check_sliders_and_coalescing(page, decodes: list) -> tuple[str, np.ndarray]:
    sliders = page.locator("#sliders input[type=range]")
    assert sliders.count() > 0 and page.locator("#sliders label").first.inner_text().startswith("dim ")
    dim = sliders.first.get_attribute("data-dim")
    first = pixels(page)
    moved = settle(page, lambda: move(page, f"#dim-{dim}", 2.5))
    assert np.abs(moved.astype(int) - first).mean() > 0.2  # the face changed
    address_state(page, "v", rf"(^|,){dim}:2\.5(,|$)")
    before = len(decodes)
    values = [round(-3 + 0.2 * i, 2) for i in range(31)]
    dragged = settle(page, lambda: drag(page, f"#dim-{dim}", values))
    sent = decodes[before:]
    assert 1 <= len(sent) <= 3, len(sent)  # the one in flight, then only the newest
    assert sent[-1]["values"][dim] == values[-1]
    return dim, dragged


def check_condition_switch(page) -> np.ndarray:
    switch = page.locator("#conditions .switch").first
    name, pressed = switch.inner_text(), switch.get_attribute("aria-pressed")
    before = pixels(page)
    after = settle(page, switch.click)
    assert switch.get_attribute("aria-pressed") != pressed and not np.array_equal(before, after)
    address_state(page, "c", re.escape(name) + ":")
    return after


def check_upload(page, tmp_path: Path) -> None:
    data = pytest.importorskip("skimage.data", reason="the test photo ships inside scikit-image (the dev extra)")
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG")
    photo = {"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": buffer.getvalue()}
    settle(page, lambda: page.set_input_files("#upload", files=[photo]))
    assert "face found" in page.inner_text("#upload-status")
    assert "uploaded photo" in page.inner_text("#original-caption") and page.is_visible("#original")
    address_state(page, "face", r"^upload\.[0-9a-f]{16}$")


def check_morph_reset_download(page, tmp_path: Path) -> None:
    settle(page, lambda: page.click("#morph-sample"))
    start = pixels(page)
    half = settle(page, lambda: move(page, "#morph", 0.6))
    assert not np.array_equal(start, half) and address_state(page, "t", r"^0\.6$")["morph"].startswith("prior.")
    settle(page, lambda: page.click("#reset"))
    address_state(page, "morph", None)
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    with Image.open(saved) as img:
        assert img.format == "PNG" and img.size == (32, 32)


def test_the_page_in_a_browser(served, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, decodes = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda r: decodes.append(r.post_data_json) if r.url.endswith("/decode") else None)
    settle(page, lambda: page.goto(served))
    assert page.is_visible("#run-menu") and page.locator("#run option").count() == 2
    assert page.is_visible("#original") and page.is_visible("#conditions-box")

    dim, dragged = check_sliders_and_coalescing(page, decodes)
    switched = check_condition_switch(page)
    shared = page.url
    page.goto("about:blank")
    restored = settle(page, lambda: page.goto(shared))  # the state is in the address
    np.testing.assert_array_equal(restored, switched)
    assert float(page.input_value(f"#dim-{dim}")) == pytest.approx(3.0) and dragged.size

    check_upload(page, tmp_path)
    check_morph_reset_download(page, tmp_path)
    artifacts = Path(os.environ.get("FACEVAE_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / "explorer.png"), full_page=True)

    settle(page, lambda: page.click("#random-sample"))
    assert page.is_visible("#no-original") and address_state(page, "face", r"^prior\.")
    settle(page, lambda: page.select_option("#run", "vae"))  # the menu: another run, no condition
    assert "vae" in page.inner_text("#run-label") and not page.is_visible("#conditions-box")
    assert "error" not in (page.get_attribute("#status", "class") or "")
    assert not errors, errors
