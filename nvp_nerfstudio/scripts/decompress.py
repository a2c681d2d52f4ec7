"""nvp-decompress: rebuild the field from a .nvp file alone and render every frame to a video or PNG folder
(a segmented file of `nvp-long compress`: every segment's field in turn, as one video).

With --reference, also scores the frames against the source video (mean per-frame PSNR and SSIM,
as ns-eval does), loaded with the frame selection the run trained on (stored in the file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from nvp_nerfstudio.cli import command, parse
from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.container import CompressedFileError, Container
from nvp_nerfstudio.compression.field_codec import decode
from nvp_nerfstudio.data.fingerprint import SourceFingerprint
from nvp_nerfstudio.data.output import FrameWriter, check_output, to_uint8
from nvp_nerfstudio.data.video import FrameSelection, VideoInputError, open_frames
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.rendering import field_frames
from nvp_nerfstudio.segments import SegmentedVideo

CONSOLE = Console()


@dataclass
class DecompressConfig:
    input: tyro.conf.Positional[Path]
    """A .nvp file written by nvp-compress."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """A video whose container follows the extension (.mp4, .mkv, .mov: H.264; .webm: VP9; .avi: MJPEG;
    .y4m: uncompressed), or a folder of PNG frames (an existing folder, or a name with no extension).
    Other extensions are refused. Written under a hidden name beside it, renamed when complete."""
    reference: Optional[str] = None
    """The source video (file, frame folder or sample:NAME) to score the frames against."""
    crf: int = 18
    """H.264 / VP9 quality of a video output (0 = lossless)."""
    chunk: int = 1 << 16
    """Pixels per forward pass."""


@dataclass
class DecodedVideo:
    frames: Iterator[Tensor]
    shape: VideoShape
    fps: float
    selection: FrameSelection
    """The source frames it was trained on."""
    fingerprint: Optional[SourceFingerprint]
    """Theirs (None: a segmented file, or one written before fingerprints)."""
    label: str


def decoded_frames(stored: Container, source: str, chunk: int) -> DecodedVideo:
    """The frames of a one-field file, or of a segmented one (`nvp-long compress`: each segment's field
    decoded when its frames come), and what the file says of the video."""
    if "segments" in stored.meta:
        video = SegmentedVideo.from_container(stored, source)
        frames = (frame for _, frame in video.frames())
        shape = VideoShape(video.num_frames, video.height, video.width)
        return DecodedVideo(frames, shape, video.fps, video.selection, None, f"{len(video.spans)} segments")
    field, info = decode(stored, source)
    return DecodedVideo(field_frames(field, chunk), field.shape, info.fps, info.selection, info.source, f"the {info.method} field")


@command()
def main(config: DecompressConfig) -> None:
    from torchmetrics.functional import structural_similarity_index_measure

    check_output(config.output)  # before anything is decoded
    start = time.perf_counter()
    decoded = decoded_frames(container.read(config.input), str(config.input), config.chunk)
    shape, fingerprint = decoded.shape, decoded.fingerprint
    decode_seconds = time.perf_counter() - start
    reference = None
    if config.reference is not None:  # decoded frame by frame alongside: never the whole video in memory
        reference = open_frames(config.reference, decoded.selection)
        if (reference.width, reference.height) != (shape.width, shape.height):
            raise SystemExit(
                f"error: the reference is {reference.width}x{reference.height} but {config.input} holds "
                f"{shape.width}x{shape.height} frames: pass the video the run trained on"
            )
    scores = []
    start = time.perf_counter()
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    writer = FrameWriter(config.output, shape.width, shape.height, decoded.fps or 25.0, config.crf)
    try:
        with writer, Progress(*columns, console=CONSOLE) as progress:
            task = progress.add_task("render", total=shape.num_frames)
            truths = reference.frames if reference is not None else None
            for index, frame in enumerate(decoded.frames):
                writer.write(to_uint8(frame))
                if truths is not None:
                    _, truth_rgb = next(truths, (None, None))
                    if truth_rgb is None:
                        raise VideoInputError(f"the reference has fewer frames than the {shape.num_frames} of {config.input}")
                    if fingerprint is not None:  # a hashed frame is checked as it comes: a wrong reference stops early
                        fingerprint.check_frame(config.reference, index, truth_rgb, f"the run in {config.input}")
                    truth = torch.from_numpy(truth_rgb).float() / 255.0
                    pair = frame.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None]
                    scores.append((psnr(frame, truth), float(structural_similarity_index_measure(*pair, data_range=1.0))))
                progress.advance(task)
            if truths is not None and fingerprint is not None and next(truths, None) is not None:
                raise VideoInputError(
                    f"{config.reference} holds more than the {shape.num_frames} selected frames the run in {config.input} was "
                    "trained on: pass the video the run trained on"
                )
    except (CompressedFileError, VideoInputError) as err:  # a later segment, or the reference, fails midway
        raise SystemExit(f"error: {err}") from None
    render_seconds = time.perf_counter() - start
    CONSOLE.print(
        f"Decoded {decoded.label} of {config.input} in {decode_seconds:.1f} s; wrote {shape.num_frames} frames "
        f"of {shape.width}x{shape.height} to {config.output} in {render_seconds:.1f} s"
    )
    if scores:
        mean_psnr, mean_ssim = torch.tensor(scores).mean(0).tolist()
        CONSOLE.print(
            f"Against {config.reference}: PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.4f} (mean over {len(scores)} frames)"
        )


def entrypoint() -> None:
    main(parse(DecompressConfig))


if __name__ == "__main__":
    entrypoint()
