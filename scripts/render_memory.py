"""Peak memory of `nvp-render` and `nvp-compress` against the clip's length: it should not grow with it.

For each length, a generated clip (a moving colour pattern), a short `ns-train` run on it, then `nvp-render` to an
mp4 and `nvp-compress` to a .nvp file, each in a child process whose peak RSS the kernel reports when it exits.
The field is `ngp-video` by default, whose hash tables do not grow with the clip (NVP's keyframe planes along t
do), so what grows is the command's own use.

    python scripts/render_memory.py --lengths 100 400 1600
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from nvp_nerfstudio.data.output import write_test_pattern

CONSOLE = Console()


def child_peak_rss_mib(command: list[str], cwd: Path) -> float:
    """Run a console script of this environment in a child process; its peak resident memory in MiB (the kernel's
    ru_maxrss of that child)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen([str(Path(sys.executable).parent / command[0]), *command[1:]], cwd=cwd, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(command)} failed: {child.stderr.read()[-2000:]}")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 400, 1600])
    parser.add_argument("--size", type=int, nargs=2, default=[320, 180], metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--method", default="ngp-video")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    width, height = args.size
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for length in args.lengths:
            clip = root / f"clip_{length}.mp4"
            write_test_pattern(clip, length, width, height)
            runs = root / f"runs_{length}"
            child_peak_rss_mib(["ns-train", args.method, "--data", str(clip), "--vis", "tensorboard", "--max-num-iterations",
                          str(args.steps), "--steps-per-eval-image", "100000", "--output-dir", str(runs)], root)
            (config,) = runs.glob(f"*/{args.method}/*/config.yml")
            render = child_peak_rss_mib(["nvp-render", "--load-config", str(config), "-o", str(root / f"render_{length}.mp4")], root)
            compress = child_peak_rss_mib(["nvp-compress", "--load-config", str(config), "-o", str(root / f"clip_{length}.nvp")], root)
            clip_mib = length * width * height * 3 / 2**20
            rows.append((length, clip_mib, render, compress))
            CONSOLE.print(f"{length:5d} frames ({clip_mib:6.1f} MiB as uint8): nvp-render {render:.0f} MiB, nvp-compress {compress:.0f} MiB peak RSS")
    CONSOLE.print("\n| frames | the clip as uint8 | nvp-render peak RSS | nvp-compress peak RSS |\n|---|---|---|---|")
    for length, clip_mib, render, compress in rows:
        CONSOLE.print(f"| {length} | {clip_mib:.0f} MiB | {render:.0f} MiB | {compress:.0f} MiB |")


if __name__ == "__main__":
    main()
