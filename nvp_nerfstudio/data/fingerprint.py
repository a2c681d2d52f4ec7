"""What a run records of the frames it trained on: their count, size and a hash of a few of them. The commands
that load a run or score against its source (ns-eval, nvp-render, nvp-compress, nvp-decompress --reference)
check the video at the source's path against it, and refuse another video put in its place.

Core module: imports only numpy and the video module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from jaxtyping import UInt8

from nvp_nerfstudio.data.video import VideoFrames, VideoInputError


def hashed_frames(num_frames: int) -> list[int]:
    """The frames whose pixels the fingerprint hashes: first, middle and last (a cut, a re-encode or another clip
    of the same size changes them)."""
    return sorted({0, num_frames // 2, num_frames - 1})


def frame_hash(frame: UInt8[np.ndarray, "height width 3"]) -> str:
    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class SourceFingerprint:
    num_frames: int
    width: int
    height: int
    frame_hashes: tuple[tuple[int, str], ...]
    """(frame index in the selection, hash of its RGB bytes) of each of hashed_frames(num_frames)."""

    @staticmethod
    def of(video: VideoFrames) -> "SourceFingerprint":
        hashes = tuple((index, frame_hash(video.frames[index].numpy())) for index in hashed_frames(video.num_frames))
        return SourceFingerprint(video.num_frames, video.width, video.height, hashes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as a checkpoint (torch's weights-only load) and an .nvp header (JSON) store it."""
        return {"frames": self.num_frames, "width": self.width, "height": self.height, "frame_hashes": [list(h) for h in self.frame_hashes]}

    @staticmethod
    def from_dict(values: Optional[dict[str, Any]]) -> Optional["SourceFingerprint"]:
        """None for a run or file written before fingerprints (nothing to check against)."""
        if values is None:
            return None
        hashes = tuple((int(index), str(digest)) for index, digest in values["frame_hashes"])
        return SourceFingerprint(int(values["frames"]), int(values["width"]), int(values["height"]), hashes)

    @property
    def size(self) -> str:
        return f"{self.num_frames} frames of {self.width}x{self.height}"

    def check_size(self, source: str, num_frames: int, width: int, height: int, trained: str) -> None:
        """Raises VideoInputError unless the source's selected frames have the fingerprinted count and size.
        `trained`: who recorded the fingerprint (the run, an .nvp file), as the message names it."""
        if (num_frames, width, height) != (self.num_frames, self.width, self.height):
            raise VideoInputError(
                f"{source} holds {num_frames} frames of {width}x{height}, not the {self.size} {trained} was trained on: "
                f"put that video back at {source}, or train a new run on this one"
            )

    def hashes_frame(self, index: int) -> bool:
        """Whether frame `index` of the selection is one the fingerprint holds a hash of."""
        return any(hashed == index for hashed, _ in self.frame_hashes)

    def check_frame(self, source: str, index: int, frame: UInt8[np.ndarray, "height width 3"], trained: str) -> None:
        """Raises VideoInputError if frame `index` of the selection is a hashed one and not the one fingerprinted
        (a streamed source is checked frame by frame as it decodes)."""
        expected = dict(self.frame_hashes).get(index)
        if expected is not None and frame_hash(frame) != expected:
            raise VideoInputError(
                f"{source} is not the video {trained} was trained on (the same size, but frame {index} of the selection "
                f"differs): put that video back at {source}, or train a new run on this one"
            )

    def check_video(self, video: VideoFrames, trained: str) -> None:
        self.check_size(video.source, video.num_frames, video.width, video.height, trained)
        for index, _ in self.frame_hashes:
            self.check_frame(video.source, index, video.frames[index].numpy(), trained)
