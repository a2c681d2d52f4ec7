"""A video fitted as consecutive time segments, each its own field (nvp-long): the segments of a `fit` folder
or of a segmented .nvp file, played as one video.

Core module: no nerfstudio.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.container import CompressedFileError, Container, corrupt
from nvp_nerfstudio.compression.field_codec import decode
from nvp_nerfstudio.data.video import FrameSelection
from nvp_nerfstudio.fields.base import VideoField, VideoShape
from nvp_nerfstudio.methods import METHODS
from nvp_nerfstudio.rendering import render_frame

MANIFEST = "segments.json"


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist: pass the output folder of `nvp-long fit`")
    return json.loads(path.read_text())


def load_segment(folder: Path, entry: dict, device: str) -> VideoField:
    saved = torch.load(folder / entry["file"], map_location=device, weights_only=True)
    field_module = METHODS[saved["method"]].field.setup(shape=VideoShape(*saved["shape"])).to(device)
    field_module.load_state_dict(saved["state_dict"])
    return field_module.eval()


@dataclass
class SegmentedVideo:
    """Consecutive fields that make one video, from a `fit` folder or a segmented .nvp file; each field is
    loaded only when its frames are drawn."""

    width: int
    height: int
    fps: float
    selection: FrameSelection
    """The source frames `fit` read (downscale, max_frames)."""
    spans: list[tuple[int, int]]
    """(first, last) source frame of each segment; neighbours share their boundary frame."""
    loaders: list[Callable[[], VideoField]]
    source: Optional[str] = None
    """The video `fit` read; a .nvp file does not name it."""

    @classmethod
    def open(cls, path: Path) -> "SegmentedVideo":
        """A `fit` folder or a .nvp file of `nvp-long compress`; SystemExit with one line when it is neither."""
        if path.is_dir():
            manifest = read_manifest(path)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            return cls(
                manifest["width"], manifest["height"], manifest["fps"],
                FrameSelection(max_frames=manifest["max_frames"], downscale=manifest["downscale"]),
                [(entry["first"], entry["last"]) for entry in manifest["segments"]],
                [lambda entry=entry: load_segment(path, entry, device) for entry in manifest["segments"]],
                manifest["source"],
            )
        try:
            stored = container.read(path)
            return cls.from_container(stored, str(path))
        except CompressedFileError as err:
            raise SystemExit(f"error: {err}") from None

    @classmethod
    def from_container(cls, stored: Container, source: str) -> "SegmentedVideo":
        meta = stored.meta
        try:
            video, spans = meta["video"], [(int(first), int(last)) for first, last in meta["segments"]]
            width, height, fps = int(video["width"]), int(video["height"]), float(video["fps"])
            selection = FrameSelection(**meta["selection"])
        except (KeyError, TypeError, ValueError):
            raise corrupt(source, "its header does not describe a segmented video (or is it a one-field file? use nvp-decompress)") from None
        contiguous = all(last == following[0] for (_, last), following in zip(spans, spans[1:]))
        if not spans or len(stored.sections) != len(spans) or not contiguous or any(last <= first for first, last in spans):
            raise corrupt(source, "its segment table does not match its sections")

        def loader(number: int) -> Callable[[], VideoField]:
            name = f"{source} segment {number}"
            return lambda: decode(container.from_bytes(stored.sections[number].payload, name), name)[0]

        return cls(width, height, fps, selection, spans, [loader(number) for number in range(len(spans))])

    @property
    def num_frames(self) -> int:
        return self.spans[-1][1] - self.spans[0][0] + 1

    @property
    def boundaries(self) -> set[int]:
        return {last for _, last in self.spans[:-1]}

    def frames(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(source frame index, RGB in [0, 1]) of every frame in order, each from its segment's field; the
        boundary frame two segments share comes from the earlier one."""
        done = -1
        for (first, last), load in zip(self.spans, self.loaders):
            field_module = load()
            for index in range(max(first, done + 1), last + 1):
                t = (index - first) / max(last - first, 1)
                yield index, render_frame(field_module, t, self.height, self.width).cpu()
            done = last
            del field_module
