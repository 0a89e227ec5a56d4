"""The dashboard in a real browser: Debian's chromium driven by Playwright for Python.

Starts ``streamlit run app/main.py`` on a free loopback port (the command ``probe app`` builds) with
a real SmolLM2 report, selects a head, runs a live A/B generation on the embedded SmolLM2, and saves
screenshots (into pytest's tmp dir, and to $PROBE_SCREENSHOT when set: the main page there, the A/B
result next to it as ``<name>-ab.png``). Fails when the page shows an exception or an error.

CI needs ``apt-get install -y chromium`` and ``pip install playwright`` (no ``playwright install``).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PROMPTS = ["It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
           "Mr. Bennet was so odd a mixture of quick parts, sarcastic humour, reserve, and caprice, that the experience "
           "of three and twenty years had been insufficient to make his wife understand his character."]

if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory, smollm2):
    """A real (small) SmolLM2 scan: two prompts."""
    from probe.scanner import scan

    root = tmp_path_factory.mktemp("reports")
    scan(smollm2, PROMPTS, out=root / "smollm2")
    return root / "smollm2"


@pytest.fixture(scope="module")
def server(report, tmp_path_factory):
    """``streamlit run app/main.py`` on 127.0.0.1:<free port>; yields the URL, stops it afterwards."""
    from app.commands import streamlit_command

    port = free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(streamlit_command(port, report, report.parent, "smollm2"), stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"streamlit did not answer on {url}:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def assert_clean(page) -> None:
    """No exception box and no error message anywhere on the page."""
    exc = page.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()
    err = page.locator('[data-testid="stAlertContentError"]')
    assert err.count() == 0, err.first.inner_text()


def shoot(page, tmp_path: Path, name: str, suffix: str = "") -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    target = os.environ.get("PROBE_SCREENSHOT")
    if target:
        t = Path(target)
        t = t.with_name(t.stem + suffix + t.suffix) if suffix else t
        t.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, t)
    return path


def test_select_head_and_live_ab_in_chromium(server, report, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
            # the figures render one after another: wait for all of them, then count
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=120_000)
            assert page.locator(".js-plotly-plot").count() >= 5  # key0, sink rate, hidden mass/count, entropy
            assert_clean(page)

            sidebar = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]')
            for label, value in (("Layer", "17"), ("Head", "4")):
                sidebar.filter(has_text=label).locator("input").click()
                page.keyboard.type(value)  # the option list is virtualised: filter it, then take the match
                page.locator('[role="option"]').filter(has_text=value).first.click()
                page.wait_for_timeout(300)
            page.wait_for_selector("h3:has-text('Head L17H4')", timeout=60_000)
            assert_clean(page)

            # click a heatmap cell: the hover label names the cell, the details heading follows the click
            area = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.bounding_box()
            x, y = area["x"] + area["width"] * 2.5 / 9, area["y"] + area["height"] * 5.5 / 30  # H2, L5 (30 x 9 grid)
            page.mouse.move(x, y)
            hover = page.locator(".js-plotly-plot .hoverlayer .hovertext").first
            hover.wait_for(timeout=10_000)
            cell = re.match(r"L\d+H\d+", hover.text_content() or "").group(0)  # SVG text: no inner_text
            assert cell == "L5H2", cell
            page.mouse.click(x, y)
            page.wait_for_selector(f"h3:has-text('Head {cell}')", timeout=60_000)
            page.mouse.move(5, 5)
            page.wait_for_timeout(1500)
            assert_clean(page)
            shot = shoot(page, tmp_path, "main.png")
            assert shot.stat().st_size > 20_000

            page.get_by_role("tab", name="Live A/B").click()
            prompt = page.locator('textarea[aria-label="Prompt"]:visible')
            prompt.fill("The capital of France is")
            page.locator('input[aria-label="Mask heads"]:visible').fill("L17H4")
            page.locator('input[type="range"][aria-label="New tokens"]').focus()
            page.keyboard.press("Home")
            for _ in range(4):
                page.keyboard.press("ArrowRight")
            page.wait_for_timeout(500)
            page.get_by_role("button", name="Generate A/B").click()
            page.wait_for_selector("text=Intervened (", timeout=240_000)
            # the comparison caption renders after the two columns (Streamlit streams the elements): wait for it
            page.wait_for_selector(r"text=/Identical generations\.|diverge at new token/", timeout=60_000)
            assert_clean(page)
            body = page.inner_text("body")
            assert "Baseline (5 tokens)" in body and "act:beta=0.4" in body and "mask:L17H4:mode=uniform" in body
            assert "Identical generations." in body or "diverge at new token" in body
            shoot(page, tmp_path, "live_ab.png", "-ab")
        finally:
            browser.close()
