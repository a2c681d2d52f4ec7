"""Frame interpolation without a field: the baseline of the holdout split (nvp-blend-baseline, nvp-compare).

Core module: imports only torch.
"""

from __future__ import annotations

import torch

from nvp_nerfstudio.data.video import VideoInputError, holdout_split
from nvp_nerfstudio.metrics import psnr


def blend(frames: torch.Tensor, kept: list[int], index: int) -> torch.Tensor:
    """Linear blend in time of the kept frames around `index` (the nearest one past either end)."""
    before = max((k for k in kept if k < index), default=None)
    after = min((k for k in kept if k > index), default=None)
    if before is None or after is None:
        return frames[before if after is None else after].float()
    weight = (index - before) / (after - before)
    return (1 - weight) * frames[before].float() + weight * frames[after].float()


def blend_psnr(frames: torch.Tensor, holdout_every: int) -> float:
    """Mean PSNR over the held-out frames of their linear blends (uint8 frames in, images scaled to [0, 1])."""
    kept, held = holdout_split(len(frames), holdout_every)
    if not held or not kept:
        raise VideoInputError(f"holdout_every={holdout_every} leaves no held-out or no kept frame of {len(frames)}")
    return sum(psnr(blend(frames, kept, i) / 255.0, frames[i].float() / 255.0) for i in held) / len(held)
