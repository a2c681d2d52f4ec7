"""The nerfstudio web viewer in a real browser: the video field shows the right frame at each time.

Headless Debian Chromium (never a downloaded browser) driven by Playwright, against `ns-train nvp`
with its viewer on loopback. Screenshots are kept in test-artifacts/viewer/.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "viewer"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
FRAMES = 24
STEPS = 300
# Measured: each screenshot correlates ~0.97 with its own frame (resized to the drawn plane).
MIN_CORRELATION = 0.85


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(1.0)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def viewer_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "ns-train"), "nvp", "--data", "sample:carphone",
        "--pipeline.datamanager.dataparser.max-frames", str(FRAMES),
        "--pipeline.datamanager.train-num-rays-per-batch", "4096", "--max-num-iterations", str(STEPS),
        "--vis", "viewer", "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port),
        "--output-dir", str(root),
    ]
    # One core for training, one for Chromium.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with open(root / "train.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        checkpoint = f"step-{STEPS - 1:09d}.ckpt"
        wait_for(lambda: any(root.glob(f"carphone/nvp/*/nerfstudio_models/{checkpoint}")), 900, "training to finish")
        wait_for(lambda: port_open(port), 60, "the viewer")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)


def number_input(page, label: str):
    """The number box of a viser control, found from its label (viser sliders are not <input type=range>)."""
    target = page.evaluate(
        "label => { const l = [...document.querySelectorAll('label')].find(e => e.textContent.trim() === label);"
        " return l ? l.htmlFor : null; }",
        label,
    )
    assert target, f"no control labelled {label!r} in the viewer"
    return page.locator(f'[id="{target}"]').locator("xpath=ancestor::*[.//input][1]").locator("input").last


def set_number(page, label: str, value: float) -> None:
    box = number_input(page, label)
    box.fill(str(value))
    box.press("Enter")


def render_width(page) -> int:
    """Width of the viewer's last render, from the panel's "Resolution: WxHpx" line."""
    match = re.search(r"Resolution:\s*(\d+)", page.get_by_text("Resolution:").first.text_content() or "")
    return int(match.group(1)) if match else 0


def settled_screenshot(page, path: Path, view: dict, min_width: int) -> np.ndarray:
    """Screenshot of the 3D view once the viewer has rendered at full resolution and the picture holds still."""
    wait_for(lambda: render_width(page) >= min_width, 120, "a full-resolution render")
    previous = None
    for _ in range(30):
        time.sleep(2.0)
        page.screenshot(path=str(path), clip=view)
        image = np.asarray(Image.open(path).convert("RGB")).astype(np.float32)
        if previous is not None and np.abs(image - previous).mean() < 0.5:
            return image
        previous = image
    return image


def video_region(image: np.ndarray) -> np.ndarray:
    """The drawn frame: rows and columns that are mostly not background black."""
    lit = image.max(axis=-1) > 12
    rows = np.flatnonzero(lit.mean(axis=1) > 0.5)
    cols = np.flatnonzero(lit.mean(axis=0) > 0.5)
    assert len(rows) > 20 and len(cols) > 20, "no video plane in the screenshot"
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def correlation(region: np.ndarray, frame: np.ndarray) -> float:
    resized = np.asarray(Image.fromarray(frame).resize((region.shape[1], region.shape[0]), Image.Resampling.BILINEAR))
    a, b = region.astype(np.float64).ravel(), resized.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_viewer_shows_the_frame_of_each_time(viewer_url: str) -> None:
    from nvp_nerfstudio.data.video import FrameSelection, load_video

    frames = load_video("sample:carphone", FrameSelection(max_frames=FRAMES)).frames.numpy()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(viewer_url)
        page.get_by_text("Max res", exact=True).first.wait_for(timeout=60000)  # the control panel is up
        set_number(page, "Max res", 256)  # a render at the default 512 takes long on a CPU
        canvas = page.locator("canvas").first.bounding_box()
        # The control panel sits over the right of the canvas: keep the part left of its labels.
        panel_left = page.get_by_text("Max res", exact=True).first.bounding_box()["x"] - 30
        view = {"x": canvas["x"], "y": canvas["y"], "width": min(canvas["width"], panel_left - canvas["x"]), "height": canvas["height"]}
        pictures = {}
        for time_value, frame in ((0.0, 0), (1.0, FRAMES - 1)):
            set_number(page, "Time", time_value)
            pictures[frame] = settled_screenshot(page, ARTIFACTS / f"time_{time_value:.1f}.png", view, 200)
        browser.close()
    shots = {frame: video_region(picture) for frame, picture in pictures.items()}
    scores = {
        (shot, frame): correlation(region, frames[frame]) for shot, region in shots.items() for frame in (0, FRAMES - 1)
    }
    (ARTIFACTS / "scores.txt").write_text(repr(scores))
    assert scores[(0, 0)] > MIN_CORRELATION and scores[(FRAMES - 1, FRAMES - 1)] > MIN_CORRELATION
    # Each picture is closer to its own frame than to the other one: the Time slider drives the field.
    assert scores[(0, 0)] > scores[(0, FRAMES - 1)] and scores[(FRAMES - 1, FRAMES - 1)] > scores[(FRAMES - 1, 0)]
    assert np.abs(pictures[0] - pictures[FRAMES - 1]).mean() > 2.0  # the picture changes with time
