"""Benchmark of a video field: training throughput over batch sizes, time per step by component, decode
frames/s, peak memory, PSNR against wall time.

Runs on the core alone (torch, numpy, av, tyro; matplotlib for the plot), so it also runs on a GPU
machine without nerfstudio. Figures are printed and written to the output folder as markdown, JSON
and a PNG plot.
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections import defaultdict
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Tuple

import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from method_configs.fields import ADAM_BETAS, ADAM_EPS, METHODS
from nvp_nerfstudio.data.sampler import FramePixelSampler
from nvp_nerfstudio.data.video import FrameSelection, VideoFrames, load_video
from nvp_nerfstudio.encodings.grid import GridEncoding, GridEncodingConfig
from nvp_nerfstudio.fields.base import VideoField, VideoShape
from nvp_nerfstudio.fields.modulated_mlp import ModulatedSirenConfig
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
    batch_sizes: Optional[Tuple[int, ...]] = None
    """Batch sizes whose training throughput (forward + backward + AdamW step) is measured; None: 2^14-2^18
    on a CPU, 2^18-2^21 on CUDA."""
    throughput_steps: int = 3
    """Timed steps per batch size, after one warm-up step."""
    grid_backend: Literal["auto", "torch", "numba", "triton", "tcnn"] = "auto"
    """Backend of every grid encoding of the field (auto: tcnn, else Triton on CUDA; numba on a CPU)."""
    tf32: bool = False
    """Let CUDA matrix products use TF32 tensor cores (the MLPs; the paper trains in full fp32)."""
    mlp_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Arithmetic of NVP's modulated SIREN (see ModulatedSirenConfig.precision); other fields ignore it."""
    compile: bool = False
    """Run the field through torch.compile: all of it on a CPU or with the torch grid path (the numba kernels
    are torch operators; the step breakdown then times the compiled forward as one), else, with the Triton
    or tcnn kernels that Inductor cannot trace, its grid-free parts (the MLP)."""
    decode_size: Optional[Tuple[int, int]] = None
    """Width and height at which full-frame decoding speed is measured; None: the clip's own."""
    decode_frames: int = 20
    """Frames rendered for the decoding speed (after one warm-up frame)."""
    render_chunk: Optional[int] = None
    """Pixels per field query when rendering frames; None: 2^16 on a CPU, 2^22 on CUDA."""
    seconds: float = 300.0
    """Wall-clock training budget of the PSNR-against-time run (0 skips it)."""
    steps: Optional[int] = None
    """Train this many steps instead of for `seconds` (the learning-rate schedule then follows steps)."""
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


def is_cuda(config: BenchConfig) -> bool:
    return torch.device(config.device).type == "cuda"


def render_chunk(config: BenchConfig) -> int:
    """Pixels per field query when rendering whole frames."""
    return config.render_chunk or (1 << 22 if is_cuda(config) else 1 << 16)


def synchronize(config: BenchConfig) -> None:
    if is_cuda(config):
        torch.cuda.synchronize()


def with_nested(config: Any, kind: type, **changes: Any) -> Any:
    """A copy of a (nested) field config in which every config of the given kind has these changes."""
    if isinstance(config, kind):
        return replace(config, **changes)
    if not is_dataclass(config):
        return config
    nested = {f.name: getattr(config, f.name) for f in fields(config) if is_dataclass(getattr(config, f.name))}
    return replace(config, **{name: with_nested(value, kind, **changes) for name, value in nested.items()})


def build_field(config: BenchConfig, shape: VideoShape) -> VideoField:
    """The field on its device, compiled in place when asked."""
    torch.manual_seed(config.seed)
    field_config = with_nested(METHODS[config.method].field, GridEncodingConfig, backend=config.grid_backend)
    field_config = with_nested(field_config, ModulatedSirenConfig, precision=config.mlp_precision)
    field_module = field_config.setup(shape=shape).to(config.device)
    if config.compile:
        compile_in_place(field_module, whole=compiles_whole_field(config))
    return field_module


def compiles_whole_field(config: BenchConfig) -> bool:
    """Inductor cannot trace the Triton or tcnn grid kernels: with those, only the grid-free parts compile."""
    return config.compile and not (is_cuda(config) and config.grid_backend != "torch")


def compile_in_place(field_module: VideoField, whole: bool) -> None:
    """torch.compile the field's forward, or that of its children without grids; state-dict keys stay as they are."""
    if whole:
        field_module.forward = torch.compile(field_module.forward, dynamic=False)
        return
    for child in field_module.children():
        if not any(isinstance(module, GridEncoding) for module in child.modules()):
            child.forward = torch.compile(child.forward, dynamic=False)


def sampler_for(
    config: BenchConfig, video: VideoFrames, field_module: VideoField, frames: Optional[Sequence[int]] = None
) -> FramePixelSampler:
    """Training batches from the given frames (default: all), in the batch mode the field trains in,
    never from the video's missing pixels (inpainting)."""
    frames = range(video.num_frames) if frames is None else frames
    return FramePixelSampler(video.frames, frames, config.device, config.seed, field_module.trains_on_whole_frames, video.missing)


def initial_lr(config: BenchConfig) -> float:
    return config.lr or METHODS[config.method].lr


def optimizer_for(field_module: VideoField, config: BenchConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        field_module.parameters(), initial_lr(config), ADAM_BETAS, ADAM_EPS, config.weight_decay, fused=True
    )


def train_step(field_module: VideoField, optimizer: torch.optim.Optimizer, sampler: FramePixelSampler, batch: int) -> int:
    """One step on about `batch` pixels; returns how many it trained on (whole-frame batches round)."""
    indices, rgb = sampler.sample(batch)
    loss = torch.nn.functional.mse_loss(field_module(sampler.coordinates(indices)), rgb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss.item()  # synchronises CUDA, so wall times are honest
    return len(indices)


def measure_throughput(config: BenchConfig, video: VideoFrames, shape: VideoShape) -> list[dict]:
    rows = []
    batch_sizes = config.batch_sizes or tuple(1 << k for k in (range(18, 22) if is_cuda(config) else range(14, 19)))
    for batch in batch_sizes:
        field_module = build_field(config, shape)
        optimizer = optimizer_for(field_module, config)
        sampler = sampler_for(config, video, field_module)
        train_step(field_module, optimizer, sampler, batch)
        start = time.perf_counter()
        samples = sum(train_step(field_module, optimizer, sampler, batch) for _ in range(config.throughput_steps))
        seconds = (time.perf_counter() - start) / config.throughput_steps
        rate = samples / config.throughput_steps / seconds
        rows.append({"batch": batch, "step_s": seconds, "samples_per_s": rate, "peak_rss_mib": peak_rss_mib()})
        CONSOLE.print(f"batch 2^{int(math.log2(batch))}: {rate / 1e3:8.1f} k samples/s ({seconds * 1e3:.0f} ms a step)")
        del field_module, optimizer, sampler
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
        loss = torch.nn.functional.mse_loss(field_module(xyt), rgb)
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


def evaluate(field_module: VideoField, video: VideoFrames, frames: list[int], chunk: int) -> float:
    last = max(video.num_frames - 1, 1)
    scores = [
        psnr(render_frame(field_module, i / last, video.height, video.width, chunk).cpu(), video.frames[i].float() / 255.0)
        for i in frames
    ]
    return sum(scores) / len(scores)


def training_batch(config: BenchConfig) -> int:
    return config.train_batch or (1 << 20 if is_cuda(config) else 1 << 14)


def evenly_spaced(frames: Sequence[int], count: int) -> list[int]:
    """`count` of the given frames, spread evenly from the first to the last (all of them when count <= 0)."""
    frames = list(frames)
    if count <= 0 or count >= len(frames):
        return frames
    return [frames[round(i * (len(frames) - 1) / max(count - 1, 1))] for i in range(count)]


def psnr_against_time(
    config: BenchConfig,
    video: VideoFrames,
    shape: VideoShape,
    train_frames: Optional[Sequence[int]] = None,
    eval_frames: Optional[Sequence[int]] = None,
) -> tuple[list[dict], VideoField]:
    """PSNR points of a run trained on `train_frames` (default: all) for config.seconds of wall time
    (or config.steps steps), scored on `eval_frames` (default: config.eval_frames of them), and the trained field."""
    field_module = build_field(config, shape)
    optimizer = optimizer_for(field_module, config)
    sampler = sampler_for(config, video, field_module, train_frames)
    batch = training_batch(config)
    chunk = render_chunk(config)
    if config.compile:  # compile outside the clock: one step, then back to the initial weights and optimizer
        initial = {name: value.clone() for name, value in field_module.state_dict().items()}
        start = time.perf_counter()
        train_step(field_module, optimizer, sampler, batch)
        CONSOLE.print(f"compiling took {time.perf_counter() - start:.0f} s (not counted as training time)")
        field_module.load_state_dict(initial)
        optimizer = optimizer_for(field_module, config)
    if eval_frames is None:
        eval_frames = evenly_spaced(range(video.num_frames), config.eval_frames)
    points, trained, steps, samples, next_eval = [], 0.0, 0, 0, config.eval_every

    def done_fraction() -> float:
        return steps / config.steps if config.steps else trained / config.seconds

    columns = (TextColumn(f"training {config.method} {{task.fields[psnr]}}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=CONSOLE) as progress:
        task = progress.add_task("train", total=1.0, psnr="")
        while done_fraction() < 1.0:
            # Cosine decay over the run, as the paper's schedule.
            lr = initial_lr(config) * (1e-3 + 0.5 * (1 - 1e-3) * (1 + math.cos(math.pi * done_fraction())))
            for group in optimizer.param_groups:
                group["lr"] = lr
            start = time.perf_counter()
            samples += train_step(field_module, optimizer, sampler, batch)
            trained += time.perf_counter() - start
            steps += 1
            if trained >= next_eval or done_fraction() >= 1.0:
                score = evaluate(field_module, video, eval_frames, chunk)
                points.append({"seconds": trained, "steps": steps, "samples": samples, "psnr": score})
                next_eval += config.eval_every
                progress.update(task, completed=min(done_fraction(), 1.0), psnr=f"{score:.2f} dB at {trained:.0f} s")
    CONSOLE.print(
        f"{config.method}: PSNR {points[-1]['psnr']:.2f} dB after {trained:.0f} s ({steps} steps of {batch}), "
        f"mean of {len(eval_frames)} frames"
    )
    return points, field_module


def write_report(config: BenchConfig, summary: dict) -> None:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    decode = summary["decode"]
    lines = [
        f"# {config.method} on {summary['clip']} ({summary['device']}; grid backend {config.grid_backend}"
        f"{', TF32' if config.tf32 else ''}{'' if config.mlp_precision == 'auto' else f', {config.mlp_precision} MLP'}"
        f"{', compiled' if config.compile else ''})",
        "",
        f"{summary['parameters'] / 1e6:.2f} M parameters; clip {summary['clip_mib']:.0f} MiB as uint8; "
        f"peak RSS {summary['peak_rss_mib']:.0f} MiB after the PSNR-against-time run (before the throughput sweep)"
        + (f"; peak CUDA memory {summary['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in summary else ""),
        "",
        f"Decoding {decode['width']}x{decode['height']} frames: {decode['frames_per_s']:.1f} frames/s",
        "",
        f"| time per step of 2^{int(math.log2(summary['breakdown_batch']))} | ms |",
        "|---|---|",
        *[f"| {name} | {ms:.1f} |" for name, ms in summary["breakdown"].items()],
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
    torch.backends.cuda.matmul.allow_tf32 = config.tf32
    video = load_video(config.data, FrameSelection(max_frames=config.max_frames, downscale=config.downscale))
    shape = VideoShape(video.num_frames, video.height, video.width)
    device_name = torch.cuda.get_device_name() if torch.device(config.device).type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    CONSOLE.print(f"{config.method} on {video} ({device_name})")
    # The training run goes first so the peak memory it leaves is that of training at its batch size.
    if config.seconds > 0 or config.steps:
        curve, trained = psnr_against_time(config, video, shape)
    else:
        curve, trained = [], build_field(config, shape)
    summary = {
        "clip": f"{Path(video.source).name} {video.width}x{video.height}x{video.num_frames}",
        "device": device_name,
        "compiled": config.compile,
        "parameters": sum(p.numel() for p in trained.parameters()),
        "clip_mib": video.frames.numel() / 2**20,
        "peak_rss_mib": peak_rss_mib(),
        **({"peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20} if is_cuda(config) else {}),
        "psnr_curve": curve,
        "decode": decode_speed(config, trained, video),
        "breakdown_batch": training_batch(config),
        "breakdown": step_breakdown(config, video, shape, training_batch(config)),
        "throughput": measure_throughput(config, video, shape),
    }
    write_report(config, summary)


def entrypoint() -> None:
    main(tyro.cli(BenchConfig))


if __name__ == "__main__":
    entrypoint()
