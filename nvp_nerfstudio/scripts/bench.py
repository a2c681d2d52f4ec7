"""nvp-bench: benchmark of video fields, one method and grid backend after another in one run: training and inference
throughput over batch sizes, time per step by component, decode frames/s, peak memory, PSNR against wall time.

Runs on the core alone (torch, numpy, av, tyro; matplotlib for the plot), so it also runs on a GPU
machine without nerfstudio. Figures are printed and written to the output folder as one markdown report
(a row per run), JSON and a PSNR-against-time plot with a curve per run.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional, Tuple

import torch
import tyro
from rich.console import Console

from nvp_nerfstudio.cli import command, parse
from nvp_nerfstudio.data.video import VideoFrames, VideoSource
from nvp_nerfstudio.encodings.grid import GridBackend, GridEncodingConfig
from nvp_nerfstudio.fields.base import VideoField, VideoShape
from nvp_nerfstudio.fields.modulated_mlp import ModulatedSirenConfig
from nvp_nerfstudio.fit import (
    FitConfig,
    TrainSteps,
    build_field,
    check_methods,
    compiles_whole_field,
    is_cuda,
    optimizer_for,
    psnr_against_time,
    reconstruction_loss,
    render_chunk,
    sampler_for,
    synchronize,
    training_batch,
)
from nvp_nerfstudio.memory import peak_rss_mib, release_freed_memory
from nvp_nerfstudio.methods import METHODS
from nvp_nerfstudio.plots import plot_psnr_against_time
from nvp_nerfstudio.rendering import render_frame

CONSOLE = Console()


@dataclass
class BenchConfig(FitConfig):
    source: tyro.conf.OmitArgPrefixes[VideoSource] = VideoSource("sample:bikes")
    methods: Tuple[str, ...] = ("nvp",)
    """Methods of nvp_nerfstudio/methods.py to run one after another (`all`: every one of them)."""
    grid_backends: Tuple[GridBackend, ...] = ("auto",)
    """Grid backends each method runs with (auto: Triton on CUDA, numba on a CPU; tcnn only when named); methods
    without grid encodings run once."""
    batch_sizes: Optional[Tuple[int, ...]] = None
    """Batch sizes whose training throughput (forward + backward + AdamW step) is measured; None: 2^14-2^18
    on a CPU, 2^18-2^21 on CUDA."""
    throughput_steps: int = 3
    """Timed steps per batch size, after one warm-up step."""
    mlp_backends: Tuple[Literal["torch", "triton"], ...] = ("torch",)
    """Kernels NVP's modulated SIREN runs with, one run each (see ModulatedSirenConfig.backend: torch, or the
    fused Triton kernels); methods without it run once."""
    decode_size: Optional[Tuple[int, int]] = None
    """Width and height at which full-frame decoding speed is measured; None: the clip's own."""
    decode_frames: int = 20
    """Frames rendered for the decoding speed (after one warm-up frame)."""
    tf32: bool = False
    """Let CUDA matrix products use TF32 tensor cores (the MLPs; the paper trains in full fp32)."""
    output_dir: Path = Path("bench-results")
    # The run at hand, one of `methods` x `grid_backends` (set by main; other tools set them directly).
    method: tyro.conf.Suppress[str] = "nvp"
    grid_backend: tyro.conf.Suppress[GridBackend] = "auto"
    mlp_backend: tyro.conf.Suppress[Literal["torch", "triton"]] = "torch"


def peak_memory(config: BenchConfig) -> dict[str, float]:
    """Peak RSS (and CUDA memory) in MiB since the last reset_peak_memory()."""
    cuda = {"peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20} if is_cuda(config) else {}
    return {"peak_rss_mib": peak_rss_mib(), **cuda}


def reset_peak_memory(config: BenchConfig) -> None:
    """Start the peak-memory figures anew, so each run of a benchmark reports its own."""
    release_freed_memory()  # else the memory the last run freed would count as this run's resident set
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # Linux: resets VmHWM to the current RSS
    except OSError:
        pass  # elsewhere the figure stays the process's peak so far
    if is_cuda(config):
        torch.cuda.reset_peak_memory_stats()


def measure_throughput(config: BenchConfig, video: VideoFrames, shape: VideoShape) -> list[dict]:
    """Training (forward + backward + AdamW step) and inference (forward alone) samples/s per batch size."""
    rows = []
    batch_sizes = config.batch_sizes or tuple(1 << k for k in (range(18, 22) if is_cuda(config) else range(14, 19)))
    for batch in batch_sizes:
        reset_peak_memory(config)
        field_module = build_field(config, shape)
        sampler = sampler_for(config, video, field_module)
        train_steps = TrainSteps(config, field_module, sampler, batch, warm_up=True)
        start = time.perf_counter()
        samples = sum(train_steps() for _ in range(config.throughput_steps))
        seconds = (time.perf_counter() - start) / config.throughput_steps
        rate = samples / config.throughput_steps / seconds
        with torch.no_grad():
            xyt = sampler.coordinates(sampler.sample(batch)[0])
            field_module(xyt)
            synchronize(config)
            start = time.perf_counter()
            for _ in range(config.throughput_steps):
                field_module(xyt)
            synchronize(config)
            inference_rate = len(xyt) * config.throughput_steps / (time.perf_counter() - start)
        rows.append(
            {"batch": batch, "step_s": seconds, "samples_per_s": rate, "inference_samples_per_s": inference_rate, **peak_memory(config)}
        )
        CONSOLE.print(
            f"batch 2^{int(math.log2(batch))}: training {rate / 1e3:8.1f} k samples/s ({seconds * 1e3:.0f} ms a step), "
            f"inference {inference_rate / 1e3:8.1f} k samples/s"
        )
        del field_module, train_steps, sampler
    return rows


def step_breakdown(config: BenchConfig, video: VideoFrames, shape: VideoShape, batch: int) -> dict[str, float]:
    """Milliseconds per training step spent sampling, in each top-level part of the field's forward
    (encodings, MLP), in the rest of the forward and the loss, in backward and in the optimizer."""
    field_module = build_field(config, shape)
    optimizer = optimizer_for(field_module, config)
    sampler = sampler_for(config, video, field_module)
    parts = {
        f"{name}.{sub}" if isinstance(child, (torch.nn.ModuleDict, torch.nn.ModuleList)) else name: module
        for name, child in field_module.named_children()
        for sub, module in (child.named_children() if isinstance(child, (torch.nn.ModuleDict, torch.nn.ModuleList)) else [("", child)])
    }
    totals: dict[str, float] = defaultdict(float)
    started: dict[str, float] = {}

    def clock() -> float:
        synchronize(config)
        return time.perf_counter()

    def hook_pair(name: str):
        def before(*_):
            started[name] = clock()

        def after(*_):
            totals[f"forward: {name}"] += clock() - started[name]

        return before, after

    handles = []
    if not compiles_whole_field(config):  # a compiled forward runs as one graph: hooks would split it
        for name, module in parts.items():
            before, after = hook_pair(name)
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    steps = config.throughput_steps
    for step in range(steps + 1):  # step 0 warms up
        if step == 1:
            totals.clear()
            totals["sample"] = 0.0  # listed first
        start = clock()
        indices, rgb = sampler.sample(batch)
        xyt = sampler.coordinates(indices)
        sampled = clock()
        loss = reconstruction_loss(field_module(xyt), rgb)
        forward = clock()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = clock()
        optimizer.step()
        done = clock()
        totals["sample"] += sampled - start
        totals["forward: total"] += forward - sampled
        totals["backward"] += backward - forward
        totals["optimizer"] += done - backward
    for handle in handles:
        handle.remove()
    breakdown = {name: 1e3 * seconds / steps for name, seconds in totals.items()}
    CONSOLE.print(f"step of 2^{int(math.log2(batch))}: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in breakdown.items()))
    return breakdown


def decode_speed(config: BenchConfig, field_module: VideoField, video: VideoFrames) -> dict:
    """Full frames rendered per second at decode_size (default: the clip's), frames evenly spread in t."""
    width, height = config.decode_size or (video.width, video.height)
    chunk = render_chunk(config)
    render_frame(field_module, 0.0, height, width, chunk)
    synchronize(config)
    start = time.perf_counter()
    for i in range(config.decode_frames):
        render_frame(field_module, i / max(config.decode_frames - 1, 1), height, width, chunk)
    synchronize(config)
    fps = config.decode_frames / (time.perf_counter() - start)
    CONSOLE.print(f"decoding {width}x{height}: {fps:.1f} frames/s")
    return {"width": width, "height": height, "frames_per_s": fps}


def run_label(run: BenchConfig) -> str:
    kernels = [f"{run.grid_backend} grids"] if run.grid_backend != "auto" else []
    kernels += ["triton MLP"] if run.mlp_backend == "triton" else []
    return f"{run.method} ({', '.join(kernels)})" if kernels else run.method


def holds(config: Any, kind: type) -> bool:
    """Whether a (nested) field config holds a config of this kind."""
    if isinstance(config, kind):
        return True
    return is_dataclass(config) and any(holds(getattr(config, f.name), kind) for f in fields(config))


def expand_runs(config: BenchConfig) -> list[BenchConfig]:
    """One run per method, grid backend and MLP backend, in the order given; a method without grids (or
    without a modulated SIREN) runs once for those."""
    methods = tuple(METHODS) if config.methods == ("all",) else config.methods
    check_methods(methods, config)
    if not config.grid_backends:
        raise SystemExit("error: no grid backend given: choose from auto, torch, numba, triton, tcnn")
    if not config.mlp_backends:
        raise SystemExit("error: no MLP backend given: choose from torch, triton")
    return [
        replace(config, method=method, grid_backend=grids, mlp_backend=mlp)
        for method in methods
        for grids in (config.grid_backends if holds(METHODS[method].field, GridEncodingConfig) else ("auto",))
        for mlp in (config.mlp_backends if holds(METHODS[method].field, ModulatedSirenConfig) else ("torch",))
    ]


def preflight(run: BenchConfig, shape: VideoShape) -> None:
    """Build the run's field and query it once, so a backend that cannot run here stops the benchmark
    before any other run spends its time."""
    if run.cuda_graph and not is_cuda(run):
        raise SystemExit(f"error: --cuda-graph needs CUDA; {run.device} has no CUDA graphs: leave the flag off")
    try:
        build_field(replace(run, compile=False), shape)(torch.rand(4, 3, device=run.device))
    except (RuntimeError, ImportError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SystemExit(f"error: {run_label(run)} cannot run on {run.device}: {message}") from None


def run_benchmark(run: BenchConfig, video: VideoFrames, shape: VideoShape) -> dict:
    """Every figure of one method with one grid backend."""
    CONSOLE.rule(run_label(run))
    reset_peak_memory(run)
    # The training run goes first so the peak memory it leaves is that of training at its batch size.
    if run.seconds > 0 or run.steps:
        curve, trained = psnr_against_time(run, video, shape)
    else:
        curve, trained = [], build_field(run, shape)
    training_memory = peak_memory(run)
    summary = {
        "label": run_label(run),
        "method": run.method,
        "grid_backend": run.grid_backend,
        "parameters": sum(p.numel() for p in trained.parameters()),
        **training_memory,
        "psnr_curve": curve,
        "decode": decode_speed(run, trained, video),
        "breakdown": step_breakdown(run, video, shape, training_batch(run)),
        "throughput": measure_throughput(run, video, shape),
    }
    del trained
    return summary


def exponent(batch: int) -> str:
    return f"2^{int(math.log2(batch))}" if batch & (batch - 1) == 0 else str(batch)


def report_lines(config: BenchConfig, summary: dict) -> list[str]:
    """The markdown report: one row per run in each table."""
    runs = summary["runs"]
    batch = summary["breakdown_batch"]
    decode = runs[0]["decode"]
    settings = [
        f"{exponent(batch)} pixels a step",
        f"{config.steps} steps" if config.steps else f"{config.seconds:g} s of training" if config.seconds > 0 else "no training run",
        *(["TF32"] if config.tf32 else []),
        *([f"{config.mlp_precision} MLP"] if config.mlp_precision != "auto" else []),
        *(["compiled (outside the clock)"] if config.compile else []),
        *(["CUDA graph"] if config.cuda_graph else []),
    ]
    memory_header = "peak RSS (MiB)" + (" | peak CUDA (MiB)" if "peak_cuda_mib" in runs[0] else "")

    def memory(row: dict) -> str:
        return f"{row['peak_rss_mib']:.0f}" + (f" | {row['peak_cuda_mib']:.0f}" if "peak_cuda_mib" in row else "")

    def at_batch(run: dict, key: str) -> str:
        rows = [row for row in run["throughput"] if row["batch"] == batch]
        return f"{rows[0][key] / 1e3:.1f} k" if rows else "-"

    lines = [
        f"# Benchmark on {summary['clip']} ({summary['device']})",
        "",
        "; ".join(settings) + f"; clip {summary['clip_mib']:.0f} MiB as uint8. Peak memory: during training "
        "(the PSNR run) in the first table, per batch size in the throughput table. PSNR in the first table: "
        "over every frame.",
        "",
        f"| run | parameters | PSNR (dB) | steps | train samples/s ({exponent(batch)}) | inference samples/s ({exponent(batch)}) "
        f"| decoding {decode['width']}x{decode['height']} (frames/s) | {memory_header} |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if "peak_cuda_mib" in runs[0] else ""),
    ]
    for run in runs:
        last = run["psnr_curve"][-1] if run["psnr_curve"] else {"psnr": None, "steps": "-"}
        final_psnr = "-" if last["psnr"] is None else f"{last['psnr']:.2f}"
        lines.append(
            f"| {run['label']} | {run['parameters'] / 1e6:.2f} M | {final_psnr} | {last['steps']} | "
            f"{at_batch(run, 'samples_per_s')} | {at_batch(run, 'inference_samples_per_s')} | "
            f"{run['decode']['frames_per_s']:.1f} | {memory(run)} |"
        )
    # Each run's breakdown lists sample, its own forward parts, forward: total, backward, optimizer.
    forward_parts = list(dict.fromkeys(name for run in runs for name in run["breakdown"] if name.startswith("forward: ")))
    forward_parts.remove("forward: total")
    parts = ["sample", *forward_parts, "forward: total", "backward", "optimizer"]
    lines += [
        "",
        f"One training step of {exponent(batch)} pixels (ms; forward parts are the field's top-level modules):",
        "",
        "| run | " + " | ".join(parts) + " | step |",
        "|---|" + "---|" * (len(parts) + 1),
        *[
            f"| {run['label']} | "
            + " | ".join(f"{run['breakdown'][name]:.1f}" if name in run["breakdown"] else "-" for name in parts)
            + f" | {sum(run['breakdown'][name] for name in ('sample', 'forward: total', 'backward', 'optimizer')):.1f} |"
            for run in runs
        ],
        "",
        "Throughput over batch sizes (k samples/s, training / inference; peak RSS MiB):",
        "",
        "| batch | " + " | ".join(run["label"] for run in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for batch_size in sorted({row["batch"] for run in runs for row in run["throughput"]}):
        cells = []
        for run in runs:
            row = next((row for row in run["throughput"] if row["batch"] == batch_size), None)
            cells.append(
                f"{row['samples_per_s'] / 1e3:.1f} / {row['inference_samples_per_s'] / 1e3:.1f} ({row['peak_rss_mib']:.0f})" if row else "-"
            )
        lines.append(f"| {exponent(batch_size)} | " + " | ".join(cells) + " |")
    curves = [run for run in runs if run["psnr_curve"]]
    if curves and not config.steps:
        budgets = sorted({p["budget_s"] for run in curves for p in run["psnr_curve"]})
        lines += [
            "",
            "PSNR (dB) against training time (evaluation not counted; the last point over every frame, those before "
            + (f"over {config.eval_frames} evenly spaced frames):" if config.eval_frames else "too):"),
            "",
            "| run | " + " | ".join(f"{b:g} s" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets),
        ]
        for run in curves:
            by_budget = {p["budget_s"]: p["psnr"] for p in run["psnr_curve"]}
            lines.append(f"| {run['label']} | " + " | ".join(f"{by_budget[b]:.2f}" if b in by_budget else "-" for b in budgets) + " |")
    elif curves:
        lines += ["", "PSNR (dB) against training time:", "", "| run | seconds | steps | PSNR |", "|---|---|---|---|"]
        lines += [f"| {run['label']} | {p['seconds']:.0f} | {p['steps']} | {p['psnr']:.2f} |" for run in curves for p in run["psnr_curve"]]
    return lines


def write_report(config: BenchConfig, summary: dict) -> None:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    (out / "bench.md").write_text("\n".join(report_lines(config, summary)) + "\n")
    written = [out / "bench.md", out / "bench.json"]
    if any(run["psnr_curve"] for run in summary["runs"]):
        curves = {run["label"]: run["psnr_curve"] for run in summary["runs"] if run["psnr_curve"]}
        plot_psnr_against_time(out / "psnr_vs_time.png", f"{summary['clip']} ({summary['device']})", curves)
        written.append(out / "psnr_vs_time.png")
    CONSOLE.print(f"Wrote {', '.join(map(str, written))}")


@command()
def main(config: BenchConfig) -> dict:
    runs = expand_runs(config)
    torch.backends.cuda.matmul.allow_tf32 = config.tf32
    video = config.source.load()
    shape = VideoShape(video.num_frames, video.height, video.width)
    for run in runs:
        preflight(run, shape)
    device_name = torch.cuda.get_device_name() if is_cuda(config) else f"CPU, {torch.get_num_threads()} threads"
    CONSOLE.print(f"Benchmarking {', '.join(map(run_label, runs))} on {video} ({device_name})")
    summary = {
        "clip": video.clip_name,
        "device": device_name,
        "compiled": config.compile,
        "clip_mib": video.frames.numel() / 2**20,
        "breakdown_batch": training_batch(config),
        "runs": [run_benchmark(run, video, shape) for run in runs],
    }
    write_report(config, summary)
    return summary


def entrypoint() -> None:
    main(parse(BenchConfig))


if __name__ == "__main__":
    entrypoint()
