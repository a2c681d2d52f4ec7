"""Training settings shared by every video method: the paper's optimiser and a trainer that fits the machine."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Type

import torch
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import CosineDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig

from nvp_nerfstudio.data.video import SAMPLE_PREFIX


@dataclass
class AdamWOptimizerConfig(OptimizerConfig):
    """AdamW, which nerfstudio 1.1.5 lacks; the fused kernel is ~7x faster a step on a CPU."""

    _target: Type = torch.optim.AdamW
    weight_decay: float = 1e-3
    fused: bool = True


def paper_optimizers(lr: float = 1e-2, final_lr: float = 1e-5, weight_decay: float = 1e-3) -> Dict[str, Any]:
    """NVP's optimisation: AdamW, one parameter group, cosine decay from lr to final_lr over the whole run."""
    return {
        "fields": {
            "optimizer": AdamWOptimizerConfig(lr=lr, weight_decay=weight_decay),
            # max_steps follows the trainer's max_num_iterations (VideoTrainerConfig.__post_init__).
            "scheduler": CosineDecaySchedulerConfig(warm_up_end=0, learning_rate_alpha=final_lr / lr),
        }
    }


@dataclass
class VideoTrainerConfig(TrainerConfig):
    """nerfstudio's trainer config, made to follow the command line: the cosine schedule ends with
    `--max-num-iterations`, and a machine without CUDA trains on the CPU without a flag."""

    def __post_init__(self) -> None:
        if self.machine.device_type == "cuda" and not torch.cuda.is_available():
            self.machine = replace(self.machine, device_type="cpu")
        self.optimizers = {
            name: {
                **group,
                "scheduler": replace(group["scheduler"], max_steps=self.max_num_iterations)
                if isinstance(group.get("scheduler"), CosineDecaySchedulerConfig)
                else group.get("scheduler"),
            }
            for name, group in self.optimizers.items()
        }

    def set_experiment_name(self) -> None:
        """Name runs after the clip (`bikes`, `clip` for clip.mp4), not after the folder holding it."""
        if self.experiment_name is None:
            data = str(self.pipeline.datamanager.data or self.pipeline.datamanager.dataparser.data)
            self.experiment_name = data[len(SAMPLE_PREFIX) :] if data.startswith(SAMPLE_PREFIX) else Path(data).stem
