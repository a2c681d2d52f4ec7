"""nvp-blend-baseline: the frame-interpolation baseline for the holdout split.

Each held-out frame is predicted by blending its nearest kept frames linearly in time, and scored
like `ns-eval` scores a field on the same split (mean per-frame PSNR), so the two compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from nvp_nerfstudio.data.video import FrameSelection, VideoInputError, holdout_split, load_video
from nvp_nerfstudio.render import psnr


@dataclass
class BlendConfig:
    data: Path = Path("sample:bikes")
    """Video file, frame folder or sample:NAME (the same as ns-train's --data)."""
    holdout_every: int = 2
    """k of the holdout split: frames k-1, 2k-1, ... are held out, as the data parser does."""
    downscale: int = 1
    max_frames: int | None = None


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


def main(config: BlendConfig) -> None:
    try:
        video = load_video(config.data, FrameSelection(max_frames=config.max_frames, downscale=config.downscale))
        score = blend_psnr(video.frames, config.holdout_every)
    except VideoInputError as err:
        raise SystemExit(f"error: {err}") from None
    held = len(holdout_split(video.num_frames, config.holdout_every)[1])
    print(f"Linear blending of neighbouring frames on {held} held-out frames of {video}: PSNR {score:.2f} dB")


def entrypoint() -> None:
    main(tyro.cli(BlendConfig))


if __name__ == "__main__":
    entrypoint()
