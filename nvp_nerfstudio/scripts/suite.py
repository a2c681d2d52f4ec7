"""nvp-suite: every method on every clip of a suite, at equal training time, every frame scored.

A suite is a TOML file of clips (`[[clips]]` with name, data, and optionally downscale and max_frames); data is
sample:NAME, or a path relative to --clips-dir. Each method trains on each clip with the one core training loop
(fit.py) for the same wall-clock budget, the methods of a clip a step at a time in turn (so that a drift in the
machine's speed hits each alike); the report (suite.md, suite.json with every frame's PSNR, and per clip a
PSNR-against-time plot and a per-frame PSNR plot against the baseline) gives each clip's PSNR and samples/s per
method, and each method's median and worst PSNR difference against the baseline method across the clips.

Core only (no nerfstudio): it runs on a GPU machine too.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Tuple

import tomllib
from rich.console import Console

from nvp_nerfstudio.cli import command, parse
from nvp_nerfstudio.data.output import written_atomically
from nvp_nerfstudio.data.video import VideoFrames, VideoInputError, VideoSource
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fit import FitConfig, TimedRun, check_methods, train_runs, training_batch
from nvp_nerfstudio.plots import plot_psnr_against_time, plot_psnr_per_frame

CONSOLE = Console()


@dataclass
class SuiteConfig(FitConfig):
    suite: Path = Path("benchmarks/suite_cpu.toml")
    """TOML file of the clips: [[clips]] with name, data (sample:NAME or a path relative to clips_dir), downscale, max_frames."""
    clips_dir: Path = Path("clips")
    """Folder the suite's clip paths are relative to (scripts/get_suite_clips.sh fills it)."""
    only: Tuple[str, ...] = ()
    """Names of the suite's clips to run (e.g. half the suite on each of two cores); empty: every clip."""
    methods: Tuple[str, ...] = ("nvp-fast", "nvp", "ngp-video")
    """Methods of nvp_nerfstudio/methods.py, each trained on every clip."""
    baseline: str = "ngp-video"
    """The method every other is compared with (median and worst PSNR difference over the clips)."""
    seconds: float = 150.0
    """Wall-clock training budget per method and clip."""
    output_dir: Path = Path("suite-results")


@dataclass(frozen=True)
class SuiteClip:
    name: str
    source: VideoSource


def read_suite(path: Path, clips_dir: Path) -> list[SuiteClip]:
    """The suite's clips, every one checked to exist before anything trains."""
    try:
        entries = tomllib.loads(path.read_text())["clips"]
    except FileNotFoundError:
        raise VideoInputError(f"{path} does not exist: pass --suite FILE (a TOML list of [[clips]])") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as err:
        raise VideoInputError(f"{path} is not a suite: it needs [[clips]] entries with name and data ({err})") from None
    clips = []
    for entry in entries:
        if not isinstance(entry, dict) or not {"name", "data"} <= entry.keys() or not entry.keys() <= {"name", "data", "downscale", "max_frames"}:
            raise VideoInputError(f"{path}: each [[clips]] entry has name, data and optionally downscale and max_frames, not {entry}")
        data = entry["data"] if entry["data"].startswith("sample:") else str(clips_dir / entry["data"])
        if not data.startswith("sample:") and not Path(data).exists():
            raise VideoInputError(f"clip {entry['name']!r}: {data} does not exist: fetch the suite's clips with scripts/get_suite_clips.sh {clips_dir}")
        clips.append(SuiteClip(entry["name"], VideoSource(data, entry.get("downscale", 1), entry.get("max_frames"))))
    if not clips:
        raise VideoInputError(f"{path} lists no clips")
    return clips


def differences(results: dict[str, dict[str, dict]], method: str, baseline: str) -> list[float]:
    """The method's PSNR minus the baseline's on each clip."""
    return [runs[method]["psnr"] - runs[baseline]["psnr"] for runs in results.values()]


def report(config: SuiteConfig, results: dict[str, dict[str, dict]], clips: dict[str, str]) -> str:
    methods = config.methods
    lines = [
        f"# Suite: {config.suite.name}, {config.seconds:g} s of training per method and clip ({config.device})",
        "",
        "PSNR: mean of per-frame PSNR over every frame of the clip, RGB in [0, 1]. samples/s: training pixels a second.",
        "",
        "| clip | " + " | ".join(f"{m} PSNR" for m in methods) + " | " + " | ".join(f"{m} samples/s" for m in methods) + " |",
        "|---|" + "---|" * (2 * len(methods)),
    ]
    for name, runs in results.items():
        best = max(runs[m]["psnr"] for m in methods)
        cells = [f"**{runs[m]['psnr']:.2f}**" if runs[m]["psnr"] == best else f"{runs[m]['psnr']:.2f}" for m in methods]
        cells += [f"{runs[m]['samples_per_s'] / 1e3:.0f} k" for m in methods]
        lines.append(f"| {clips[name]} | " + " | ".join(cells) + " |")
    if config.baseline in methods and len(results) > 0:
        lines += ["", f"Against {config.baseline} (PSNR difference over the clips):", "", "| method | median | worst | best |", "|---|---|---|---|"]
        for method in methods:
            if method != config.baseline:
                diffs = differences(results, method, config.baseline)
                lines.append(f"| {method} | {statistics.median(diffs):+.2f} dB | {min(diffs):+.2f} dB | {max(diffs):+.2f} dB |")
    return "\n".join(lines) + "\n"


def train_methods(config: SuiteConfig, video: VideoFrames, shape: VideoShape) -> dict[str, list[dict]]:
    """Each method's PSNR points on the clip, the methods trained together in turns (train_runs)."""
    runs = [TimedRun(replace(config, method=method), video, shape) for method in config.methods]
    train_runs(runs)
    return {run.config.method: run.points for run in runs}


@command()
def main(config: SuiteConfig) -> dict[str, dict[str, dict]]:
    check_methods(config.methods, config)
    if config.baseline not in config.methods:
        raise SystemExit(f"error: --baseline {config.baseline} is not among --methods {' '.join(config.methods)}")
    clips = read_suite(config.suite, config.clips_dir)
    unknown = sorted(set(config.only) - {clip.name for clip in clips})
    if unknown:
        raise SystemExit(f"error: --only {' '.join(unknown)}: not in {config.suite} (it has {', '.join(clip.name for clip in clips)})")
    clips = [clip for clip in clips if not config.only or clip.name in config.only]
    if config.output_dir.exists() and not config.output_dir.is_dir():
        raise SystemExit(f"error: {config.output_dir} is a file: --output-dir needs a folder")
    results: dict[str, dict[str, dict]] = {}
    described: dict[str, str] = {}
    for clip in clips:
        video = clip.source.load()
        shape = VideoShape(video.num_frames, video.height, video.width)
        described[clip.name] = f"{clip.name} ({video.width}x{video.height}, {video.num_frames} frames)"
        CONSOLE.rule(described[clip.name])
        curves = train_methods(config, video, shape)
        runs = {
            method: {"psnr": curve[-1]["psnr"], "steps": curve[-1]["steps"], "seconds": curve[-1]["seconds"],
                     "samples_per_s": curve[-1]["samples"] / curve[-1]["seconds"], "curve": curve}
            for method, curve in curves.items()
        }
        results[clip.name] = runs
        config.output_dir.mkdir(parents=True, exist_ok=True)  # made once there is something to write in it
        plot_psnr_against_time(config.output_dir / f"psnr_vs_time_{clip.name}.png", described[clip.name], curves)
        per_frame = {method: dict(curve[-1]["frame_psnr"]) for method, curve in curves.items()}
        plot_psnr_per_frame(config.output_dir / f"psnr_per_frame_{clip.name}.png", described[clip.name], per_frame, config.baseline)
        # Written after every clip: a long suite that stops keeps what it measured.
        text = report(config, results, described)
        summary = {"suite": str(config.suite), "batch": training_batch(config), "clips": described, "results": results}
        for name, content in (("suite.md", text), ("suite.json", json.dumps(summary, indent=2))):
            with written_atomically(config.output_dir / name) as temporary:
                temporary.write_text(content)
    CONSOLE.print(text)
    CONSOLE.print(f"Wrote {config.output_dir / 'suite.md'}, suite.json, and psnr_vs_time_CLIP.png and psnr_per_frame_CLIP.png per clip")
    return results


def entrypoint() -> None:
    main(parse(SuiteConfig))


if __name__ == "__main__":
    entrypoint()
