"""A video field is a function f(x, y, t) -> RGB; every method differs only in its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.config import InstantiateConfig


@dataclass(frozen=True)
class VideoShape:
    num_frames: int
    height: int
    width: int


@dataclass
class VideoFieldConfig(InstantiateConfig):
    _target: Type = field(default_factory=lambda: VideoField)


class VideoField(nn.Module):
    """Maps coordinates (x, y, t) in [0, 1]^3 (x right, y down, t from first to last frame) to RGB in [0, 1]."""

    def __init__(self, config: VideoFieldConfig, shape: VideoShape) -> None:
        super().__init__()
        self.config = config
        self.shape = shape

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        raise NotImplementedError
