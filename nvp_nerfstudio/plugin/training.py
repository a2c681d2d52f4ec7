"""Training settings shared by every video method in nerfstudio: the core loop's optimiser and schedule (fit.py)
as nerfstudio configs, and a trainer that fits the machine."""

from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Literal, Tuple, Type

import torch
from nerfstudio.configs.base_config import MachineConfig
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.comms import is_main_process
from nerfstudio.utils.rich_utils import CONSOLE
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from nvp_nerfstudio.data.output import written_atomically
from nvp_nerfstudio.data.video import SAMPLE_PREFIX
from nvp_nerfstudio.fit import FINAL_LR_FRACTION, cosine_lr_factor
from nvp_nerfstudio.methods import ADAM_BETAS, ADAM_EPS, ADAM_WEIGHT_DECAY
from nvp_nerfstudio.plugin import allow_nerfstudio_checkpoints

CHECKPOINT_NAME = re.compile(r"step-(\d+)\.ckpt")


@dataclass
class AdamWOptimizerConfig(OptimizerConfig):
    """AdamW, which nerfstudio 1.1.5 lacks; the fused kernel is ~7x faster a step on a CPU."""

    _target: Type = torch.optim.AdamW
    weight_decay: float = ADAM_WEIGHT_DECAY
    betas: Tuple[float, float] = ADAM_BETAS
    eps: float = ADAM_EPS
    fused: bool = True


@dataclass
class CosineToFinalSchedulerConfig(SchedulerConfig):
    """Cosine decay from the initial learning rate to initial * learning_rate_alpha at max_steps, then flat.

    nerfstudio's cosine keeps turning past max_steps, so a resumed run (which trains
    max_num_iterations more steps) would climb back to the initial rate; this one stays at the end.
    """

    _target: Type = field(default_factory=lambda: CosineToFinalScheduler)
    learning_rate_alpha: float = FINAL_LR_FRACTION
    """Final learning rate as a fraction of the initial one."""
    max_steps: int = 20000


class CosineToFinalScheduler(Scheduler):
    config: CosineToFinalSchedulerConfig

    def get_scheduler(self, optimizer: torch.optim.Optimizer, lr_init: float) -> LRScheduler:
        return LambdaLR(optimizer, lr_lambda=CosineToFinalFactor(max(self.config.max_steps, 1), self.config.learning_rate_alpha))


class CosineToFinalFactor:
    """The learning-rate factor of a step. An object, not a lambda: LambdaLR's state (so a checkpoint) then holds
    its length, and a resumed run goes on with the schedule of the run it resumes, whatever its own length."""

    def __init__(self, total_steps: int, final_fraction: float) -> None:
        self.total_steps = total_steps
        self.final_fraction = final_fraction

    def __call__(self, step: int) -> float:
        return cosine_lr_factor(step / self.total_steps, self.final_fraction)


def paper_optimizers(lr: float = 1e-2, weight_decay: float = ADAM_WEIGHT_DECAY, rate: bool = False) -> Dict[str, Any]:
    """NVP's optimisation, as the core loop's (fit.py): AdamW (ADAM_BETAS, ADAM_EPS), cosine decay from lr to
    lr * FINAL_LR_FRACTION over the run; a field trained for rate adds its quantisers' group, without weight decay."""
    # max_steps follows the trainer's max_num_iterations (VideoTrainerConfig.__post_init__).
    groups = {"fields": {"optimizer": AdamWOptimizerConfig(lr=lr, weight_decay=weight_decay), "scheduler": CosineToFinalSchedulerConfig()}}
    if rate:
        groups["entropy"] = {"optimizer": AdamWOptimizerConfig(lr=lr, weight_decay=0.0), "scheduler": CosineToFinalSchedulerConfig()}
    return groups


class VideoTrainer(Trainer):
    """nerfstudio's trainer, with checkpoints that are never half-written (a kill during a save leaves the
    older ones as they were) and a resume (`--load-dir`) that passes over a newest checkpoint it cannot read.
    A checkpoint holds the random state too, so a resumed run draws what the interrupted one would have drawn."""

    def save_checkpoint(self, step: int) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
            "random_state": self.random_state(),
        }
        with written_atomically(path) as temporary:
            torch.save(state, temporary)
        if self.config.save_only_latest_checkpoint:
            for older in self.checkpoint_dir.glob("step-*.ckpt"):
                if older != path:
                    older.unlink()

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """A start that fails (a damaged video, no readable checkpoint to resume from) leaves no run folder behind;
        config.yml is written once the data and the checkpoint have loaded (VideoTrainerConfig.save_config)."""
        fresh = not self.base_dir.exists()
        self.base_dir.mkdir(parents=True, exist_ok=True)  # the viewer writes its log there during setup
        try:
            super().setup(test_mode)
        except BaseException:
            if fresh and is_main_process():
                remove_run_folder(self.base_dir, self.config.output_dir)
            raise
        if is_main_process():
            self.config.write_config()

    def _load_checkpoint(self) -> None:
        load_dir = self.config.load_dir
        if load_dir is not None and self.config.load_step is None:
            self.config.load_step = newest_readable_step(Path(load_dir))
        super()._load_checkpoint()
        loaded = Path(load_dir) / f"step-{self.config.load_step:09d}.ckpt" if load_dir is not None else self.config.load_checkpoint
        if loaded is not None:
            random_state = torch.load(loaded, map_location="cpu", mmap=True).get("random_state")
            if random_state is None:
                warning = f"warning: {loaded} holds no random state (an older version wrote it): the resumed run draws anew"
                CONSOLE.print(warning, style="yellow", markup=False, soft_wrap=True)
            else:
                self.set_random_state(random_state)

    def random_state(self) -> Dict[str, Any]:
        """Every random generator training draws from: torch's (nvp-c's quantisation noise), Python's (nerfstudio's
        choice of evaluation image) and the data manager's pixel samplers."""
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "samplers": self.pipeline.datamanager.sampler_states(),
        }

    def set_random_state(self, state: Dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        random.setstate(state["python"])
        self.pipeline.datamanager.set_sampler_states(state["samplers"])


def remove_run_folder(base_dir: Path, output_dir: Path) -> None:
    """The run's folder, and the experiment's and method's folders above it if it leaves them empty."""
    shutil.rmtree(base_dir, ignore_errors=True)
    for folder in base_dir.parents:
        if folder == output_dir or not folder.is_dir() or any(folder.iterdir()):
            break
        folder.rmdir()


def newest_readable_step(folder: Path) -> int:
    """The step of the newest checkpoint in the folder that loads, warning about newer ones that do not."""
    allow_nerfstudio_checkpoints()  # a loaded run's folder is read before its model (which allows them) is built
    steps = sorted((int(match[1]) for name in os.listdir(folder) if (match := CHECKPOINT_NAME.fullmatch(name))), reverse=True)
    for step in steps:
        path = folder / f"step-{step:09d}.ckpt"
        try:
            torch.load(path, map_location="cpu", mmap=True)
        except Exception as err:  # torch raises EOFError, RuntimeError, pickle errors... for a damaged file
            warning = f"warning: {path} cannot be read ({type(err).__name__}): using an older checkpoint"
            CONSOLE.print(warning, style="yellow", markup=False, soft_wrap=True)  # one line, however long the path
            continue
        return step
    raise SystemExit(f"error: {folder} holds no readable checkpoint (step-*.ckpt): pass another --load-dir or start anew")


@dataclass
class VideoTrainerConfig(TrainerConfig):
    """nerfstudio's trainer config, made to follow the command line: the cosine schedule ends with
    `--max-num-iterations`; a run trains on CUDA where torch sees a GPU and on the CPU elsewhere, and
    `--machine.device-type cuda` on a machine without one is an error."""

    _target: Type = field(default_factory=lambda: VideoTrainer)
    machine: MachineConfig = field(default_factory=lambda: MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"))
    """CUDA where torch sees a GPU, else the CPU: `--machine.device-type cuda` without one is an error."""

    def __post_init__(self) -> None:
        if self.max_num_iterations < 1:
            raise SystemExit(f"error: --max-num-iterations must be at least 1, got {self.max_num_iterations}")
        if self.machine.device_type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(
                "error: --machine.device-type cuda asks for a GPU, and torch sees none on this machine: "
                "leave the flag out (or pass cpu) to train on the CPU"
            )
        self.optimizers = {
            name: {
                **group,
                "scheduler": replace(group["scheduler"], max_steps=self.max_num_iterations)
                if isinstance(group.get("scheduler"), CosineToFinalSchedulerConfig)
                else group.get("scheduler"),
            }
            for name, group in self.optimizers.items()
        }

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # nerfstudio's eval_setup (ns-eval, ns-render, nvp-render, load_run) points a loaded run's load_dir at its
        # checkpoints and then loads the newest by name: make that the newest that loads. Not while __init__ sets
        # the fields (load_step not set yet): a resume picks its checkpoint in VideoTrainer._load_checkpoint. A step
        # this picked in another folder (a resumed run's config names the run it resumed) is picked anew.
        if name == "load_dir" and value is not None and "load_step" in self.__dict__ and Path(value).is_dir():
            if self.load_step is None or not (Path(value) / f"step-{self.load_step:09d}.ckpt").is_file():
                self.load_step = newest_readable_step(Path(value))

    def print_to_terminal(self) -> None:
        """ns-train prints the configuration (about 180 lines) before anything loads: a missing or unreadable
        source is checked first, so its error is the one line printed, not the last of two hundred."""
        datamanager = self.pipeline.datamanager
        dataparser = getattr(datamanager, "dataparser", None)
        if hasattr(dataparser, "check_source"):
            dataparser.check_source(getattr(datamanager, "data", None) or dataparser.data)
        super().print_to_terminal()

    def save_config(self) -> None:
        """Deferred to VideoTrainer.setup (write_config): ns-train saves the config before anything has loaded, and
        every failed start (a damaged video, no readable checkpoint to resume from) left a run folder holding only it."""

    def write_config(self) -> None:
        super().save_config()

    def set_experiment_name(self) -> None:
        """Name runs after the clip (`bikes`, `clip` for clip.mp4), not after the folder holding it."""
        if self.experiment_name is None:
            data = str(self.pipeline.datamanager.data or self.pipeline.datamanager.dataparser.data)
            self.experiment_name = data[len(SAMPLE_PREFIX) :] if data.startswith(SAMPLE_PREFIX) else Path(data).stem
