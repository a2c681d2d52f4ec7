"""Query a video field on whole frames, in bounded chunks. Core module: imports only torch."""

from __future__ import annotations

from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from nvp_nerfstudio.fields.base import VideoField, pixel_coordinates


def frame_coordinates(t: float, height: int, width: int, device: torch.device | str = "cpu") -> Float[Tensor, "pixels 3"]:
    """(x, y, t) of every pixel centre of a frame, rows first, in [0, 1]^3."""
    rows, columns = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return pixel_coordinates(rows, columns, torch.tensor(t, device=device), height, width).reshape(-1, 3)


@torch.no_grad()
def render_frame(field: VideoField, t: float, height: int, width: int, chunk: int = 1 << 16) -> Float[Tensor, "height width 3"]:
    """One frame at time t in [0, 1], RGB clamped to [0, 1]."""
    device = next(field.parameters()).device
    xyt = frame_coordinates(t, height, width, device)
    rgb = torch.cat([field(xyt[start : start + chunk]) for start in range(0, len(xyt), chunk)])
    return rgb.clamp(0.0, 1.0).reshape(height, width, 3)


def field_frames(field: VideoField, chunk: int = 1 << 16) -> Iterator[Float[Tensor, "height width 3"]]:
    """Every source frame of the field in order (frame i at t = i / (frames - 1)), at its own size."""
    shape = field.shape
    last = max(shape.num_frames - 1, 1)
    return (render_frame(field, index / last, shape.height, shape.width, chunk) for index in range(shape.num_frames))
