"""nvp-decompress: rebuild the field from a .nvp file alone and render every frame to an mp4 or PNG folder.

With --reference, also scores the frames against the source video (mean per-frame PSNR and SSIM,
as ns-eval does), loaded with the frame selection the run trained on (stored in the file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.container import CompressedFileError
from nvp_nerfstudio.compression.field_codec import decode
from nvp_nerfstudio.data.video import VideoInputError, load_video
from nvp_nerfstudio.render import psnr, render_frame
from nvp_nerfstudio.scripts.render import FrameWriter, to_uint8

CONSOLE = Console()


@dataclass
class DecompressConfig:
    input: tyro.conf.Positional[Path]
    """A .nvp file written by nvp-compress."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """A .mp4 file (H.264), or a folder to fill with PNG frames."""
    reference: Optional[str] = None
    """The source video (file, frame folder or sample:NAME) to score the frames against."""
    crf: int = 18
    """H.264 quality of an mp4 output (0 = lossless)."""
    chunk: int = 1 << 16
    """Pixels per forward pass."""


def main(config: DecompressConfig) -> None:
    from torchmetrics.functional import structural_similarity_index_measure

    start = time.perf_counter()
    try:
        field, info = decode(container.read(config.input), str(config.input))
    except CompressedFileError as err:
        raise SystemExit(f"error: {err}") from None
    decode_seconds = time.perf_counter() - start
    shape = field.shape
    reference = None
    if config.reference is not None:
        try:
            reference = load_video(config.reference, info.selection)
        except VideoInputError as err:
            raise SystemExit(f"error: {err}") from None
        if tuple(reference.frames.shape[:3]) != (shape.num_frames, shape.height, shape.width):
            raise SystemExit(
                f"error: the reference is {reference.num_frames} frames of {reference.width}x{reference.height} but "
                f"{config.input} holds {shape.num_frames} of {shape.width}x{shape.height}: pass the video the run trained on"
            )
    writer = FrameWriter(config.output, shape.width, shape.height, info.fps or 25.0, config.crf)
    scores = []
    start = time.perf_counter()
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=CONSOLE) as progress:
            task = progress.add_task("render", total=shape.num_frames)
            for index in range(shape.num_frames):
                frame = render_frame(field, index / max(shape.num_frames - 1, 1), shape.height, shape.width, config.chunk)
                writer.write(to_uint8(frame))
                if reference is not None:
                    truth = reference.frames[index].float() / 255.0
                    pair = frame.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None]
                    scores.append((psnr(frame, truth), float(structural_similarity_index_measure(*pair, data_range=1.0))))
                progress.advance(task)
    finally:
        writer.close()
    render_seconds = time.perf_counter() - start
    CONSOLE.print(
        f"Decoded the {info.method} field of {config.input} in {decode_seconds:.1f} s; wrote {shape.num_frames} frames "
        f"of {shape.width}x{shape.height} to {config.output} in {render_seconds:.1f} s"
    )
    if scores:
        mean_psnr, mean_ssim = torch.tensor(scores).mean(0).tolist()
        CONSOLE.print(
            f"Against {config.reference}: PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.4f} (mean over {len(scores)} frames)"
        )


def entrypoint() -> None:
    main(tyro.cli(DecompressConfig))


if __name__ == "__main__":
    entrypoint()
