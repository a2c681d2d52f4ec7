"""Inpainting masks: which pixels of a video are missing (True), read from a mask video or generated.

A mask video or frame folder goes through the same frame selection as the video (white = missing).
Generated masks: `box` (a fixed box in the middle, as for object removal), `strokes` (random thick
strokes, new ones every frame) and `logo` (a fixed corner box, as a watermark). Generated masks are
synthetic, so the truth under them is known and the inpainting can be scored.

Core module: imports only torch, numpy, Pillow and the video loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float
from PIL import Image, ImageDraw
from torch import Tensor

from nvp_nerfstudio.data.video import FrameSelection, VideoFrames, VideoInputError, load_video

GENERATED_MASKS = ("box", "strokes", "logo")
STROKES_PER_FRAME = 4


def load_mask(spec: str, video: VideoFrames, selection: FrameSelection = FrameSelection(), seed: int = 0) -> Bool[Tensor, "t h w"]:
    """The missing pixels of the video: a generated mask by name, or a mask video/folder (white = missing)."""
    shape = (video.num_frames, video.height, video.width)
    if spec in GENERATED_MASKS:
        mask = generated_mask(spec, *shape, seed=seed)
    elif not Path(spec).exists():
        raise VideoInputError(f"mask {spec!r} is neither a mask video or folder nor one of {', '.join(GENERATED_MASKS)}")
    else:
        frames = load_video(spec, selection).frames
        if tuple(frames.shape[:3]) != shape:
            raise VideoInputError(
                f"mask {spec} has {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]} after the frame "
                f"selection, the video {shape[0]} of {shape[2]}x{shape[1]}: give a mask of the video's length and size"
            )
        mask = frames.float().mean(dim=-1) > 127.5
    if bool(mask.all()):
        raise VideoInputError(f"mask {spec} covers every pixel: nothing is left to train on")
    return mask


def generated_mask(kind: str, num_frames: int, height: int, width: int, seed: int = 0) -> Bool[Tensor, "t h w"]:
    mask = torch.zeros(num_frames, height, width, dtype=torch.bool)
    if kind == "box":  # the middle quarter of width and height
        mask[:, height * 3 // 8 : max(height * 5 // 8, height * 3 // 8 + 1), width * 3 // 8 : max(width * 5 // 8, width * 3 // 8 + 1)] = True
    elif kind == "logo":  # a watermark-sized box in the top-right corner
        top, right = height // 16, width - width // 16
        mask[:, top : top + max(1, height // 8), right - max(1, width // 5) : right] = True
    elif kind == "strokes":
        rng = np.random.default_rng(seed)
        thickness = max(1, min(height, width) // 20)
        for frame in range(num_frames):
            canvas = Image.new("L", (width, height))
            draw = ImageDraw.Draw(canvas)
            for _ in range(STROKES_PER_FRAME):
                points = np.cumsum(rng.normal(0, min(height, width) / 6, (5, 2)), axis=0) + rng.uniform((0, 0), (width, height))
                draw.line([tuple(p) for p in points], fill=255, width=thickness, joint="curve")
            mask[frame] = torch.from_numpy(np.asarray(canvas) > 0)
    else:
        raise VideoInputError(f"unknown generated mask {kind!r}: choose one of {', '.join(GENERATED_MASKS)} or give a mask video")
    return mask


def temporal_median_fill(frames: torch.Tensor, missing: Bool[Tensor, "t h w"], rows_per_chunk: int = 32) -> Float[Tensor, "t h w 3"]:
    """Inpainting baseline: every missing pixel takes the median over time of the known values at its
    position, or its frame's mean known colour where that position is missing in every frame."""
    filled = frames.float() / 255.0
    known = ~missing
    frame_means = torch.stack([filled[i][known[i]].mean(dim=0) if known[i].any() else filled[i].mean(dim=(0, 1)) for i in range(len(filled))])
    for top in range(0, frames.shape[1], rows_per_chunk):  # bounded memory: a band of rows at a time
        band = filled[:, top : top + rows_per_chunk]
        band_missing = missing[:, top : top + rows_per_chunk]
        median = band.masked_fill(band_missing[..., None], float("nan")).nanmedian(dim=0).values  # [rows, w, 3]
        fill = median.expand_as(band)
        fill = torch.where(torch.isnan(fill), frame_means[:, None, None, :].expand_as(band), fill)
        band[band_missing] = fill[band_missing]
    return filled
