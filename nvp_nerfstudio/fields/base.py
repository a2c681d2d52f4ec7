"""A video field is a function f(x, y, t) -> RGB; every method differs only in its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Type

import torch
import tyro
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.config import InstantiateConfig
from nvp_nerfstudio.data.shots import shot_starts
from nvp_nerfstudio.data.video import VideoFrames
from nvp_nerfstudio.rate import RateConfig, check_target, crowds_its_target
from nvp_nerfstudio.rate import attach as attach_rate


@dataclass(frozen=True)
class VideoShape:
    num_frames: int
    height: int
    width: int
    shot_starts: tuple[int, ...] = (0,)
    """The first frame of each shot (data/shots.py): fields with per-shot keyframes (NVP's keyframes_per_shot) give
    each shot its own; the others ignore it."""

    @classmethod
    def of(cls, video: VideoFrames, config: "VideoFieldConfig") -> "VideoShape":
        """The shape of decoded frames, with their shots found only where the field config uses them."""
        shots = shot_starts(video.frames) if config.uses_shots else (0,)
        return cls(video.num_frames, video.height, video.width, shots)


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
        """The field; trained for rate toward a target, the largest of this config's sizes (smaller()) whose MLP
        and level models leave the latents most of the target."""
        built = super().setup(**kwargs)
        if self.rate is None:
            return built
        attach_rate(built, self.rate)
        smaller = self.smaller() if crowds_its_target(built) else None
        if smaller is not None:
            return smaller.setup(**kwargs)
        check_target(built)
        return built

    @property
    def uses_shots(self) -> bool:
        """Whether the field is built per shot of the video (VideoShape.shot_starts)."""
        return False

    def smaller(self) -> Optional["VideoFieldConfig"]:
        """The next smaller field of this kind, for a rate target its fixed part would crowd; None: none smaller."""
        return None


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
