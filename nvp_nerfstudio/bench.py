"""Benchmark of video fields, one method and grid backend after another in one run: training and inference
throughput over batch sizes, time per step by component, decode frames/s, peak memory, PSNR against wall time.

Runs on the core alone (torch, numpy, av, tyro; matplotlib for the plot), so it also runs on a GPU
machine without nerfstudio. Figures are printed and written to the output folder as one markdown report
(a row per run), JSON and a PSNR-against-time plot with a curve per run.
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

from method_configs.fields import ADAM_BETAS, ADAM_EPS, ADAM_WEIGHT_DECAY, METHODS
from nvp_nerfstudio.data.sampler import FramePixelSampler
from nvp_nerfstudio.data.video import FrameSelection, VideoFrames, VideoInputError, load_video
from nvp_nerfstudio.encodings.grid import GridBackend, GridEncoding, GridEncodingConfig
from nvp_nerfstudio.fields.base import VideoField, VideoShape
from nvp_nerfstudio.fields.modulated_mlp import ModulatedSirenConfig
from nvp_nerfstudio.memory import release_freed_memory
from nvp_nerfstudio.render import psnr, render_frame

CONSOLE = Console()


@dataclass
class BenchConfig:
    data: str = "sample:bikes"
    """Video file, frame folder or sample:NAME."""
    methods: Tuple[str, ...] = ("nvp",)
    """Methods of method_configs/fields.py to run one after another (`all`: every one of them)."""
    grid_backends: Tuple[GridBackend, ...] = ("auto",)
    """Grid backends each method runs with (auto: tcnn, else Triton on CUDA; numba on a CPU); methods
    without grid encodings run once."""
    downscale: int = 1
    max_frames: Optional[int] = None
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    batch_sizes: Optional[Tuple[int, ...]] = None
    """Batch sizes whose training throughput (forward + backward + AdamW step) is measured; None: 2^14-2^18
    on a CPU, 2^18-2^21 on CUDA."""
    throughput_steps: int = 3
    """Timed steps per batch size, after one warm-up step."""
    tf32: bool = False
    """Let CUDA matrix products use TF32 tensor cores (the MLPs; the paper trains in full fp32)."""
    mlp_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Arithmetic of NVP's modulated SIREN (see ModulatedSirenConfig.precision); other fields ignore it."""
    mlp_backends: Tuple[Literal["torch", "triton"], ...] = ("torch",)
    """Kernels NVP's modulated SIREN runs with, one run each (see ModulatedSirenConfig.backend: torch, or the
    fused Triton kernels); methods without it run once."""
    cuda_graph: bool = False
    """Record one training step (sampling, forward, loss, backward, AdamW) as a CUDA graph and replay it: no
    Python between kernels. CUDA only; not with an inpainting mask (its batches change shape)."""
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
    """Frames, evenly spaced, whose mean PSNR makes each point before the last (0: every frame); the last point,
    the run's figure, is over every frame: a subset reads high on clips with scene cuts."""
    lr: Optional[float] = None
    """Initial learning rate; None: the method's (cosine decay to a thousandth of it)."""
    weight_decay: float = ADAM_WEIGHT_DECAY
    seed: int = 0
    output_dir: Path = Path("bench-results")
    # The run at hand, one of `methods` x `grid_backends` (set by main; other tools set them directly).
    method: tyro.conf.Suppress[str] = "nvp"
    grid_backend: tyro.conf.Suppress[GridBackend] = "auto"
    mlp_backend: tyro.conf.Suppress[Literal["torch", "triton"]] = "torch"


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started, or since the last reset_peak_memory()."""
    try:
        with open("/proc/self/status") as status:  # VmHWM, unlike ru_maxrss, can be reset
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
    field_config = with_nested(field_config, ModulatedSirenConfig, precision=config.mlp_precision, backend=config.mlp_backend)
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
    lr = initial_lr(config)
    if config.cuda_graph:  # a graph replays AdamW's kernels with their arguments: the rate must be a tensor
        lr = torch.tensor(lr, device=config.device)
    return torch.optim.AdamW(
        field_module.parameters(), lr, ADAM_BETAS, ADAM_EPS, config.weight_decay, fused=True, capturable=config.cuda_graph
    )


def step_on_batch(
    field_module: VideoField, optimizer: torch.optim.Optimizer, sampler: FramePixelSampler, batch: int
) -> tuple[torch.Tensor, int]:
    """One step on about `batch` pixels, left running on the device: its loss, and how many pixels it
    trained on (whole-frame batches round)."""
    indices, rgb = sampler.sample(batch)
    loss = torch.nn.functional.mse_loss(field_module(sampler.coordinates(indices)), rgb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, len(indices)


class TrainSteps:
    """Training steps of one field at a fixed batch size: eager, or one step recorded as a CUDA graph and
    replayed (config.cuda_graph). With warm_up, a first step (compiling kernels, recording the graph) runs
    outside any clock, and the field and AdamW are then put back as they were."""

    def __init__(self, config: BenchConfig, field_module: VideoField, sampler: FramePixelSampler, batch: int, warm_up: bool) -> None:
        self.config, self.field_module, self.sampler, self.batch = config, field_module, sampler, batch
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        if config.cuda_graph and (not is_cuda(config) or sampler.missing is not None):
            raise ValueError("--cuda-graph needs CUDA and batches of one shape (no inpainting mask)")
        self.optimizer = optimizer_for(field_module, config)
        if not (warm_up or config.cuda_graph):
            return
        initial = {name: value.clone() for name, value in field_module.state_dict().items()}
        start = time.perf_counter()
        if config.cuda_graph:
            self.record_graph()
        else:
            self()
        seconds = time.perf_counter() - start
        if seconds > 1.0:  # compiling: worth a word
            CONSOLE.print(f"{config.method}: warming up took {seconds:.0f} s (not counted as training time)")
        field_module.load_state_dict(initial)
        if self.graph is None:
            self.optimizer = optimizer_for(field_module, config)
        else:  # the graph holds AdamW's state tensors: start them over in place
            for state in self.optimizer.state.values():
                for value in state.values():
                    value.zero_()

    def record_graph(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # eager steps first: Triton compiles, cuBLAS picks kernels, AdamW makes its state
            for _ in range(2):
                step_on_batch(self.field_module, self.optimizer, self.sampler, self.batch)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(self.sampler.generator)  # each replay draws new pixels
        with torch.cuda.graph(self.graph):
            self.loss, self.samples = step_on_batch(self.field_module, self.optimizer, self.sampler, self.batch)

    def __call__(self, lr: Optional[float] = None) -> int:
        """One step (at learning rate lr, if given); returns how many pixels it trained on."""
        for group in self.optimizer.param_groups if lr is not None else ():
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        if self.graph is not None:
            self.graph.replay()
            loss, samples = self.loss, self.samples
        else:
            loss, samples = step_on_batch(self.field_module, self.optimizer, self.sampler, self.batch)
        loss.item()  # synchronises CUDA, so wall times are honest
        return samples


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
    final_frames: Optional[Sequence[int]] = None,
) -> tuple[list[dict], VideoField]:
    """PSNR points of a run trained on `train_frames` (default: all) for config.seconds of wall time
    (or config.steps steps), scored on `eval_frames` (default: config.eval_frames of them) and, the last
    point, on `final_frames` (default: every frame); and the trained field."""
    field_module = build_field(config, shape)
    sampler = sampler_for(config, video, field_module, train_frames)
    batch = training_batch(config)
    chunk = render_chunk(config)
    # Compiling (torch.compile; Triton's kernels on CUDA) happens outside the clock.
    train_steps = TrainSteps(config, field_module, sampler, batch, warm_up=config.compile or is_cuda(config))
    if eval_frames is None:
        eval_frames = evenly_spaced(range(video.num_frames), config.eval_frames)
    final_frames = list(range(video.num_frames)) if final_frames is None else list(final_frames)
    points, trained, steps, samples, next_eval = [], 0.0, 0, 0, config.eval_every

    def done_fraction() -> float:
        return steps / config.steps if config.steps else trained / config.seconds

    columns = (TextColumn(f"training {config.method} {{task.fields[psnr]}}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=CONSOLE) as progress:
        task = progress.add_task("train", total=1.0, psnr="")
        while done_fraction() < 1.0:
            # Cosine decay over the run, as the paper's schedule.
            lr = initial_lr(config) * (1e-3 + 0.5 * (1 - 1e-3) * (1 + math.cos(math.pi * done_fraction())))
            start = time.perf_counter()
            samples += train_steps(lr)
            trained += time.perf_counter() - start
            steps += 1
            if trained >= next_eval or done_fraction() >= 1.0:
                frames = final_frames if done_fraction() >= 1.0 else eval_frames
                score = evaluate(field_module, video, frames, chunk)
                # The budget this point stands for (the clock overshoots it by up to a step); none in steps mode.
                budget = None if config.steps else min(next_eval, config.seconds)
                points.append(
                    {"seconds": trained, "budget_s": budget, "steps": steps, "samples": samples, "psnr": score, "frames": len(frames)}
                )
                next_eval += config.eval_every
                progress.update(task, completed=min(done_fraction(), 1.0), psnr=f"{score:.2f} dB at {trained:.0f} s")
    CONSOLE.print(
        f"{config.method}: PSNR {points[-1]['psnr']:.2f} dB after {trained:.0f} s ({steps} steps of {batch}), "
        f"mean of {len(final_frames)} frames"
    )
    return points, field_module


def run_label(run: BenchConfig) -> str:
    kernels = [f"{run.grid_backend} grids"] if run.grid_backend != "auto" else []
    kernels += ["triton MLP"] if run.mlp_backend == "triton" else []
    return f"{run.method} ({', '.join(kernels)})" if kernels else run.method


def check_methods(names: Sequence[str]) -> None:
    """One error line for method names that method_configs/fields.py does not have."""
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise SystemExit(f"error: unknown method(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(METHODS)}")


def holds(config: Any, kind: type) -> bool:
    """Whether a (nested) field config holds a config of this kind."""
    if isinstance(config, kind):
        return True
    return is_dataclass(config) and any(holds(getattr(config, f.name), kind) for f in fields(config))


def expand_runs(config: BenchConfig) -> list[BenchConfig]:
    """One run per method, grid backend and MLP backend, in the order given; a method without grids (or
    without a modulated SIREN) runs once for those."""
    methods = tuple(METHODS) if config.methods == ("all",) else config.methods
    check_methods(methods)
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


def plot_psnr_against_time(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for run in summary["runs"]:
        if run["psnr_curve"]:
            axis.plot([p["seconds"] for p in run["psnr_curve"]], [p["psnr"] for p in run["psnr_curve"]], marker="o", label=run["label"])
    axis.set(xlabel="training time (s)", ylabel="PSNR (dB)", title=f"{summary['clip']} ({summary['device']})")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(config: BenchConfig, summary: dict) -> None:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    (out / "bench.md").write_text("\n".join(report_lines(config, summary)) + "\n")
    written = [out / "bench.md", out / "bench.json"]
    if any(run["psnr_curve"] for run in summary["runs"]):
        plot_psnr_against_time(summary, out / "psnr_vs_time.png")
        written.append(out / "psnr_vs_time.png")
    CONSOLE.print(f"Wrote {', '.join(map(str, written))}")


def main(config: BenchConfig) -> dict:
    runs = expand_runs(config)
    torch.backends.cuda.matmul.allow_tf32 = config.tf32
    try:
        video = load_video(config.data, FrameSelection(max_frames=config.max_frames, downscale=config.downscale))
    except VideoInputError as err:
        raise SystemExit(f"error: {err}") from None
    shape = VideoShape(video.num_frames, video.height, video.width)
    for run in runs:
        preflight(run, shape)
    device_name = torch.cuda.get_device_name() if is_cuda(config) else f"CPU, {torch.get_num_threads()} threads"
    CONSOLE.print(f"Benchmarking {', '.join(map(run_label, runs))} on {video} ({device_name})")
    summary = {
        "clip": f"{Path(video.source).name} {video.width}x{video.height}x{video.num_frames}",
        "device": device_name,
        "compiled": config.compile,
        "clip_mib": video.frames.numel() / 2**20,
        "breakdown_batch": training_batch(config),
        "runs": [run_benchmark(run, video, shape) for run in runs],
    }
    write_report(config, summary)
    return summary


def entrypoint() -> None:
    main(tyro.cli(BenchConfig))


if __name__ == "__main__":
    entrypoint()
