"""A video field is a function f(x, y, t) -> RGB; every method differs only in its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Type

import torch
import tyro
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.config import InstantiateConfig
from nvp_nerfstudio.rate import RateConfig
from nvp_nerfstudio.rate import attach as attach_rate


@dataclass(frozen=True)
class VideoShape:
    num_frames: int
    height: int
    width: int


def pixel_coordinates(row: Tensor, column: Tensor, t: Tensor, height: int, width: int) -> Float[Tensor, "n 3"]:
    """Field coordinates (x, y, t) of pixel centres: what a training camera's ray meets on the video plane."""
    x = (column.float() + 0.5) / width
    y = (row.float() + 0.5) / height
    return torch.stack(torch.broadcast_tensors(x, y, t.float()), dim=-1)


@dataclass
class VideoFieldConfig(InstantiateConfig):
    _target: Type = field(default_factory=lambda: VideoField)
    rate: tyro.conf.AvoidSubcommands[Optional[RateConfig]] = None
    """Train the field's grids for rate (rate.py): quantised latents, an entropy model and a rate term in the loss."""

    def setup(self, **kwargs: Any) -> "VideoField":
        built = super().setup(**kwargs)
        if self.rate is not None:
            attach_rate(built, self.rate)
        return built


class VideoField(nn.Module):
    """Maps coordinates (x, y, t) in [0, 1]^3 (x right, y down, t from first to last frame) to RGB in [0, 1]."""

    trains_on_whole_frames = False
    """Whether training batches should be all pixels of a few frames (fields that generate whole frames)
    rather than pixels drawn across the whole video."""

    def __init__(self, config: VideoFieldConfig, shape: VideoShape) -> None:
        super().__init__()
        self.config = config
        self.shape = shape

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        raise NotImplementedError
