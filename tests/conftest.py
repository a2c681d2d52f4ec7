from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest


def write_clip(path: Path, frames: np.ndarray, codec: str = "libx264", pix_fmt: str = "yuv420p", fps: int = 10, **options: str) -> Path:
    """Encode uint8 (T, H, W, 3) frames with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = options
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def moving_gradient(num_frames: int, height: int, width: int) -> np.ndarray:
    """A smooth clip with motion: a colour gradient sliding right one pixel a frame."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    red = 128 + 100 * np.sin((x - t) / 5.0)
    green = 128 + 100 * np.cos(y / 4.0 + t / 7.0)
    blue = 255.0 * x / max(width - 1, 1)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


@pytest.fixture
def random_frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (7, 23, 37, 3), dtype=np.uint8)
