"""nerfstudio's web viewer in headless Chromium: set its controls, screenshot the 3D view and score the video plane
drawn there against the image it should show. For the browser test and scripts/viewer_sharpness.py.

Needs Playwright (`pip install playwright`) and Debian's Chromium (/usr/bin/chromium), never a downloaded browser.
"""

from __future__ import annotations

import re
import socket
import time
from io import BytesIO
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nvp_nerfstudio.metrics import psnr

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
VIEWPORT = {"width": 1200, "height": 800}
STEADY_PIXEL_RATIO = 5  # the canvas then keeps a pixel per CSS pixel or more (see open_viewer)
# Screen pixels left out along the plane's edges, where the drawn frame blends into the background.
EDGE_INSET = 3

Rectangle = Tuple[float, float, float, float]  # left, top, right, bottom in screen pixels (pixel i spans [i, i + 1))


def free_port() -> int:
    """A loopback port nobody listens on, for a viewer to serve on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(poll)


def open_viewer(playwright, url: str, steady_canvas: bool = False):
    """A page on the viewer at `url`, once its control panel is up.

    viser draws its WebGL canvas at as little as 0.2 x devicePixelRatio while the page runs under 38 frames a second,
    as a software-rendered page under load does, and seldom raises it again. `steady_canvas` tells the page its
    screen has STEADY_PIXEL_RATIO device pixels a CSS pixel, which keeps that floor near one: screenshots then show
    what the server sent, not how loaded the browser was.
    """
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport=VIEWPORT)
    if steady_canvas:
        page.add_init_script(f"Object.defineProperty(window, 'devicePixelRatio', {{get: () => {STEADY_PIXEL_RATIO}}})")
    page.goto(url)
    page.get_by_text("Max res", exact=True).first.wait_for(timeout=120000)
    return page


def control(page, label: str):
    """The input of a viser control, found from its label (viser sliders are not <input type=range>)."""
    target = page.evaluate(
        "label => { const l = [...document.querySelectorAll('label')].find(e => e.textContent.trim() === label);"
        " return l ? l.htmlFor : null; }",
        label,
    )
    assert target, f"no control labelled {label!r} in the viewer"
    return page.locator(f'[id="{target}"]')


def set_number(page, label: str, value: float) -> None:
    """Types a value into the number box beside a slider, then Enter."""
    box = control(page, label).locator("xpath=ancestor::*[.//input][1]").locator("input").last
    box.fill(str(value))
    box.press("Enter")


def select_output(page, name: str) -> None:
    """Picks an entry of the "Output type" list (rgb, ground_truth, error, accumulation, ...)."""
    box = control(page, "Output type")
    box.click()
    page.locator(f'[id="{box.get_attribute("aria-controls")}"] [role=option][value="{name}"]').click()


def render_size(page) -> Tuple[int, int]:
    """Width and height of the viewer's last render, from the panel's "Resolution: WxHpx" line."""
    match = re.search(r"Resolution:\s*(\d+)x(\d+)", page.get_by_text("Resolution:").first.text_content() or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def view_box(page) -> Dict[str, float]:
    """The 3D view on the page: the canvas left of the control panel, which lies over its right."""
    canvas = page.locator("canvas").first.bounding_box()
    panel_left = page.get_by_text("Max res", exact=True).first.bounding_box()["x"] - 30
    return {"x": canvas["x"], "y": canvas["y"], "width": min(canvas["width"], panel_left - canvas["x"]), "height": canvas["height"]}


def screenshot(page, view: Dict[str, float], path: Optional[Path] = None) -> np.ndarray:
    """The 3D view as float32 RGB in [0, 255]; kept at `path` when given."""
    png = page.screenshot(clip=view, path=str(path) if path else None)
    return np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(np.float32)


def wait_for_stillness(page, view: Dict[str, float], timeout: float = 120.0, still_for: int = 5) -> np.ndarray:
    """The view once `still_for` screenshots a second apart agree: the page has laid itself out (its canvas narrows
    while the control panel opens, and each change re-renders) and the last render has arrived."""
    shots = [screenshot(page, view)]
    deadline = time.monotonic() + timeout
    while len(shots) < still_for or any(np.abs(shot - shots[-1]).mean() > 0.3 for shot in shots[-still_for:]):
        if time.monotonic() > deadline:
            raise TimeoutError("the viewer never held still")
        time.sleep(1.0)
        shots.append(screenshot(page, view))
    return shots[-1]


def plane_rectangle(accumulation: np.ndarray) -> Rectangle:
    """Where the plane lies in a screenshot of the "accumulation" output (1 on the plane, 0 off it), to a fraction
    of a pixel: each edge where the mean profile across the plane crosses half way."""
    background = np.median(accumulation[:20, :20].reshape(-1, 3), axis=0)
    distance = np.abs(accumulation - background).max(axis=-1)
    on_plane = distance > 0.5 * np.percentile(distance, 99)  # not the maximum: the axes gizmo is brighter
    rows = np.flatnonzero(on_plane.mean(axis=1) > 0.05)
    columns = np.flatnonzero(on_plane.mean(axis=0) > 0.05)
    assert len(rows) > 20 and len(columns) > 20, "no video plane in the screenshot"
    coverage = np.clip(distance / np.median(distance[on_plane]), 0.0, 1.0)
    middle_rows = slice(rows[0] + len(rows) // 4, rows[-1] - len(rows) // 4)
    middle_columns = slice(columns[0] + len(columns) // 4, columns[-1] - len(columns) // 4)
    left, right = half_crossings(coverage[middle_rows].mean(axis=0))
    top, bottom = half_crossings(coverage[:, middle_columns].mean(axis=1))
    return left, top, right, bottom


def half_crossings(profile: np.ndarray) -> Tuple[float, float]:
    """First rising and last falling crossing of 0.5, interpolated between pixel centres (pixel i at i + 0.5)."""
    above = np.flatnonzero(profile >= 0.5)
    first, last = above[0], above[-1]
    rise = first - 0.5 + (0.5 - profile[first - 1]) / (profile[first] - profile[first - 1])
    fall = last + 0.5 + (profile[last] - 0.5) / (profile[last] - profile[last + 1])
    return float(rise), float(fall)


def drawn_as(expected: np.ndarray, rectangle: Rectangle, window: Tuple[int, int, int, int]) -> torch.Tensor:
    """`expected` (an image at any size) resampled bilinearly as if drawn over `rectangle`, at the screen pixels of
    `window` (left, top, right, bottom; integers)."""
    left, top, right, bottom = rectangle
    columns = torch.arange(window[0], window[2], dtype=torch.float64) + 0.5
    rows = torch.arange(window[1], window[3], dtype=torch.float64) + 0.5
    x = (columns - left) / (right - left) * 2 - 1  # grid_sample's [-1, 1] spans the image's outer edges
    y = (rows - top) / (bottom - top) * 2 - 1
    grid = torch.stack(torch.meshgrid(y, x, indexing="ij")[::-1], dim=-1)[None].float()
    image = torch.from_numpy(np.ascontiguousarray(expected)).float().permute(2, 0, 1)[None]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)[0].permute(1, 2, 0)


def inner_window(rectangle: Rectangle) -> Tuple[int, int, int, int]:
    """The screen pixels wholly inside the plane, less EDGE_INSET along each edge (left, top, right, bottom)."""
    left, top, right, bottom = rectangle
    return (
        int(np.ceil(left)) + EDGE_INSET,
        int(np.ceil(top)) + EDGE_INSET,
        int(np.floor(right)) - EDGE_INSET,
        int(np.floor(bottom)) - EDGE_INSET,
    )


def plane_psnr(shot: np.ndarray, rectangle: Rectangle, expected: np.ndarray) -> float:
    """PSNR (8-bit images) of the plane drawn in a screenshot against `expected` resized to it.

    The rectangle is shifted within a pixel first, to the best score: the drawn plane moves by a fraction of a pixel
    as the page's layout settles, and half a pixel of misregistration alone costs several dB on a detailed frame.
    """
    window = inner_window(rectangle)
    drawn = torch.from_numpy(shot[window[1] : window[3], window[0] : window[2]]) / 255

    def score(shift: Tuple[float, float]) -> float:
        left, top, right, bottom = rectangle
        moved = (left + shift[0], top + shift[1], right + shift[0], bottom + shift[1])
        return psnr(drawn_as(expected, moved, window) / 255, drawn)

    best = (0.0, 0.0)
    for step, reach in ((0.5, 2), (0.25, 1)):  # whole pixels either way, then quarter pixels around the best
        offsets = range(-reach, reach + 1)
        best = max(((best[0] + dx * step, best[1] + dy * step) for dx in offsets for dy in offsets), key=score)
    return score(best)
