"""Uniform random (frame, row, column) samples gathered straight from the uint8 video tensor, or
every pixel of a few random frames for fields that generate whole frames.

Core module: imports only torch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from nvp_nerfstudio.fields.base import pixel_coordinates


class FramePixelSampler:
    """Draws pixels uniformly over the given frames; colours leave uint8 only for the sampled pixels."""

    def __init__(
        self,
        frames: UInt8[Tensor, "num_frames height width 3"],
        frame_indices: Sequence[int],
        device: torch.device | str = "cpu",
        seed: int | None = None,
        whole_frames: bool = False,
        missing: Bool[Tensor, "num_frames height width"] | None = None,
    ) -> None:
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        if len(frame_indices) == 0:
            raise ValueError("no frames to sample from")
        self.device = torch.device(device)
        self.whole_frames = whole_frames
        # Inpainting: pixels marked missing are never drawn, so they stay out of the loss.
        self.missing = None if missing is None else missing.to(self.device)
        self.frames = frames.to(self.device)  # no copy on CPU; one uint8 copy on a GPU
        self.frame_indices = torch.as_tensor(list(frame_indices), dtype=torch.int64, device=self.device)
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        if self.missing is not None and bool(self.missing[self.frame_indices].all()):
            raise ValueError("the mask leaves no pixel of these frames to train on")

    def sample(self, num: int) -> tuple[Int[Tensor, "num 3"], Float[Tensor, "num 3"]]:
        """Returns (camera index into frame_indices, row, column) per sample, and its RGB in [0, 1].

        With whole_frames, every (known) pixel of num // (height * width) random frames (at least one)."""
        camera, row, column = self._draw(num)
        if self.missing is not None:
            known = ~self.missing[self.frame_indices[camera], row, column]
            camera, row, column = camera[known], row[known], column[known]
            # Top up what the mask took away (whole frames: until some frame had a known pixel).
            while len(camera) < (1 if self.whole_frames else num):
                more = self._draw(2 * max(num - len(camera), 1))
                known = ~self.missing[self.frame_indices[more[0]], more[1], more[2]]
                camera, row, column = (torch.cat([a, b[known]]) for a, b in zip((camera, row, column), more))
            if not self.whole_frames:  # the draws are in random order, so the first num are a uniform draw too
                camera, row, column = camera[:num], row[:num], column[:num]
        if not self.whole_frames and self.device.type == "cpu":
            camera, row, column = self._video_order(camera, row, column)
        rgb = self.frames[self.frame_indices[camera], row, column].float().div_(255.0)
        return torch.stack([camera, row, column], dim=-1), rgb

    def _draw(self, num: int) -> tuple[Tensor, Tensor, Tensor]:
        _, height, width, _ = self.frames.shape
        options = {"device": self.device, "generator": self.generator}
        if self.whole_frames:
            count = max(1, num // (height * width))
            camera = torch.randint(len(self.frame_indices), (count, 1, 1), **options)
            row = torch.arange(height, device=self.device)[None, :, None]
            column = torch.arange(width, device=self.device)[None, None, :]
            return tuple(v.reshape(-1) for v in torch.broadcast_tensors(camera, row, column))
        return tuple(torch.randint(size, (num,), **options) for size in (len(self.frame_indices), height, width))

    def _video_order(self, camera: Tensor, row: Tensor, column: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The batch in video order (frame, row, column): the grids then read a frame's cells one after another
        and miss the cache less than at random (NVP-S at 640x272, 2^14 pixels: 72.6 -> 69.1 ms a step on the
        2-core CPU). Only on CPUs: unmeasured on GPUs, where neighbours in a batch would contend for atomics.
        It runs after the mask's top-up and cut, which must see the draws in random order to stay uniform."""
        _, height, width, _ = self.frames.shape
        order = torch.argsort((camera * height + row) * width + column)
        return camera[order], row[order], column[order]

    def coordinates(self, indices: Int[Tensor, "num 3"]) -> Float[Tensor, "num 3"]:
        """(x, y, t) in [0, 1]^3 of the sampled pixel centres: what the video model gets from their rays."""
        num_frames, height, width, _ = self.frames.shape
        t = self.frame_indices[indices[:, 0]].float() / max(num_frames - 1, 1)
        return pixel_coordinates(indices[:, 1], indices[:, 2], t, height, width)
