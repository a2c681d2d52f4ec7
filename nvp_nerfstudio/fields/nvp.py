"""NVP field: latent keyframes (xy, xt, yt planes) + a 3D positional grid -> modulated SIREN; and NVP with the
reference code's per-frame positional features instead of the hash grid."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.encodings.grid import GridEncodingConfig
from nvp_nerfstudio.encodings.per_frame import PerFrameGridConfig
from nvp_nerfstudio.fields.base import VideoField, VideoFieldConfig, VideoShape
from nvp_nerfstudio.fields.modulated_mlp import ModulatedSirenConfig
from nvp_nerfstudio.rate import read_as_stored

# (input axes, name) of each latent keyframe plane; axes index (x, y, t).
KEYFRAME_PLANES = (((0, 1), "xy"), ((0, 2), "xt"), ((1, 2), "yt"))
# The smallest NVP a rate target sizes down to (NVPFieldConfig.smaller).
SMALLEST_WIDTH = 8
SMALLEST_LEVELS = 4


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
    keyframes_per_shot: bool = False
    """An xy keyframe plane for each shot of the video (its scene cuts, data/shots.py) instead of one for the whole
    clip: the xy plane holds what a shot's frames share, and one plane for several shots holds what none of them is.
    The xt and yt planes and the 3D grid span the cuts. Off: the paper's single plane."""

    @property
    def uses_shots(self) -> bool:
        return self.keyframes_per_shot

    def smaller(self) -> Optional["NVPFieldConfig"]:
        """Half the MLP's width (down to SMALLEST_WIDTH; its weights are most of what a rate-aware field stores
        besides its latents), then half the levels of the keyframes and of the 3D grid (down to SMALLEST_LEVELS:
        each level stores its steps and model)."""
        if self.mlp.hidden_dim > SMALLEST_WIDTH:
            return replace(self, mlp=replace(self.mlp, hidden_dim=max(SMALLEST_WIDTH, self.mlp.hidden_dim // 2)))
        if max(self.keyframes.num_levels, self.positional.num_levels) > SMALLEST_LEVELS:
            return replace(
                self,
                keyframes=replace(self.keyframes, num_levels=max(SMALLEST_LEVELS, self.keyframes.num_levels // 2)),
                positional=replace(self.positional, num_levels=max(SMALLEST_LEVELS, self.positional.num_levels // 2)),
            )
        return None


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
        shots = shape.shot_starts if config.keyframes_per_shot else (0,)
        self.keyframes = nn.ModuleDict(
            {
                name: ShotPlanes(config.keyframes, [keyframe_res[axis] for axis in axes], shots, shape.num_frames)
                if name == "xy" and len(shots) > 1
                else config.keyframes.setup(finest_resolution=[keyframe_res[axis] for axis in axes])
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
        if isinstance(self.keyframes["xy"], ShotPlanes):
            planes = [self.keyframes["xy"](xyt), *(self.keyframes[name](xyt[:, list(axes)]) for axes, name in KEYFRAME_PLANES[1:])]
        elif self.keyframes["xy"].backend_for(xyt[:, :2]) == "triton":
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
        return 0.5 + 0.5 * read_as_stored(self, self.mlp, 2.0 * xyt[:, 2:] - 1.0, self.latent(xyt))


class ShotPlanes(nn.Module):
    """An xy keyframe plane per shot: a point reads the plane of the shot its nearest frame is in."""

    def __init__(self, config: GridEncodingConfig, finest_resolution: list[int], shot_starts: tuple[int, ...], num_frames: int) -> None:
        super().__init__()
        self.planes = nn.ModuleList(config.setup(finest_resolution=finest_resolution) for _ in shot_starts)
        self.output_dim = self.planes[0].output_dim
        self.last_frame = max(num_frames - 1, 1)
        self.register_buffer("starts", torch.tensor(shot_starts, dtype=torch.float32), persistent=False)

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n features"]:
        frame = torch.round(xyt[:, 2] * self.last_frame).contiguous()
        shot = torch.searchsorted(self.starts, frame, right=True) - 1
        # Each plane reads its shot's points only: sorted by shot, split, and put back in order.
        order = torch.argsort(shot)
        counts = torch.bincount(shot, minlength=len(self.planes)).tolist()
        points = xyt[order, :2].split(counts)
        features = torch.cat([plane(part) for plane, part in zip(self.planes, points) if len(part)])
        return torch.empty_like(features).index_copy_(0, order, features)


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
