"""nvp-render: turn a trained video field back into a video (mp4, mkv, mov, webm, avi, y4m) or PNG frames.

Any frame rate (a multiple of the source's: 2x, 4x interpolate by querying fractional t), any
resolution (down, or up by querying a finer pixel grid), a time range, and a side-by-side mode
(ground truth | reconstruction | error). Frames are rendered in bounded chunks and written one by
one, so memory does not grow with the length of the video.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import numpy as np
import psutil
import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nvp_nerfstudio.cli import command, parse
from nvp_nerfstudio.data.output import FrameWriter, check_output, to_uint8
from nvp_nerfstudio.data.video import VideoFrames
from nvp_nerfstudio.plugin.runs import load_field, load_run
from nvp_nerfstudio.rendering import render_frame

CONSOLE = Console()
# A frame's coordinates and colours in float32, the frame as uint8 and the writer's copy of it: a rendered frame
# needs about this much memory a pixel (rendering in chunks bounds the field's own working memory).
RENDER_BYTES_PER_PIXEL = 32


@dataclass
class RenderConfig:
    load_config: Path
    """config.yml of a trained run (outputs/CLIP/nvp/TIMESTAMP/config.yml)."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """A video whose container follows the extension (.mp4, .mkv, .mov: H.264; .webm: VP9; .avi: MJPEG;
    .y4m: uncompressed), or a folder of PNG frames (an existing folder, or a name with no extension).
    Other extensions are refused. Written under a hidden name beside it, renamed when complete."""
    rate: float = 1.0
    """Output frames per source frame: 2 or 4 interpolate between frames."""
    scale: float = 1.0
    """Output size relative to the source: 0.5 halves it, 2 queries twice as many pixels per axis."""
    start_frame: float = 0.0
    """First source frame to render (fractional values allowed)."""
    end_frame: Optional[float] = None
    """Last source frame to render (inclusive); None for the last frame."""
    side_by_side: bool = False
    """Ground truth | reconstruction | error map (needs rate 1 and scale 1: the truth exists only there)."""
    fps: Optional[float] = None
    """Output frame rate; None: the source's times rate (25 x rate when the source has none)."""
    crf: int = 18
    """H.264 / VP9 quality (0 = lossless, 18 = visually lossless, 23 = x264's default)."""
    chunk: int = 1 << 16
    """Pixels per forward pass."""


def frame_positions(config: RenderConfig, num_frames: int) -> np.ndarray:
    """Source frame positions (possibly fractional) of every output frame."""
    end = num_frames - 1 if config.end_frame is None else config.end_frame
    if not 0 <= config.start_frame <= end <= num_frames - 1:
        raise SystemExit(f"error: frame range {config.start_frame}..{end} is outside the video's 0..{num_frames - 1}")
    if config.rate <= 0 or config.scale <= 0:
        raise SystemExit("error: --rate and --scale must be positive")
    count = int(round((end - config.start_frame) * config.rate)) + 1
    return config.start_frame + np.arange(count) / config.rate


def error_map(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Absolute error, amplified 4x so that small errors show, as a grey image."""
    return ((prediction - truth).abs().mean(dim=-1, keepdim=True) * 4).clamp(0, 1).expand(-1, -1, 3)


def rendered_frames(
    config: RenderConfig, field, truth: Optional[VideoFrames], positions: np.ndarray, height: int, width: int
) -> Iterator[tuple[np.ndarray, float]]:
    """Yields each output frame as uint8 and the seconds spent querying the field for it (`truth`: the run's
    frames, for --side-by-side)."""
    last = max(field.shape.num_frames - 1, 1)
    for position in positions:
        start = time.perf_counter()
        prediction = render_frame(field, float(position) / last, height, width, config.chunk)
        seconds = time.perf_counter() - start
        if config.side_by_side:
            frame = truth.frames[int(round(position))].to(prediction.device).float() / 255.0
            prediction = torch.cat([frame, prediction, error_map(prediction, frame)], dim=1)
        yield to_uint8(prediction), seconds


@command()
def main(config: RenderConfig) -> None:
    if not config.load_config.is_file():
        raise SystemExit(f"error: {config.load_config} does not exist: pass the config.yml of a trained run")
    check_output(config.output)  # before the model is loaded and any frame rendered
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if config.side_by_side:  # the truth beside each frame: the run's frames, decoded once
        field, info, truth, checkpoint = load_run(config.load_config)
    else:  # the field alone: memory does not grow with the clip's length
        (field, info, checkpoint), truth = load_field(config.load_config, device), None
    shape = field.shape
    positions = frame_positions(config, shape.num_frames)
    if config.side_by_side and (config.scale != 1.0 or np.any(positions != np.round(positions))):
        raise SystemExit("error: --side-by-side needs --scale 1 and whole source frames (the truth exists only there)")
    fps = config.fps or (info.fps or 25.0) * config.rate
    height, width = max(1, round(shape.height * config.scale)), max(1, round(shape.width * config.scale))
    needed, available = height * width * RENDER_BYTES_PER_PIXEL, psutil.virtual_memory().available
    if needed > available:
        raise SystemExit(
            f"error: --scale {config.scale:g} makes frames of {width}x{height}, about {needed / 2**30:.1f} GiB each to render, "
            f"and {available / 2**30:.1f} GiB is free: lower --scale"
        )
    field_seconds = 0.0
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with FrameWriter(config.output, width * (3 if config.side_by_side else 1), height, fps, config.crf) as writer:
        with Progress(*columns, console=CONSOLE) as progress:
            task = progress.add_task("render", total=len(positions))
            for frame, seconds in rendered_frames(config, field, truth, positions, height, width):
                writer.write(frame)
                field_seconds += seconds
                progress.advance(task)
    pixels = len(positions) * height * width
    source_fps = pixels / (shape.height * shape.width) / field_seconds
    CONSOLE.print(f"Wrote {len(positions)} frames of {width}x{height} at {fps:g} fps to {config.output} (from {checkpoint})")
    CONSOLE.print(f"Decode speed: {source_fps:.2f} frames/s at the source resolution {shape.width}x{shape.height}")


def entrypoint() -> None:
    main(parse(RenderConfig))


if __name__ == "__main__":
    entrypoint()
