"""The page in a real browser: Playwright drives Debian's chromium against a real `qface serve` on 127.0.0.1.

Screenshots are kept in test-artifacts/ (git-ignored) for people to look at."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qface.resources import SAMPLE_IMAGE

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
EXPRESSIONS = "neutral|happy|sad|surprise|fear|disgust|anger|contempt"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[test]')")
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "qface.cli", "serve", "--port", str(port), "--detector", "dlib-hog"]
    log = tmp_path_factory.mktemp("serve") / "server.log"
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # loading the model and the detector's files, on a busy machine too
        while True:
            if process.poll() is not None:
                pytest.fail(f"qface serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"qface serve did not answer within 300 s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def upload_sample(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#model:has-text('qface-')")  # the page has asked the server for its model
    page.set_input_files("#file", str(SAMPLE_IMAGE))
    page.wait_for_selector(".card", timeout=120_000)


def test_a_photo_gives_a_card_per_face_and_a_label_shows_its_attention_map(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    upload_sample(page, server)
    card = page.locator(".card").first
    assert re.fullmatch(rf"({EXPRESSIONS}) \d+ %", card.locator(".headline").inner_text())
    assert re.search(r"about \d+ years old", card.inner_text())
    assert card.locator(".bars li").count() == 8 and card.locator("[data-task=attributes]").count() == 6
    assert re.search(r"\d+ faces? found", page.locator("#status").inner_text())
    chip = card.locator("canvas.chip")
    assert chip.get_attribute("data-map") == ""
    before = chip.evaluate("canvas => canvas.toDataURL()")
    label = card.locator("button[data-task=expression]").nth(1)  # the second likeliest expression
    name = label.get_attribute("data-label")
    label.click()
    assert chip.get_attribute("data-map") == f"expression:{name}"
    assert label.get_attribute("aria-pressed") == "true"
    assert chip.evaluate("canvas => canvas.toDataURL()") != before  # the map is drawn over the face
    assert name in card.locator(".map-caption").inner_text()
    picture = page.locator("#picture")
    assert picture.evaluate("canvas => [canvas.width, canvas.height]") == [512, 512]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
    page.close()


def test_the_page_fits_a_phone_and_says_why_an_upload_is_refused(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    upload_sample(page, server)
    page.locator(".card button[data-task=age]").first.click()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-phone.png"), full_page=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    page.set_input_files("#file", str(notes))
    alert = page.locator("#error")
    alert.wait_for(state="visible")
    assert alert.get_attribute("data-code") == "not_an_image"
    assert "not an image" in alert.inner_text() and page.locator("#result").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "serve-refused.png"))
    page.close()
