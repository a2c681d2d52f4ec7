"""The one training loop of a video field in the core: the method's field, batches of pixels drawn
uniformly from the known ones, mean squared error (plus a rate term for a field trained for rate: rate.py),
AdamW (ADAM_BETAS, ADAM_EPS) and a cosine decay of the learning rate to a thousandth over the run.
`nvp-bench`, `nvp-compare` and `nvp-long` train with it; the
nerfstudio method (plugin/) takes its batch sizes, loss, optimiser and schedule from here, and a test checks
that both give the same field after the same steps from the same seed.

Core module: no nerfstudio.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal, Optional, Sequence

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from nvp_nerfstudio.data.sampler import FramePixelSampler
from nvp_nerfstudio.data.video import VideoFrames
from nvp_nerfstudio.encodings.grid import GridBackend, GridEncoding, GridEncodingConfig
from nvp_nerfstudio.fields.base import VideoField, VideoFieldConfig, VideoShape
from nvp_nerfstudio.fields.modulated_mlp import ModulatedSirenConfig
from nvp_nerfstudio.methods import ADAM_BETAS, ADAM_EPS, ADAM_WEIGHT_DECAY, METHODS
from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.rate import parameter_groups, rate_loss, set_training_progress, target_miss
from nvp_nerfstudio.rendering import render_frame

CONSOLE = Console()
CPU_BATCH = 1 << 14  # on a CPU, more steps beat bigger batches at equal time
CUDA_BATCH = 1 << 20  # the paper's setting (1,245,184) rounded to a power of two
FINAL_LR_FRACTION = 1e-3  # the paper's cosine decay, from 1e-2 to 1e-5


@dataclass
class FitConfig:
    """One training run of one method's field."""

    method: str = "nvp"
    """A row of nvp_nerfstudio/methods.py."""
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    mlp_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Arithmetic of NVP's modulated SIREN (see ModulatedSirenConfig.precision); other fields ignore it."""
    cuda_graph: bool = False
    """Record one training step (sampling, forward, loss, backward, AdamW) as a CUDA graph and replay it: no
    Python between kernels. CUDA only; not with an inpainting mask (its batches change shape), for a field trained
    for rate (its quantisation changes mode during the run) or for one built per shot on a clip with cuts."""
    compile: bool = False
    """Run the field through torch.compile: all of it on a CPU or with the torch grid path (the numba kernels
    are torch operators; the step breakdown then times the compiled forward as one), else, with the Triton
    or tcnn kernels that Inductor cannot trace, its grid-free parts (the MLP)."""
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
    grid_backend: GridBackend = "auto"
    mlp_backend: Literal["torch", "triton"] = "torch"
    lmbda: Optional[float] = None
    """For methods trained for rate (nvp-c): the rate's weight in the loss (RateConfig.lmbda); None: the method's.
    Other methods train as they are."""
    target_bpp: Optional[float] = None
    """For methods trained for rate: rate control toward this many bits per pixel (RateConfig.target_bpp)."""
    ste_from: Optional[float] = None
    """For methods trained for rate: the fraction of the run after which training rounds the latents instead of
    adding noise (RateConfig.ste_from); None: the method's."""


def cosine_lr_factor(progress: float, final_fraction: float = FINAL_LR_FRACTION) -> float:
    """Learning rate over its initial value at `progress` in [0, 1] of the run: cosine decay to final_fraction, then flat."""
    progress = min(max(progress, 0.0), 1.0)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


def default_batch(device: torch.device | str) -> int:
    """Pixels per training step when none is given."""
    return CUDA_BATCH if torch.device(device).type == "cuda" else CPU_BATCH


def reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(prediction, target)


def training_losses(field_module: VideoField, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The terms of a step's loss: the reconstruction, and for a field trained for rate its rate term (rate.py),
    which reads the quantised latents of the forward that gave `prediction`."""
    losses = {"rgb_loss": reconstruction_loss(prediction, target)}
    rate = rate_loss(field_module)
    if rate is not None:
        losses["rate_loss"] = rate
    return losses


def warn_of_a_missed_target(field_module: VideoField) -> None:
    """The end of a run under rate control: one warning line if it ended off its target (rate.target_miss)."""
    miss = target_miss(field_module)
    if miss is not None:
        CONSOLE.print(miss, style="yellow", markup=False, soft_wrap=True)


def is_cuda(config: FitConfig) -> bool:
    return torch.device(config.device).type == "cuda"


def render_chunk(config: FitConfig) -> int:
    """Pixels per field query when rendering whole frames."""
    return config.render_chunk or (1 << 22 if is_cuda(config) else 1 << 16)


def synchronize(config: FitConfig) -> None:
    if is_cuda(config):
        torch.cuda.synchronize()


def training_batch(config: FitConfig) -> int:
    return config.train_batch or default_batch(config.device)


def with_nested(config: Any, kind: type, **changes: Any) -> Any:
    """A copy of a (nested) field config in which every config of the given kind has these changes."""
    if isinstance(config, kind):
        return replace(config, **changes)
    if not is_dataclass(config):
        return config
    nested = {f.name: getattr(config, f.name) for f in fields(config) if is_dataclass(getattr(config, f.name))}
    return replace(config, **{name: with_nested(value, kind, **changes) for name, value in nested.items()})


def method_field(config: FitConfig) -> VideoFieldConfig:
    """The method's field config, with the run's rate settings."""
    field_config = METHODS[config.method].field
    if field_config.rate is None or not has_rate_settings(config):
        return field_config
    return replace(field_config, rate=replace(field_config.rate, **rate_settings(config)))


def rate_settings(config: FitConfig) -> dict[str, float]:
    """The run's RateConfig settings that it gives (the method's own stand for the rest)."""
    settings = {"lmbda": config.lmbda, "target_bpp": config.target_bpp, "ste_from": config.ste_from}
    return {name: value for name, value in settings.items() if value is not None}


def has_rate_settings(config: FitConfig) -> bool:
    return bool(rate_settings(config))


def build_field(config: FitConfig, shape: VideoShape) -> VideoField:
    """The field on its device, compiled in place when asked."""
    torch.manual_seed(config.seed)
    field_config = with_nested(method_field(config), GridEncodingConfig, backend=config.grid_backend)
    field_config = with_nested(field_config, ModulatedSirenConfig, precision=config.mlp_precision, backend=config.mlp_backend)
    field_module = field_config.setup(shape=shape).to(config.device)
    if config.compile:
        compile_in_place(field_module, whole=compiles_whole_field(config))
    return field_module


def compiles_whole_field(config: FitConfig) -> bool:
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
    config: FitConfig, video: VideoFrames, field_module: VideoField, frames: Optional[Sequence[int]] = None
) -> FramePixelSampler:
    """Training batches from the given frames (default: all), in the batch mode the field trains in,
    never from the video's missing pixels (inpainting)."""
    frames = range(video.num_frames) if frames is None else frames
    return FramePixelSampler(video.frames, frames, config.device, config.seed, field_module.trains_on_whole_frames, video.missing)


def initial_lr(config: FitConfig) -> float:
    return config.lr or METHODS[config.method].lr


def optimizer_for(field_module: VideoField, config: FitConfig) -> torch.optim.Optimizer:
    lr = initial_lr(config)
    if config.cuda_graph:  # a graph replays AdamW's kernels with their arguments: the rate must be a tensor
        lr = torch.tensor(lr, device=config.device)
    groups = parameter_groups(field_module)
    param_groups = [{"params": groups["fields"]}, *([{"params": groups["entropy"], "weight_decay": 0.0}] if "entropy" in groups else [])]
    return torch.optim.AdamW(param_groups, lr, ADAM_BETAS, ADAM_EPS, config.weight_decay, fused=True, capturable=config.cuda_graph)


def step_on_batch(
    field_module: VideoField, optimizer: torch.optim.Optimizer, sampler: FramePixelSampler, batch: int
) -> tuple[torch.Tensor, int]:
    """One step on about `batch` pixels, left running on the device: its loss, and how many pixels it
    trained on (whole-frame batches round)."""
    indices, rgb = sampler.sample(batch)
    loss = sum(training_losses(field_module, field_module(sampler.coordinates(indices)), rgb).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, len(indices)


class TrainSteps:
    """Training steps of one field at a fixed batch size: eager, or one step recorded as a CUDA graph and
    replayed (config.cuda_graph). With warm_up, a first step (compiling kernels, recording the graph) runs
    outside any clock, and the field and AdamW are then put back as they were."""

    def __init__(self, config: FitConfig, field_module: VideoField, sampler: FramePixelSampler, batch: int, warm_up: bool) -> None:
        self.config, self.field_module, self.sampler, self.batch = config, field_module, sampler, batch
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        per_shot = field_module.config.uses_shots and len(field_module.shape.shot_starts) > 1  # splits batches on the host
        if config.cuda_graph and (not is_cuda(config) or sampler.missing is not None or hasattr(field_module, "rate") or per_shot):
            raise ValueError(
                "--cuda-graph needs CUDA, batches of one shape (no inpainting mask), a field not trained for rate and "
                "not built per shot (a clip with cuts: per-shot keyframes split each batch by shot on the host)"
            )
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

    def __call__(self, lr: Optional[float] = None, progress: Optional[float] = None) -> int:
        """One step (at learning rate lr, and `progress` in [0, 1] of the run, if given); returns how many pixels
        it trained on."""
        if progress is not None:
            set_training_progress(self.field_module, progress)
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


def frame_psnrs(field_module: VideoField, video: VideoFrames, frames: list[int], chunk: int) -> list[float]:
    """PSNR of each of the given frames as the field renders it."""
    last = max(video.num_frames - 1, 1)
    return [
        psnr(render_frame(field_module, i / last, video.height, video.width, chunk).cpu(), video.frames[i].float() / 255.0)
        for i in frames
    ]


def evenly_spaced(frames: Sequence[int], count: int) -> list[int]:
    """`count` of the given frames, spread evenly from the first to the last (all of them when count <= 0)."""
    frames = list(frames)
    if count <= 0 or count >= len(frames):
        return frames
    return [frames[round(i * (len(frames) - 1) / max(count - 1, 1))] for i in range(count)]


class TimedRun:
    """One method's training run under config.seconds of wall time (or config.steps steps), with its PSNR points:
    scored on `eval_frames` (default: config.eval_frames of them) every config.eval_every seconds of training and,
    the last point, on `final_frames` (default: every frame), whose per-frame PSNRs it also holds ("frame_psnr":
    [frame index, dB] pairs, as JSON keeps them). Trains on `train_frames` (default: all)."""

    def __init__(
        self,
        config: FitConfig,
        video: VideoFrames,
        shape: VideoShape,
        train_frames: Optional[Sequence[int]] = None,
        eval_frames: Optional[Sequence[int]] = None,
        final_frames: Optional[Sequence[int]] = None,
    ) -> None:
        field_config = method_field(config)
        if field_config.uses_shots and shape.shot_starts == (0,):
            shape = VideoShape.of(video, field_config)
        self.config, self.video = config, video
        self.field_module = build_field(config, shape)
        sampler = sampler_for(config, video, self.field_module, train_frames)
        self.batch = training_batch(config)
        self.chunk = render_chunk(config)
        # Compiling (torch.compile; Triton's kernels on CUDA) happens outside the clock.
        self.train_steps = TrainSteps(config, self.field_module, sampler, self.batch, warm_up=config.compile or is_cuda(config))
        self.eval_frames = evenly_spaced(range(video.num_frames), config.eval_frames) if eval_frames is None else list(eval_frames)
        self.final_frames = list(range(video.num_frames)) if final_frames is None else list(final_frames)
        self.points: list[dict] = []
        self.trained, self.steps, self.samples, self.next_eval = 0.0, 0, 0, config.eval_every

    def done_fraction(self) -> float:
        return self.steps / self.config.steps if self.config.steps else self.trained / self.config.seconds

    @property
    def finished(self) -> bool:
        return self.done_fraction() >= 1.0

    def step(self) -> None:
        """One training step at the schedule's learning rate, then a PSNR point if one is due."""
        # Cosine decay over the run, as the paper's schedule.
        lr = initial_lr(self.config) * cosine_lr_factor(self.done_fraction())
        start = time.perf_counter()
        self.samples += self.train_steps(lr, self.done_fraction())
        self.trained += time.perf_counter() - start
        self.steps += 1
        if self.trained >= self.next_eval or self.finished:
            frames = self.final_frames if self.finished else self.eval_frames
            scores = frame_psnrs(self.field_module, self.video, frames, self.chunk)
            # The budget this point stands for (the clock overshoots it by up to a step); none in steps mode.
            budget = None if self.config.steps else min(self.next_eval, self.config.seconds)
            point = {"seconds": self.trained, "budget_s": budget, "steps": self.steps, "samples": self.samples,
                     "psnr": sum(scores) / len(scores), "frames": len(frames)}
            if self.finished:  # where the error sits in time: the run's figure frame by frame
                point["frame_psnr"] = [[frame, score] for frame, score in zip(frames, scores)]
                CONSOLE.print(
                    f"{self.config.method}: PSNR {point['psnr']:.2f} dB after {self.trained:.0f} s ({self.steps} steps of {self.batch}), "
                    f"mean of {len(frames)} frames"
                )
                warn_of_a_missed_target(self.field_module)
            self.points.append(point)
            self.next_eval += self.config.eval_every

    def progress_text(self) -> str:
        return f"{self.points[-1]['psnr']:.2f} dB at {self.trained:.0f} s" if self.points else ""


def train_runs(runs: Sequence[TimedRun]) -> None:
    """Train the runs to their ends, one step at a time, always the one with the least training behind it (as a
    fraction of its budget): runs of several methods then share the machine's speed as it drifts (memory bandwidth
    on a shared machine moves by tens of percent over minutes), where one run after another would not."""
    columns = (TextColumn("training {task.description} {task.fields[psnr]}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=CONSOLE) as progress:
        tasks = [progress.add_task(run.config.method, total=1.0, psnr="") for run in runs]
        while not all(run.finished for run in runs):
            index = min((i for i, run in enumerate(runs) if not run.finished), key=lambda i: runs[i].done_fraction())
            runs[index].step()
            progress.update(tasks[index], completed=min(runs[index].done_fraction(), 1.0), psnr=runs[index].progress_text())


def psnr_against_time(
    config: FitConfig, video: VideoFrames, shape: VideoShape, final_frames: Optional[Sequence[int]] = None
) -> tuple[list[dict], VideoField]:
    """PSNR points of one run (TimedRun, trained on every frame) trained to its end, and the trained field."""
    run = TimedRun(config, video, shape, final_frames=final_frames)
    train_runs([run])
    return run.points, run.field_module


def check_methods(names: Sequence[str], config: Optional[FitConfig] = None) -> None:
    """One error line for method names that nvp_nerfstudio/methods.py does not have, or for rate settings
    (--lmbda, --target-bpp) that none of them would use."""
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise SystemExit(f"error: unknown method(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(METHODS)}")
    if config is not None and has_rate_settings(config) and all(METHODS[name].field.rate is None for name in names):
        rated = ", ".join(name for name, method in METHODS.items() if method.field.rate is not None)
        raise SystemExit(f"error: --lmbda / --target-bpp / --ste-from apply to methods trained for rate ({rated}): none of {', '.join(names)} is")
    if config is not None and ((config.lmbda is not None and config.lmbda < 0) or (config.target_bpp is not None and config.target_bpp <= 0)):
        raise SystemExit("error: --lmbda must be at least 0 and --target-bpp above 0")
    if config is not None and config.ste_from is not None and not 0.0 <= config.ste_from <= 1.0:
        raise SystemExit(f"error: --ste-from is a fraction of the run, from 0 to 1 (got {config.ste_from:g})")
