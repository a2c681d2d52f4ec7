"""Benchmark of the NVP field: training throughput over batch sizes, peak memory, PSNR against wall time.

Runs on the core alone (torch, numpy, av, tyro; matplotlib for the plot), so it also runs on a GPU
machine without nerfstudio. Figures are printed and written to the output folder as markdown, JSON
and a PNG plot.
"""

from __future__ import annotations

import json
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from method_configs.fields import METHODS
from nvp_nerfstudio.data.sampler import FramePixelSampler
from nvp_nerfstudio.data.video import FrameSelection, VideoFrames, load_video
from nvp_nerfstudio.fields.base import VideoField, VideoShape
from nvp_nerfstudio.render import psnr, render_frame

CONSOLE = Console()


@dataclass
class BenchConfig:
    data: str = "sample:bikes"
    """Video file, frame folder or sample:NAME."""
    method: str = "nvp"
    """A method of method_configs/fields.py: nvp, nvp-large, siren-video, ffn-video, ngp-video, kplanes-video."""
    downscale: int = 1
    max_frames: Optional[int] = None
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    batch_sizes: Tuple[int, ...] = (1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18)
    """Batch sizes whose training throughput (forward + backward + AdamW step) is measured."""
    throughput_steps: int = 3
    """Timed steps per batch size, after one warm-up step."""
    seconds: float = 300.0
    """Wall-clock training budget of the PSNR-against-time run (0 skips it)."""
    train_batch: Optional[int] = None
    """Pixels per step of that run; None: 2**14 on a CPU, 2**20 on CUDA (as ns-train)."""
    eval_every: float = 30.0
    """Seconds of training between two PSNR points (evaluation time is not counted)."""
    eval_frames: int = 10
    """Frames, evenly spaced, whose mean PSNR makes each point (0: every frame)."""
    lr: Optional[float] = None
    """Initial learning rate; None: the method's (cosine decay to a thousandth of it)."""
    weight_decay: float = 1e-3
    seed: int = 0
    output_dir: Path = Path("bench-results")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def initial_lr(config: BenchConfig) -> float:
    return config.lr or METHODS[config.method].lr


def optimizer_for(field_module: VideoField, config: BenchConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(field_module.parameters(), lr=initial_lr(config), weight_decay=config.weight_decay, fused=True)


def train_step(field_module: VideoField, optimizer: torch.optim.Optimizer, sampler: FramePixelSampler, batch: int) -> float:
    indices, rgb = sampler.sample(batch)
    loss = torch.nn.functional.mse_loss(field_module(sampler.coordinates(indices)), rgb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()  # also synchronises CUDA, so wall times are honest


def measure_throughput(config: BenchConfig, video: VideoFrames, shape: VideoShape) -> list[dict]:
    rows = []
    for batch in config.batch_sizes:
        torch.manual_seed(config.seed)
        field_module = METHODS[config.method].field.setup(shape=shape).to(config.device)
        optimizer = optimizer_for(field_module, config)
        sampler = FramePixelSampler(video.frames, range(video.num_frames), config.device, seed=config.seed)
        train_step(field_module, optimizer, sampler, batch)
        start = time.perf_counter()
        for _ in range(config.throughput_steps):
            train_step(field_module, optimizer, sampler, batch)
        seconds = (time.perf_counter() - start) / config.throughput_steps
        rows.append({"batch": batch, "step_s": seconds, "samples_per_s": batch / seconds, "peak_rss_mib": peak_rss_mib()})
        CONSOLE.print(f"batch 2^{int(math.log2(batch))}: {batch / seconds / 1e3:8.1f} k samples/s ({seconds * 1e3:.0f} ms a step)")
        del field_module, optimizer, sampler
    return rows


def evaluate(field_module: VideoField, video: VideoFrames, frames: list[int]) -> float:
    last = max(video.num_frames - 1, 1)
    scores = [
        psnr(render_frame(field_module, i / last, video.height, video.width).cpu(), video.frames[i].float() / 255.0)
        for i in frames
    ]
    return sum(scores) / len(scores)


def psnr_against_time(config: BenchConfig, video: VideoFrames, shape: VideoShape) -> list[dict]:
    torch.manual_seed(config.seed)
    field_module = METHODS[config.method].field.setup(shape=shape).to(config.device)
    optimizer = optimizer_for(field_module, config)
    sampler = FramePixelSampler(video.frames, range(video.num_frames), config.device, seed=config.seed)
    batch = config.train_batch or (1 << 20 if torch.device(config.device).type == "cuda" else 1 << 14)
    count = video.num_frames if config.eval_frames <= 0 else min(config.eval_frames, video.num_frames)
    eval_frames = sorted({round(i * (video.num_frames - 1) / max(count - 1, 1)) for i in range(count)})
    points, trained, steps, next_eval = [], 0.0, 0, config.eval_every
    with Progress(TextColumn("training {task.fields[psnr]}"), BarColumn(), TimeElapsedColumn(), console=CONSOLE) as progress:
        task = progress.add_task("train", total=config.seconds, psnr="")
        while trained < config.seconds:
            # Cosine decay over the wall-clock budget, as the paper's schedule over its run.
            progress_fraction = min(trained / config.seconds, 1.0)
            lr = initial_lr(config) * (1e-3 + 0.5 * (1 - 1e-3) * (1 + math.cos(math.pi * progress_fraction)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            start = time.perf_counter()
            train_step(field_module, optimizer, sampler, batch)
            trained += time.perf_counter() - start
            steps += 1
            if trained >= next_eval or trained >= config.seconds:
                score = evaluate(field_module, video, eval_frames)
                points.append({"seconds": trained, "steps": steps, "psnr": score})
                next_eval += config.eval_every
                progress.update(task, completed=min(trained, config.seconds), psnr=f"{score:.2f} dB at {trained:.0f} s")
    CONSOLE.print(f"PSNR {points[-1]['psnr']:.2f} dB after {trained:.0f} s ({steps} steps of {batch}), mean of {len(eval_frames)} frames")
    return points


def write_report(config: BenchConfig, summary: dict) -> None:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# {config.method} on {summary['clip']} ({summary['device']})",
        "",
        f"{summary['parameters'] / 1e6:.2f} M parameters; clip {summary['clip_mib']:.0f} MiB as uint8; "
        f"peak RSS {summary['peak_rss_mib']:.0f} MiB after the PSNR-against-time run (before the throughput sweep)",
        "",
        "| batch | samples/s | ms / step |",
        "|---|---|---|",
        *[f"| 2^{int(math.log2(r['batch']))} | {r['samples_per_s'] / 1e3:.1f} k | {r['step_s'] * 1e3:.0f} |" for r in summary["throughput"]],
        "",
        "| seconds | steps | PSNR (dB) |",
        "|---|---|---|",
        *[f"| {p['seconds']:.0f} | {p['steps']} | {p['psnr']:.2f} |" for p in summary["psnr_curve"]],
    ]
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    if summary["psnr_curve"]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 4))
        axis.plot([p["seconds"] for p in summary["psnr_curve"]], [p["psnr"] for p in summary["psnr_curve"]], marker="o")
        axis.set(xlabel="training time (s)", ylabel="PSNR (dB)", title=f"{config.method} on {summary['clip']} ({summary['device']})")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / "psnr_vs_time.png", dpi=120)
    CONSOLE.print(f"Wrote {out / 'bench.md'}, {out / 'bench.json'} and {out / 'psnr_vs_time.png'}")


def main(config: BenchConfig) -> None:
    if config.method not in METHODS:
        raise SystemExit(f"error: unknown method {config.method!r}: choose one of {', '.join(METHODS)}")
    video = load_video(config.data, FrameSelection(max_frames=config.max_frames, downscale=config.downscale))
    shape = VideoShape(video.num_frames, video.height, video.width)
    device_name = torch.cuda.get_device_name() if torch.device(config.device).type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    CONSOLE.print(f"{config.method} on {video} ({device_name})")
    parameters = sum(p.numel() for p in METHODS[config.method].field.setup(shape=shape).parameters())
    # The training run goes first so the peak RSS it leaves is that of training at its batch size.
    curve = psnr_against_time(config, video, shape) if config.seconds > 0 else []
    summary = {
        "clip": f"{Path(video.source).name} {video.width}x{video.height}x{video.num_frames}",
        "device": device_name,
        "parameters": parameters,
        "clip_mib": video.frames.numel() / 2**20,
        "peak_rss_mib": peak_rss_mib(),
        "psnr_curve": curve,
        "throughput": measure_throughput(config, video, shape),
    }
    write_report(config, summary)


def entrypoint() -> None:
    main(tyro.cli(BenchConfig))


if __name__ == "__main__":
    entrypoint()
