"""nvp-long: videos longer than memory, fitted as consecutive time segments, each its own field.

`fit` decodes the video once, one segment of `--segment-frames` at a time (neighbouring segments share
their boundary frame), trains a field on each with the benchmark's training loop and saves it, so peak
memory follows the segment, not the video. Under torch's launcher (`torchrun --nproc-per-node N -m
nvp_nerfstudio.scripts.long fit ...`) rank r trains segments r, r + N, ... on its own GPU, and reads only
those (`iter_segments`: from the keyframe before each, where the file's packets locate its frames). `render` and
`evaluate` treat the segments as one video: every frame is drawn by the field of its segment (a
boundary frame by the earlier one), and `evaluate` reports PSNR at the boundaries apart from the rest,
which is where a seam would show. `compress` writes every segment's compressed field into one .nvp file
(each a complete nvp-compress file inside); `render`, `evaluate` and nvp-decompress play it as one video.

Runs without nerfstudio.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, astuple, dataclass, replace
from pathlib import Path
from typing import Annotated, Optional, Tuple

import numpy as np
import torch
import tyro
from rich.console import Console

from nvp_nerfstudio.cli import command, one_line_parse_errors
from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.container import Container, Section
from nvp_nerfstudio.compression.field_codec import CodecOptions, VideoInfo
from nvp_nerfstudio.compression.field_codec import compress as compress_field
from nvp_nerfstudio.data.output import FrameWriter, check_output, make_folder, remove_empty, to_uint8, write_test_pattern, written_atomically
from nvp_nerfstudio.data.video import FrameSelection, VideoInputError, VideoSource, iter_segments, open_frames
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fit import FitConfig, evenly_spaced, psnr_against_time
from nvp_nerfstudio.memory import peak_rss_mib
from nvp_nerfstudio.methods import METHODS
from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.segments import MANIFEST, SegmentedVideo, load_segment, read_manifest

CONSOLE = Console()


@dataclass
class FitSegmentsConfig:
    source: tyro.conf.OmitArgPrefixes[VideoSource]
    output_dir: Path = Path("outputs/long")
    method: str = "nvp"
    segment_frames: int = 64
    """Frames per segment, the boundary frame included: what is in memory at once."""
    seconds_per_segment: float = 60.0
    steps_per_segment: Optional[int] = None
    """Train each segment this many steps instead of for `seconds_per_segment`."""
    train_batch: Optional[int] = None
    """Pixels per step; None: 2**14 on a CPU, 2**20 on CUDA."""
    device: Optional[str] = None
    """None: this rank's GPU under torchrun, else cuda if available, else cpu."""
    seed: int = 0


@dataclass
class RenderConfig:
    segments: Path
    """The output folder of `nvp-long fit`, or a .nvp file of `nvp-long compress`."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """A video (its container follows the extension, as nvp-render's --output) or a folder of PNG frames."""
    crf: int = 18


@dataclass
class EvaluateConfig:
    segments: Path
    """The output folder of `nvp-long fit`, or a .nvp file of `nvp-long compress`."""
    reference: Optional[str] = None
    """The source video, decoded again frame by frame; None: the one `fit` read (a .nvp file does not name it)."""


@dataclass
class CompressConfig:
    segments: Path
    """The output folder of `nvp-long fit`."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """The .nvp file to write: every segment's field in one file (nvp-decompress plays it as one video)."""
    codecs: tyro.conf.OmitArgPrefixes[CodecOptions] = CodecOptions()


@dataclass
class MemoryBenchConfig:
    lengths: Tuple[int, ...] = (100, 200, 400)
    """Frames of each generated clip; peak RSS should not grow with them."""
    segment_frames: int = 50
    size: Tuple[int, int] = (320, 180)
    """Width and height of the generated clips."""
    steps_per_segment: int = 5


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@command(memory="return")
def fit(config: FitSegmentsConfig) -> None:
    if config.method not in METHODS:
        raise SystemExit(f"error: unknown method {config.method!r}: choose one of {', '.join(METHODS)}")
    rank, world = distributed_rank()
    device = config.device or (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if world > 1:
        # torchrun stops the other ranks with SIGTERM when one fails: exit through Python, so that a segment being
        # written is removed (written_atomically) instead of left half-written.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        if torch.device(device).type == "cuda":  # NCCL's collectives run on the current device: this rank's own
            torch.cuda.set_device(torch.device(device))
        torch.distributed.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    try:
        made = make_folder(config.output_dir)
    except OSError as err:
        raise SystemExit(f"error: cannot make the output folder {config.output_dir} ({err.strerror}): pass another --output-dir") from None
    selection = config.source.selection
    segments = []
    try:
        parts = iter_segments(config.source.data, config.segment_frames, selection, wanted=lambda number: number % world == rank)
        for number, part in enumerate(parts):
            name = f"segment_{number:04d}.pt"
            segments.append({"file": name, "first": part.source_indices[0], "last": part.source_indices[-1]})
            if part.video is None:
                continue
            segment = part.video
            video = {"source": segment.source, "width": segment.width, "height": segment.height, "fps": segment.fps}
            shape = VideoShape(segment.num_frames, segment.height, segment.width)
            run = FitConfig(
                method=config.method, device=device, seconds=config.seconds_per_segment,
                steps=config.steps_per_segment, train_batch=config.train_batch, eval_every=float("inf"),
                seed=config.seed,
            )
            # A progress figure over 3 of the segment's frames: `nvp-long evaluate` scores every frame.
            curve, trained = psnr_against_time(run, segment, shape, final_frames=evenly_spaced(range(segment.num_frames), 3))
            saved = {"method": config.method, "shape": astuple(trained.shape), "state_dict": trained.state_dict()}  # its shots too
            save_segment(saved, config.output_dir / name)
            CONSOLE.print(
                f"segment {number} (frames {segment.source_indices[0]}-{segment.source_indices[-1]}): "
                f"{curve[-1]['psnr']:.2f} dB over {curve[-1]['frames']} of its frames, peak RSS {peak_rss_mib():.0f} MiB"
            )
            del trained, segment  # before the next segment is decoded
    except BaseException as err:
        remove_empty(made)  # the folders made for the segments go again if the fit failed before writing in them
        if isinstance(err, VideoInputError):
            raise SystemExit(f"error: {err}") from None
        raise
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        manifest = {
            **video, "method": config.method, "segment_frames": config.segment_frames, "downscale": config.source.downscale,
            "max_frames": config.source.max_frames, "segments": segments, "peak_rss_mib": peak_rss_mib(),
        }
        (config.output_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        CONSOLE.print(f"{len(segments)} segments of {config.method} in {config.output_dir} (peak RSS {peak_rss_mib():.0f} MiB)")
    if world > 1:
        torch.distributed.destroy_process_group()


def save_segment(saved: dict, path: Path) -> None:
    """Written whole or not at all; one error line if it cannot be (under torchrun the launcher then stops the
    other ranks)."""
    try:
        with written_atomically(path) as temporary:
            torch.save(saved, temporary)
    except OSError as err:
        raise SystemExit(f"error: cannot write {path} ({err.strerror or err}): free the path or pass another --output-dir") from None


@command()
def render(config: RenderConfig) -> None:
    check_output(config.output)  # before any segment is decoded
    video = SegmentedVideo.open(config.segments)
    with FrameWriter(config.output, video.width, video.height, video.fps or 25.0, config.crf) as writer:
        for _, frame in video.frames():  # a later segment of a .nvp file may fail to decode: CompressedFileError
            writer.write(to_uint8(frame))
    CONSOLE.print(f"Wrote {writer.index} frames from {len(video.spans)} segments to {config.output}")


@command()
def evaluate(config: EvaluateConfig) -> dict:
    """Mean per-frame PSNR against the source, over all frames, at segment boundaries and elsewhere."""
    video = SegmentedVideo.open(config.segments)
    reference = config.reference or video.source
    if reference is None:
        raise SystemExit(f"error: {config.segments} does not name its source video: pass --reference VIDEO")
    near_boundary = {i + d for i in video.boundaries for d in (-1, 0, 1)}
    scores: dict[int, float] = {}
    try:
        source = open_frames(reference, video.selection)
        if (source.width, source.height) != (video.width, video.height):
            raise VideoInputError(f"{reference} gives {source.width}x{source.height} frames, the segments {video.width}x{video.height}")
        for (index, frame), (source_index, truth) in zip(video.frames(), source.frames):
            if index != source_index:
                raise VideoInputError(f"frame {index} of the segments meets frame {source_index} of {reference}")
            scores[index] = psnr(frame, torch.from_numpy(truth).float() / 255.0)
    except VideoInputError as err:
        raise SystemExit(f"error: {err}: pass the video the segments were fitted on") from None
    if len(scores) != video.num_frames:
        raise SystemExit(f"error: {reference} has {len(scores)} of the segments' {video.num_frames} frames: pass the video they were fitted on")
    result = {
        "psnr": float(np.mean(list(scores.values()))),
        "psnr_near_boundaries": float(np.mean([s for i, s in scores.items() if i in near_boundary])) if near_boundary else None,
        "psnr_elsewhere": float(np.mean([s for i, s in scores.items() if i not in near_boundary])),
        "frames": len(scores),
    }
    CONSOLE.print(
        f"{result['frames']} frames: PSNR {result['psnr']:.2f} dB; within one frame of a segment boundary "
        f"{result['psnr_near_boundaries'] or float('nan'):.2f} dB, elsewhere {result['psnr_elsewhere']:.2f} dB"
    )
    return result


@command()
def compress(config: CompressConfig) -> None:
    """Every segment's field compressed as nvp-compress would (each a complete .nvp inside), in one file."""
    from nvp_nerfstudio.metrics import bits_per_pixel

    manifest = read_manifest(config.segments)
    selection = FrameSelection(max_frames=manifest["max_frames"], downscale=manifest["downscale"])
    sections = []
    for number, entry in enumerate(manifest["segments"]):
        field_module = load_segment(config.segments, entry, "cpu")
        span = replace(selection, start=entry["first"], end=entry["last"] + 1, max_frames=None)
        try:
            stored = compress_field(field_module, VideoInfo(manifest["method"], manifest["fps"], span), config.codecs)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        sections.append(Section(f"segment {number}", "nvp", container.to_bytes(stored)))
        CONSOLE.print(f"segment {number} (frames {entry['first']}-{entry['last']}): {len(sections[-1].payload):,} bytes")
    spans = [[entry["first"], entry["last"]] for entry in manifest["segments"]]
    video = {"width": manifest["width"], "height": manifest["height"], "fps": manifest["fps"]}
    data = container.to_bytes(Container({"video": video, "selection": asdict(selection), "segments": spans}, sections))
    container.write(config.output, data)
    shape = VideoShape(spans[-1][1] - spans[0][0] + 1, manifest["height"], manifest["width"])
    CONSOLE.print(f"Wrote {config.output}: {len(data):,} bytes, {bits_per_pixel(len(data), shape):.4f} bpp ({len(sections)} segments)")


def memory_bench(config: MemoryBenchConfig) -> list[dict]:
    """Peak RSS of `fit` on generated clips of growing length: it should stay flat."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for length in config.lengths:
            clip = Path(scratch) / f"clip_{length}.mp4"
            width, height = config.size
            write_test_pattern(clip, length, width, height)
            out = Path(scratch) / f"fit_{length}"
            command = [sys.executable, "-m", "nvp_nerfstudio.scripts.long", "fit", "--data", str(clip), "--output-dir", str(out),
                       "--segment-frames", str(config.segment_frames), "--steps-per-segment", str(config.steps_per_segment),
                       "--train-batch", "4096", "--device", "cpu"]
            subprocess.run(command, check=True, capture_output=True, text=True)
            peak = read_manifest(out)["peak_rss_mib"]
            rows.append({"frames": length, "clip_mib": length * width * height * 3 / 2**20, "peak_rss_mib": peak})
            CONSOLE.print(f"{length:5d} frames ({rows[-1]['clip_mib']:.1f} MiB as uint8): peak RSS {peak:.0f} MiB")
    return rows


COMMANDS = {"fit": (FitSegmentsConfig, fit), "render": (RenderConfig, render), "evaluate": (EvaluateConfig, evaluate),
            "compress": (CompressConfig, compress), "memory-bench": (MemoryBenchConfig, memory_bench)}


def entrypoint() -> None:
    with one_line_parse_errors():
        config = tyro.extras.subcommand_cli_from_dict({name: config_type for name, (config_type, _) in COMMANDS.items()})
    next(command for config_type, command in COMMANDS.values() if isinstance(config, config_type))(config)


if __name__ == "__main__":
    entrypoint()
