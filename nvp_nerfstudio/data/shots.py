"""Where a video's shots begin: its scene cuts, found by PySceneDetect's content detector (HSV change between
frames, its default threshold and shortest shot). Core module: no nerfstudio."""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import UInt8
from torch import Tensor

from nvp_nerfstudio.data.video import VideoInputError

DETECT_WIDTH = 320
"""Frames are subsampled to at most about this width for the detector (a cut changes a frame's colours
everywhere; the detector's cost grows with the pixels)."""


def shot_starts(frames: UInt8[Tensor, "num_frames height width 3"]) -> tuple[int, ...]:
    """The first frame of each shot, 0 included."""
    try:
        from scenedetect.detectors import ContentDetector
    except ImportError as err:  # one line through the commands, as for a bad input: the environment lacks a piece
        raise VideoInputError(f"finding the shots of a video needs PySceneDetect and OpenCV ({err}): pip install 'scenedetect[opencv-headless]==0.6.5'") from None

    step = max(1, math.ceil(frames.shape[2] / DETECT_WIDTH))
    detector = ContentDetector()
    cuts: list[int] = []
    for index, frame in enumerate(frames):
        # The detector reads OpenCV's BGR order.
        cuts += detector.process_frame(index, np.ascontiguousarray(frame[::step, ::step].numpy()[..., ::-1]))
    return (0, *sorted(cut for cut in set(cuts) if 0 < cut < len(frames)))
