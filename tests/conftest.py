from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch


def write_clip(
    path: Path, frames: np.ndarray, codec: str = "libx264", pix_fmt: str = "yuv420p", fps: int = 10, rotation: int = 0, **options: str
) -> Path:
    """Encode uint8 (T, H, W, 3) frames with PyAV; `rotation`: the display matrix's counter-clockwise degrees."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
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


def run_triton_check(module: str, check: str, *args) -> None:
    """Runs `check(*args, device)` of a test module with the Triton kernels: compiled on CUDA; on a CPU by
    Triton's interpreter, which must be switched on before Triton is first imported: in a fresh interpreter,
    since other tests may have imported it."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        getattr(importlib.import_module(module), check)(*args, "cuda")
        return
    code = f"import {module}; {module}.{check}(*{args!r}, 'cpu')"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


# A run small enough to train in seconds on a CPU: 4 frames of carphone at 44x36, 256 pixels a step.
TINY_RUN_ARGS = [
    "--vis", "tensorboard",
    "--pipeline.datamanager.dataparser.max-frames", "4",
    "--pipeline.datamanager.dataparser.downscale", "4",
    "--pipeline.datamanager.train-num-rays-per-batch", "256",
    "--steps-per-eval-image", "100000",
]


def run_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A console script of this environment (ns-train, ns-eval, nvp-render, ...), its output captured."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(Path(sys.executable).parent / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def train_tiny_run(output_dir: Path, data: str = "sample:carphone", *args: str, method: str = "nvp") -> Path:
    """`ns-train METHOD` of a tiny run on `data`; returns its config.yml."""
    result = run_command("ns-train", method, "--data", data, *TINY_RUN_ARGS, *args, "--output-dir", str(output_dir), cwd=output_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    (config,) = output_dir.glob(f"*/{method}/*/config.yml")
    return config
