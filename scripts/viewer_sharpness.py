"""How sharp, and how soon, nerfstudio's web viewer draws a finished run: the video plane at its default view,
scored by PSNR against the source frame (resized to the drawn plane) after the Time and Frame sliders move, with the
seconds until the picture was sharp. Headless Debian Chromium through Playwright; the viewer is started here
(`ns-viewer --load-config CONFIG`) unless --url names a running one.

    python scripts/viewer_sharpness.py outputs/bikes/nvp-fast/<timestamp>/config.yml [--url URL] [--output-dir DIR]
        [--steady-canvas] [--hide-train-cams] [--max-res N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.plugin.runs import load_run
from nvp_nerfstudio.rendering import render_frame
from nvp_nerfstudio.viewer_browser import (
    drawn_as,
    free_port,
    inner_window,
    open_viewer,
    plane_psnr,
    plane_rectangle,
    port_open,
    render_size,
    screenshot,
    select_output,
    set_number,
    view_box,
    wait_for,
    wait_for_stillness,
)

# Within this of the PSNR the picture settles at, it counts as sharp.
SHARP_WITHIN_DB = 0.5






def measure(page, view, rectangle, frames, field, label: str, value: float, frame: int, shots: Path) -> dict:
    """Moves one slider to show `frame`, then scores the view every moment until it holds still: seconds until it
    was sharp, its PSNR then, and what the field's own frame scores drawn over the same rectangle (the most any
    drawing of it could)."""
    source = frames[frame]
    start = time.monotonic()
    set_number(page, label, value)
    timeline = []
    while time.monotonic() - start < 8.0:
        timeline.append((time.monotonic() - start, plane_psnr(screenshot(page, view), rectangle, source)))
    final = plane_psnr(wait_for_stillness(page, view), rectangle, source)
    screenshot(page, view, shots / f"{label.lower()}_{value:g}.png")
    sharp = next((seconds for seconds, score in timeline if score >= final - SHARP_WITHIN_DB), time.monotonic() - start)
    width, height = render_size(page)
    reconstruction = render_frame(field, frame / (len(frames) - 1), *frames.shape[1:3]).numpy() * 255
    window = inner_window(rectangle)
    field_psnr = psnr(drawn_as(reconstruction, rectangle, window) / 255, drawn_as(source, rectangle, window) / 255)
    return {
        "slider": label, "value": value, "frame": frame, "seconds_to_sharp": round(sharp, 1), "psnr": round(final, 2),
        "field_psnr": round(field_psnr, 2), "render": f"{width}x{height}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="config.yml of a finished run")
    parser.add_argument("--url", help="a viewer already serving this run (default: start ns-viewer here)")
    parser.add_argument("--output-dir", type=Path, default=Path("test-artifacts/viewer-sharpness"))
    parser.add_argument("--hide-train-cams", action="store_true", help="click Hide Train Cams first (viewers that draw them)")
    parser.add_argument("--steady-canvas", action="store_true", help="keep viser's canvas at a pixel per CSS pixel")
    parser.add_argument("--max-res", type=int, help="set the viewer's Max res first (its default: 512)")
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    field, _, video, _ = load_run(args.config)
    frames = video.frames.numpy()
    last = len(frames) - 1
    viewer = None
    url = args.url
    if url is None:
        port = free_port()
        command = [str(Path(sys.executable).parent / "ns-viewer"), "--load-config", str(args.config)]
        command += ["--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port)]
        viewer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(port), 300, "the viewer")
        url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as playwright:
            opened = time.monotonic()
            page = open_viewer(playwright, url, steady_canvas=args.steady_canvas)
            if args.hide_train_cams:
                page.get_by_text("Hide Train Cams").click(timeout=120000)
            if args.max_res is not None:
                set_number(page, "Max res", args.max_res)
            view = view_box(page)
            first = wait_for_stillness(page, view)
            settled = time.monotonic() - opened
            select_output(page, "accumulation")
            wait_for_stillness(page, view)
            rectangle = plane_rectangle(screenshot(page, view, args.output_dir / "accumulation.png"))
            select_output(page, "rgb")
            wait_for_stillness(page, view)
            results = [
                {"slider": "(page load)", "seconds_to_still": round(settled, 1), "psnr": round(plane_psnr(first, rectangle, frames[0]), 2)},
                measure(page, view, rectangle, frames, field, "Time", 1.0, last, args.output_dir),
                measure(page, view, rectangle, frames, field, "Frame", last // 2, last // 2, args.output_dir),
                measure(page, view, rectangle, frames, field, "Time", 0.0, 0, args.output_dir),
            ]
            page.context.browser.close()
    finally:
        if viewer is not None:
            viewer.terminate()
            viewer.wait(timeout=60)
    plane = f"{rectangle[2] - rectangle[0]:.1f}x{rectangle[3] - rectangle[1]:.1f} screen px"
    print(f"video {frames.shape[2]}x{frames.shape[1]}, drawn plane {plane}")
    for result in results:
        print(json.dumps(result))
    (args.output_dir / "sharpness.json").write_text(json.dumps({"plane": plane, "results": results}, indent=1))


if __name__ == "__main__":
    main()
