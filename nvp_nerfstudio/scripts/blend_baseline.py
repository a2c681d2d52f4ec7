"""nvp-blend-baseline: the frame-interpolation baseline for the holdout split.

Each held-out frame is predicted by blending its nearest kept frames linearly in time, and scored
like `ns-eval` scores a field on the same split (mean per-frame PSNR), so the two compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from nvp_nerfstudio.cli import command, parse
from nvp_nerfstudio.data.interpolation import blend_psnr
from nvp_nerfstudio.data.video import VideoSource, holdout_split


@dataclass
class BlendConfig:
    source: tyro.conf.OmitArgPrefixes[VideoSource] = VideoSource("sample:bikes")
    holdout_every: int = 2
    """k of the holdout split: frames k-1, 2k-1, ... are held out, as the data parser does."""


@command()
def main(config: BlendConfig) -> None:
    video = config.source.load()
    score = blend_psnr(video.frames, config.holdout_every)
    held = len(holdout_split(video.num_frames, config.holdout_every)[1])
    print(f"Linear blending of neighbouring frames on {held} held-out frames of {video}: PSNR {score:.2f} dB")


def entrypoint() -> None:
    main(parse(BlendConfig))


if __name__ == "__main__":
    entrypoint()
