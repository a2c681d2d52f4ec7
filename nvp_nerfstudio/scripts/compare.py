"""nvp-compare: several registered video methods on the same clip, for the same wall time (or steps).

The methods train together, a step of one at a time (so that a drift in the machine's speed slows each
alike), with the same data, seed, batch size and schedule (the benchmark's training loop), then one table
(PSNR, SSIM, MS-SSIM, FLIP, LPIPS, parameters, bits per pixel of its weights, training time, samples/s,
decoding frames/s), a PSNR-against-time plot and an image grid of one frame from every method beside the
truth land in one folder. With `--holdout-every k` it scores
frame interpolation instead: every k-th frame is left out of training, only those are scored, and
linear blending of the neighbouring frames joins the table. With `--mask` it scores inpainting: the
masked pixels are left out of training, PSNR is also reported on them and on the rest apart, and a
temporal median fill joins the table.

Core module: runs without nerfstudio, on a CPU or a GPU.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import torch
import tyro
from rich.console import Console
from rich.table import Table

from nvp_nerfstudio.cli import command, parse
from nvp_nerfstudio.data.interpolation import blend
from nvp_nerfstudio.data.masks import load_mask, temporal_median_fill
from nvp_nerfstudio.data.video import VideoFrames, VideoInputError, VideoSource, holdout_split
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fit import FitConfig, TimedRun, check_methods, evenly_spaced, is_cuda, render_chunk, train_runs
from nvp_nerfstudio.metrics import HIGHER_IS_BETTER, METRIC_NAMES, bits_per_pixel, frame_metrics, psnr
from nvp_nerfstudio.plots import plot_psnr_against_time
from nvp_nerfstudio.rendering import render_frame

CONSOLE = Console()
BLEND = "linear blend"
MEDIAN_FILL = "temporal median fill"
# PSNR on the missing pixels and on the known ones, when a mask is given.
REGION_METRICS = ("psnr_masked", "psnr_known")


@dataclass
class CompareConfig:
    source: tyro.conf.OmitArgPrefixes[VideoSource] = VideoSource("sample:bikes")
    methods: Tuple[str, ...] = ("nvp", "ngp-video", "kplanes-video", "ffn-video", "siren-video")
    """Methods of nvp_nerfstudio/methods.py, trained together, a step of one at a time (fit.train_runs)."""
    time_budget: float = 300.0
    """Seconds of training per method."""
    steps: Optional[int] = None
    """Train every method this many steps instead of for the same time."""
    holdout_every: Optional[int] = None
    """Frame interpolation: hold out frames k-1, 2k-1, ... from training and score only those (k >= 2)."""
    mask: Optional[str] = None
    """Inpainting: a mask video or frame folder (white = missing) or a generated mask (box, strokes, logo)."""
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    train_batch: Optional[int] = None
    """Pixels per step; None: 2**14 on a CPU, 2**20 on CUDA."""
    eval_every: float = 30.0
    """Seconds of training between two points of the PSNR curve."""
    eval_frames: int = 10
    """Frames, evenly spaced, that FLIP and LPIPS score (~1 s a frame each on a CPU) and that score the PSNR curve's
    points before the last (0: every frame). PSNR, SSIM and MS-SSIM are over every frame (every held-out one)."""
    metrics: Tuple[str, ...] = METRIC_NAMES
    seed: int = 0
    output_dir: Path = Path("compare-results")


@dataclass
class MethodResult:
    name: str
    metrics: dict[str, float]
    parameters: int = 0
    train_seconds: float = 0.0
    steps: int = 0
    samples_per_s: float = 0.0
    decode_fps: float = 0.0
    curve: list[dict] = field(default_factory=list)


# The metrics that cost about a second a frame on a CPU: scored on an evenly spaced subset of the frames.
PERCEPTUAL_METRICS = ("flip", "lpips")


def mean_metrics(
    predict, video: VideoFrames, frames: list[int], names: Tuple[str, ...], perceptual_frames: Optional[list[int]] = None
) -> tuple[dict[str, float], torch.Tensor]:
    """Mean of each metric over the frames (FLIP and LPIPS over perceptual_frames, default all), and the
    prediction of the middle frame (for the image grid)."""
    totals: dict[str, list[float]] = {}
    middle = None
    perceptual = set(frames if perceptual_frames is None else perceptual_frames)
    for position, index in enumerate(frames):
        prediction = predict(index)
        if position == len(frames) // 2:
            middle = prediction.cpu()
        truth = video.frames[index].to(prediction.device).float() / 255.0
        values = frame_metrics(prediction, truth, [n for n in names if index in perceptual or n not in PERCEPTUAL_METRICS])
        if video.missing is not None:
            missing = video.missing[index].to(prediction.device)
            values.update(zip(REGION_METRICS, (psnr(prediction, truth, missing), psnr(prediction, truth, ~missing))))
        for name, value in values.items():
            if value is not None:  # a frame without missing pixels has no masked PSNR
                totals.setdefault(name, []).append(value)
    return {name: sum(values) / len(values) for name, values in totals.items()}, middle


def perceptual_frames(config: CompareConfig, scored: list[int]) -> list[int]:
    """The scored frames that FLIP and LPIPS score: config.eval_frames of them, evenly spaced."""
    return evenly_spaced(scored, config.eval_frames)


def train_methods(config: CompareConfig, video: VideoFrames, train_frames: list[int], scored: list[int]) -> list[TimedRun]:
    """Every method's run, trained together in turns (train_runs: a drift in the machine's speed slows each alike)."""
    shape = VideoShape(video.num_frames, video.height, video.width)
    runs = [
        TimedRun(
            FitConfig(method=name, device=config.device, seconds=config.time_budget, steps=config.steps,
                      train_batch=config.train_batch, eval_every=config.eval_every, seed=config.seed),
            video, shape, train_frames, perceptual_frames(config, scored), scored,
        )
        for name in config.methods
    ]
    train_runs(runs)
    return runs


def run_result(config: CompareConfig, run: TimedRun, video: VideoFrames, scored: list[int]):
    """A trained run's metrics, sizes and speeds, and its render of the middle scored frame."""
    fit_config, curve, trained = run.config, run.points, run.field_module
    trained.eval()
    last = max(video.num_frames - 1, 1)
    chunk = render_chunk(fit_config)
    render_seconds = 0.0

    def predict(index: int) -> torch.Tensor:
        nonlocal render_seconds  # decoding speed: the renders alone, not the metrics
        start = time.perf_counter()
        frame = render_frame(trained, index / last, video.height, video.width, chunk)
        if is_cuda(fit_config):
            torch.cuda.synchronize()
        render_seconds += time.perf_counter() - start
        return frame

    metrics, middle = mean_metrics(predict, video, scored, config.metrics, perceptual_frames(config, scored))
    final = curve[-1]
    result = MethodResult(
        fit_config.method, metrics, sum(p.numel() for p in trained.parameters()), final["seconds"], final["steps"],
        final["samples"] / final["seconds"], len(scored) / render_seconds, curve,
    )
    return result, middle


def blend_result(config: CompareConfig, video: VideoFrames, kept: list[int], scored: list[int]):
    metrics, middle = mean_metrics(
        lambda i: blend(video.frames, kept, i) / 255.0, video, scored, config.metrics, perceptual_frames(config, scored)
    )
    return MethodResult(BLEND, metrics), middle


def median_fill_result(config: CompareConfig, video: VideoFrames, train_frames: list[int], scored: list[int]):
    hidden = video.missing.clone()
    hidden[sorted(set(range(video.num_frames)) - set(train_frames))] = True  # held-out frames are unknown too
    filled = temporal_median_fill(video.frames, hidden)
    metrics, middle = mean_metrics(lambda i: filled[i], video, scored, config.metrics, perceptual_frames(config, scored))
    return MethodResult(MEDIAN_FILL, metrics), middle


COLUMNS = ("method", "parameters", "bpp (8-bit)", "bpp (fp32)", "train s", "steps", "samples/s", "decode fps")


def result_record(result: MethodResult, video: VideoFrames, names: list[str]) -> list:
    """One table row of raw values (None where it does not apply: a baseline that does not train)."""
    trained = result.parameters > 0
    return [
        result.name,
        *[result.metrics.get(n) for n in names],
        result.parameters,
        bits_per_pixel(result.parameters, video) if trained else None,
        bits_per_pixel(result.parameters * 4, video) if trained else None,
        result.train_seconds if trained else None,
        result.steps if trained else None,
        result.samples_per_s if trained else None,
        result.decode_fps if trained else None,
    ]


def formatted(record: list, names: list[str]) -> list[str]:
    """The row as the markdown and console tables show it."""
    formats = ["{}", *("{:.2f}" if n.startswith("psnr") else "{:.4f}" for n in names), "{:,}", "{:.3f}", "{:.3f}", "{:.0f}", "{}", "{:,.0f}", "{:.2f}"]
    return ["" if value is None else fmt.format(value) for fmt, value in zip(formats, record)]


def metric_header(name: str) -> str:
    return f"{name} {'↑' if HIGHER_IS_BETTER.get(name, True) else '↓'}"


def metrics_sentence(config: CompareConfig, scored: list[int], names: list[str]) -> str:
    which = "every held-out frame" if config.holdout_every else "every frame"
    sentence = f"Metrics: mean over {which} ({len(scored)})"
    perceptual = perceptual_frames(config, scored)
    costly = [name.upper() for name in names if name in PERCEPTUAL_METRICS]
    if costly and len(perceptual) < len(scored):
        sentence += (
            f"; {' and '.join(costly)} over {len(perceptual)} of them, evenly spaced ({', '.join(map(str, perceptual))}), "
            "since each costs about a second a frame on a CPU (--eval-frames 0: every frame)"
        )
    return sentence + "."


def write_outputs(
    config: CompareConfig, video: VideoFrames, scored: list[int], results: list[MethodResult], predictions: dict[str, torch.Tensor]
) -> None:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in (*config.metrics, *REGION_METRICS) if any(n in r.metrics for r in results)]
    header = [COLUMNS[0], *(metric_header(n) for n in names), *COLUMNS[1:]]
    records = [result_record(result, video, names) for result in results]
    with open(out / "compare.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([COLUMNS[0], *names, *COLUMNS[1:]])
        writer.writerows([["" if value is None else value for value in record] for record in records])
    rows = [formatted(record, names) for record in records]
    budget = f"{config.steps} steps" if config.steps else f"{config.time_budget:g} s of training"
    task = f"interpolation of held-out frames (1 in {config.holdout_every})" if config.holdout_every else "fitting"
    if config.mask is not None:
        task = f"inpainting (mask {config.mask}) and {task}" if config.holdout_every else f"inpainting (mask {config.mask})"
    lines = [
        f"# {video.clip_name} — {task}, {budget} per method ({config.device})",
        "",
        metrics_sentence(config, scored, names),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(row) + " |" for row in rows],
    ]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    table = Table(*header, title=f"{task}, {budget} per method")
    for row in rows:
        table.add_row(*row)
    Console(width=max(CONSOLE.width, 160)).print(table)  # wide: a piped console defaults to 80 columns
    curves = {result.name: result.curve for result in results if result.curve}
    untrained = {result.name: result.metrics["psnr"] for result in results if not result.curve}  # e.g. a linear blend
    plot_psnr_against_time(out / "psnr_vs_time.png", f"{video.clip_name}: {task}", curves, untrained)
    plot_frame_grid(out / "frame_grid.png", video, scored, results, predictions)
    CONSOLE.print(f"Wrote {out / 'compare.md'}, compare.csv, psnr_vs_time.png and frame_grid.png")


def plot_frame_grid(
    path: Path, video: VideoFrames, scored: list[int], results: list[MethodResult], predictions: dict[str, torch.Tensor]
) -> None:
    """The middle scored frame: ground truth, then every method's reconstruction with its PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    index = scored[len(scored) // 2]
    truth = video.frames[index].float() / 255.0
    panels = [("ground truth", truth)]
    if video.missing is not None:  # what the methods saw: the missing pixels in magenta
        panels.append(("input (mask in magenta)", torch.where(video.missing[index][..., None], torch.tensor([1.0, 0.0, 1.0]), truth)))
    panels += [(f"{r.name}: {psnr(predictions[r.name], truth):.2f} dB", predictions[r.name]) for r in results]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    aspect = video.height / video.width
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 4.5 * aspect * rows + 0.6 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, image) in zip(axes.flat, panels):
        axis.imshow(image.clamp(0, 1).numpy())
        axis.set_title(title, fontsize=10)
    figure.suptitle(f"frame {index}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@command()
def main(config: CompareConfig) -> list[MethodResult]:
    check_methods(config.methods)
    unknown_metrics = [m for m in config.metrics if m not in METRIC_NAMES]
    if unknown_metrics:
        raise SystemExit(f"error: unknown metric(s) {', '.join(unknown_metrics)}: choose from {', '.join(METRIC_NAMES)}")
    if config.time_budget <= 0 and not config.steps:
        raise SystemExit("error: --time-budget must be positive (or give --steps)")
    video = config.source.load()
    train_frames, scored = list(range(video.num_frames)), list(range(video.num_frames))
    if config.holdout_every is not None:
        train_frames, scored = holdout_split(video.num_frames, config.holdout_every)
        if not scored or not train_frames:
            raise VideoInputError(f"holdout_every={config.holdout_every} leaves no held-out or no kept frame of {video.num_frames}")
    if config.mask is not None:
        video.missing = load_mask(config.mask, video, config.source.selection)
    CONSOLE.print(f"Comparing {', '.join(config.methods)} on {video.clip_name}")
    results, predictions = [], {}
    for run in train_methods(config, video, train_frames, scored):
        result, predictions[run.config.method] = run_result(config, run, video, scored)
        results.append(result)
    if config.holdout_every is not None:
        result, predictions[BLEND] = blend_result(config, video, train_frames, scored)
        results.append(result)
    if config.mask is not None:
        result, predictions[MEDIAN_FILL] = median_fill_result(config, video, train_frames, scored)
        results.append(result)
    write_outputs(config, video, scored, results, predictions)
    return results


def entrypoint() -> None:
    main(parse(CompareConfig))


if __name__ == "__main__":
    entrypoint()
