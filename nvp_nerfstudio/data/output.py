"""Where nvp-render and nvp-decompress write frames: a video file whose container follows the extension, or a
folder of PNG frames. The path is checked before any rendering, and the output appears under its name only
when complete.

The rule: an existing directory, or a path with no extension, is a folder of PNG frames (frame_00000.png, ...);
a path ending in one of VIDEO_FORMATS' extensions is a video; any other extension is refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import av
import numpy as np
import torch
from jaxtyping import UInt8
from PIL import Image


def to_uint8(image: torch.Tensor) -> UInt8[np.ndarray, "height width 3"]:
    """A rendered frame (RGB in [0, 1]) as 8-bit, rounded."""
    return (image.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


@contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write a file under: renamed to `path` (after an fsync) when the block
    ends, deleted if it raises or is interrupted. Never a half-written file, never a clobbered older one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def make_folder(folder: Path) -> list[Path]:
    """Make `folder` and its missing parents; the folders it made, innermost first."""
    missing = [made for made in (folder, *folder.parents) if not made.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Take the folders (innermost first) away again, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


class OutputPathError(ValueError):
    """An output path that cannot be written: the message names it and what to do."""


@dataclass(frozen=True)
class VideoFormat:
    codec: str
    pix_fmt: str
    constant_quality: bool
    """Whether --crf sets the quality (x264 and VP9); the other codecs have fixed settings."""
    options: tuple[tuple[str, str], ...] = ()


# Each container with a codec it takes that PyAV ships; 4:2:0 plays everywhere but needs even sizes.
VIDEO_FORMATS = {
    ".mp4": VideoFormat("libx264", "yuv420p", True),
    ".mkv": VideoFormat("libx264", "yuv420p", True),
    ".mov": VideoFormat("libx264", "yuv420p", True),
    ".webm": VideoFormat("libvpx-vp9", "yuv420p", True, (("b", "0"),)),  # bitrate 0: constant quality
    ".avi": VideoFormat("mjpeg", "yuvj420p", False, (("qmin", "2"), ("qmax", "2"))),  # JPEG quality 2 of 2..31
    ".y4m": VideoFormat("rawvideo", "yuv444p", False),  # uncompressed
}


def video_format(path: Path) -> Optional[VideoFormat]:
    """The format a path asks for, None for a PNG folder."""
    if path.is_dir() or not path.suffix:
        return None
    if path.suffix.lower() not in VIDEO_FORMATS:
        raise OutputPathError(
            f"cannot write {path}: {path.suffix} is not a video format this writes ({', '.join(VIDEO_FORMATS)}); "
            "for PNG frames pass a folder name without an extension"
        )
    return VIDEO_FORMATS[path.suffix.lower()]


def partial_path(path: Path) -> Path:
    """The hidden name beside the target that the output is written under until complete."""
    return path.with_name(f".{path.name}.partial{path.suffix}")


def check_output(path: Path) -> None:
    """Raise OutputPathError, in one line, for an output that could not be written: an unknown extension, a file
    where a folder is asked for, a parent that is a file or not writable. Makes nothing that stays: FrameWriter
    makes missing parent folders when it starts writing."""
    is_video = video_format(path) is not None
    if not is_video and path.exists() and not path.is_dir():
        raise OutputPathError(f"cannot write PNG frames into {path}: it is a file; pass a folder name or a video file name")
    existing = next(parent for parent in path.parents if parent.exists())
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {path}: {existing} is a file, not a folder; choose another output path")
    if existing != path.parent:  # the writer will make the folders: check that it may
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {path}: no permission to make folders in {existing}; choose another output path")
        return
    partial = partial_path(path)
    try:  # create what the writer will create, so that it fails here and not after the rendering
        if is_video:
            partial.touch()
            partial.unlink()
        else:
            shutil.rmtree(partial, ignore_errors=True)  # left by a render that was killed
            partial.mkdir()
            partial.rmdir()
    except OSError as err:
        folder = Path(err.filename).parent if err.filename else path.parent
        raise OutputPathError(f"cannot write {path}: {err.strerror or err} in {folder}; choose another output path") from None


class FrameWriter:
    """Writes RGB frames to a video (the container the extension names) or to numbered PNG files, under a hidden
    name beside the target (partial_path). Used as a context manager: on success the output replaces the target
    (a folder's earlier frame_*.png files go); on failure or interruption it is removed, so no half-written
    output is left under the target name and an older one is not destroyed."""

    def __init__(self, output: Path, width: int, height: int, fps: float, crf: int) -> None:
        check_output(output)
        self.output = output
        self.partial = partial_path(output)
        self.index = 0
        self.container = None
        self.made = make_folder(output.parent)  # taken away again if the writing fails
        fmt = video_format(output)
        if fmt is None:
            self.partial.mkdir()
            return
        try:
            self.container = av.open(str(self.partial), "w")
        except BaseException:
            remove_empty(self.made)
            raise
        self.stream = self.container.add_stream(fmt.codec, rate=Fraction(fps).limit_denominator(1001))
        self.even = fmt.pix_fmt.endswith("420p")
        # 4:2:0 needs even sizes: pad by repeating the last row/column.
        self.stream.width, self.stream.height = (width + width % 2, height + height % 2) if self.even else (width, height)
        self.stream.pix_fmt = fmt.pix_fmt
        self.stream.options = {**dict(fmt.options), **({"crf": str(crf)} if fmt.constant_quality else {})}

    def write(self, frame: UInt8[np.ndarray, "height width 3"]) -> None:
        if self.container is None:
            Image.fromarray(frame).save(self.partial / f"frame_{self.index:05d}.png")
        else:
            if self.even:
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
            self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        self.index += 1

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, error_type, *_) -> None:
        published = False
        try:
            if self.container is not None:
                with self.container:  # closed whatever happens
                    if error_type is None:
                        self.container.mux(self.stream.encode())
            if error_type is None:
                self._publish()
                published = True
        finally:  # a failure or an interruption: the partial output goes, and the folders made for it
            if self.partial.is_dir():
                shutil.rmtree(self.partial)
            else:
                self.partial.unlink(missing_ok=True)
            if not published:
                remove_empty(self.made)

    def _publish(self) -> None:
        if self.container is not None or not self.output.is_dir():
            self.partial.replace(self.output)
            return
        # An existing folder: its earlier frames make way for the new ones.
        for old in self.output.glob("frame_*.png"):
            old.unlink()
        for new in self.partial.iterdir():
            new.replace(self.output / new.name)
        self.partial.rmdir()


def write_test_pattern(path: Path, frames: int, width: int, height: int) -> None:
    """A clip of a moving colour pattern (every frame differs) for the memory benchmarks, as an mp4 at crf 18."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    with FrameWriter(path, width, height, 25.0, 18) as writer:
        for t in range(frames):
            writer.write(np.stack([(x + 3 * t) % 256, (y * 2 + t) % 256, (x + y + 5 * t) % 256], -1).astype(np.uint8))
