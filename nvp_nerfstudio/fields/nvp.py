"""NVP field: latent keyframes (xy, xt, yt planes) + a 3D positional grid -> modulated SIREN; and NVP with the
reference code's per-frame positional features instead of the hash grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.encodings.grid import GridEncodingConfig
from nvp_nerfstudio.encodings.per_frame import PerFrameGridConfig
from nvp_nerfstudio.fields.base import VideoField, VideoFieldConfig, VideoShape
from nvp_nerfstudio.fields.modulated_mlp import ModulatedSirenConfig

# (input axes, name) of each latent keyframe plane; axes index (x, y, t).
KEYFRAME_PLANES = (((0, 1), "xy"), ((0, 2), "xt"), ((1, 2), "yt"))


@dataclass
class NVPFieldConfig(VideoFieldConfig):
    _target: Type = field(default_factory=lambda: NVPField)
    keyframes: GridEncodingConfig = field(
        default_factory=lambda: GridEncodingConfig(grid_type="dense", num_levels=16, features_per_level=2)
    )
    """Each of the three latent keyframe planes (the paper: 16 dense levels from 16, 2 (S) or 4 (L) features)."""
    keyframe_resolution: float = 1.0
    """Finest keyframe resolution along x and y, as a fraction of the video's width and height (t: one per frame)."""
    positional: GridEncodingConfig = field(
        default_factory=lambda: GridEncodingConfig(grid_type="hash", num_levels=8, features_per_level=2)
    )
    """The 3D (x, y, t) grid of positional features (hashed where a level outgrows the table)."""
    positional_resolution: float = 0.25
    """Finest 3D-grid resolution along x and y, as a fraction of the video's (coarse in space, as the paper's)."""
    positional_cells_per_frame: float = 2.0
    """Finest 3D-grid cells between neighbouring frames: >= 2 gives every frame grid vertices of its own."""
    mlp: ModulatedSirenConfig = field(default_factory=ModulatedSirenConfig)


class NVPField(VideoField):
    config: NVPFieldConfig

    def __init__(self, config: NVPFieldConfig, shape: VideoShape) -> None:
        super().__init__(config, shape)
        frames = max(shape.num_frames, 2)
        keyframe_res = (
            max(2, round(shape.width * config.keyframe_resolution)),
            max(2, round(shape.height * config.keyframe_resolution)),
            frames,
        )
        self.keyframes = nn.ModuleDict(
            {
                name: config.keyframes.setup(finest_resolution=[keyframe_res[axis] for axis in axes])
                for axes, name in KEYFRAME_PLANES
            }
        )
        self.positional = self.positional_features(shape)
        self.latent_dim = sum(plane.output_dim for plane in self.keyframes.values()) + self.positional.output_dim
        self.mlp = config.mlp.setup(latent_dim=self.latent_dim)

    def positional_features(self, shape: VideoShape) -> nn.Module:
        """The 3D (x, y, t) feature grid: a multi-resolution hash grid."""
        config = self.config
        return config.positional.setup(
            finest_resolution=(
                max(2, round(shape.width * config.positional_resolution)),
                max(2, round(shape.height * config.positional_resolution)),
                round(config.positional_cells_per_frame * (max(shape.num_frames, 2) - 1)) + 2,
            )
        )

    def latent(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n latent"]:
        if self.keyframes["xy"].backend_for(xyt[:, :2]) == "triton":
            from nvp_nerfstudio.encodings.triton_grid import grids_forward

            # The three planes together (one launch forward, one or two backward), into their concatenated features.
            axes, names = zip(*KEYFRAME_PLANES)
            planes = [grids_forward([self.keyframes[name] for name in names], xyt, axes)]
        else:
            planes = [self.keyframes[name](xyt[:, list(axes)]) for axes, name in KEYFRAME_PLANES]
        return torch.cat([*planes, self.positional(xyt)], dim=-1)

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        xyt = xyt.clamp(0.0, 1.0)
        # The paper's frames live in [-1, 1]; mapping back keeps the untrained output at mid-grey.
        return 0.5 + 0.5 * self.mlp(2.0 * xyt[:, 2:] - 1.0, self.latent(xyt))


@dataclass
class NVPPaperFieldConfig(NVPFieldConfig):
    """NVP with the reference code's 3D features: a coarse grid per frame, 3 x 3 neighbourhood concatenated."""

    _target: Type = field(default_factory=lambda: NVPPaperField)
    per_frame: PerFrameGridConfig = field(default_factory=PerFrameGridConfig)
    per_frame_cells: Tuple[float, float] = (300 / 1920, 300 / 1080)
    """Cells per pixel along x and y (the reference: 300 x 300 for 1920 x 1080 whatever the aspect).
    Replaces the hash grid's options (positional, positional_resolution, positional_cells_per_frame)."""


class NVPPaperField(NVPField):
    config: NVPPaperFieldConfig

    def positional_features(self, shape: VideoShape) -> nn.Module:
        cells_x, cells_y = self.config.per_frame_cells
        cells = (max(1, round(shape.width * cells_x)), max(1, round(shape.height * cells_y)))
        return self.config.per_frame.setup(cells=cells, num_frames=shape.num_frames)
