"""The reference NVP code's "sparse positional features": a coarse dense feature grid per frame.

Each frame has its own grid of cells (the reference: 300 x 300 for 1080p). A point reads the cell it
falls in together with its 3 x 3 neighbourhood (clamped at the border), concatenated; between two
frames the two frames' features are blended linearly in t (the reference divides 0 by 0 at t = 1;
clamping the slice index avoids it).

Core module: imports only torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Type

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.config import InstantiateConfig

NEIGHBOURHOOD = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


@dataclass
class PerFrameGridConfig(InstantiateConfig):
    _target: Type = field(default_factory=lambda: PerFrameGrid)
    features: int = 2
    """Features per cell (the reference: 2 for NVP-S, 4 for NVP-L)."""
    init_scale: float = 1e-4


class PerFrameGrid(nn.Module):
    """(x, y, t) in [0, 1]^3 -> 9 x features: the 3 x 3 cells around (x, y) in the frames around t."""

    def __init__(self, config: PerFrameGridConfig, cells: Sequence[int], num_frames: int) -> None:
        super().__init__()
        self.config = config
        self.cells_x, self.cells_y = cells
        self.num_frames = max(num_frames, 1)
        shape = (self.num_frames, self.cells_y, self.cells_x, config.features)
        self.grid = nn.Parameter(torch.empty(shape).uniform_(-config.init_scale, config.init_scale))

    @property
    def output_dim(self) -> int:
        return len(NEIGHBOURHOOD) * self.config.features

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n out"]:
        column = (xyt[:, 0] * self.cells_x).long().clamp(0, self.cells_x - 1)
        row = (xyt[:, 1] * self.cells_y).long().clamp(0, self.cells_y - 1)
        position = xyt[:, 2].clamp(0, 1) * (self.num_frames - 1)
        before = position.floor().long().clamp(max=self.num_frames - 1)
        after = (before + 1).clamp(max=self.num_frames - 1)
        weight = (position - before)[:, None, None]
        rows = (row[:, None] + torch.tensor([dy for dy, _ in NEIGHBOURHOOD], device=xyt.device)).clamp(0, self.cells_y - 1)
        columns = (column[:, None] + torch.tensor([dx for _, dx in NEIGHBOURHOOD], device=xyt.device)).clamp(0, self.cells_x - 1)
        features = (1 - weight) * self.grid[before[:, None], rows, columns] + weight * self.grid[after[:, None], rows, columns]
        return features.reshape(len(xyt), self.output_dim)
