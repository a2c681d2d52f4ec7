"""The baseline video fields of the paper's comparisons: SIREN, FFN, Instant-NGP-style hash grid, K-Planes, NeRV.

Each maps (x, y, t) in [0, 1]^3 to RGB like the NVP field, so the model, data, training and metrics
are the same; only the field differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.encodings.grid import GridEncodingConfig
from nvp_nerfstudio.fields.base import VideoField, VideoFieldConfig, VideoShape
from nvp_nerfstudio.fields.mlp import Siren, relu_mlp
from nvp_nerfstudio.fields.nvp import KEYFRAME_PLANES
from nvp_nerfstudio.rate import read_as_stored


def centred(xyt: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1], the input range SIREN and Fourier features are designed for."""
    return 2.0 * xyt.clamp(0.0, 1.0) - 1.0


@dataclass
class SirenFieldConfig(VideoFieldConfig):
    _target: Type = field(default_factory=lambda: SirenField)
    hidden_dim: int = 256
    num_hidden: int = 5
    first_omega: float = 30.0


class SirenField(VideoField):
    config: SirenFieldConfig

    def __init__(self, config: SirenFieldConfig, shape: VideoShape) -> None:
        super().__init__(config, shape)
        self.net = Siren(3, config.hidden_dim, config.num_hidden, config.first_omega)

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        return 0.5 + 0.5 * self.net(centred(xyt))


@dataclass
class FourierFieldConfig(VideoFieldConfig):
    """Fourier feature network (Tancik et al. 2020): Gaussian random features, then a ReLU MLP."""

    _target: Type = field(default_factory=lambda: FourierField)
    num_frequencies: int = 256
    sigma: float = 10.0
    """Standard deviation of the random frequencies (per unit of the [-1, 1] input)."""
    hidden_dim: int = 256
    num_hidden: int = 4
    seed: int = 0


class FourierField(VideoField):
    config: FourierFieldConfig

    def __init__(self, config: FourierFieldConfig, shape: VideoShape) -> None:
        super().__init__(config, shape)
        generator = torch.Generator().manual_seed(config.seed)
        # Fixed, not learnt, but saved with the model so a checkpoint reproduces the field.
        self.register_buffer("frequencies", torch.randn(3, config.num_frequencies, generator=generator) * config.sigma)
        self.net = relu_mlp(2 * config.num_frequencies, config.hidden_dim, config.num_hidden)

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        phase = math.pi * centred(xyt) @ self.frequencies
        return 0.5 + 0.5 * self.net(torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1))


@dataclass
class HashGridFieldConfig(VideoFieldConfig):
    """Instant-NGP on video: one multi-resolution hash grid over (x, y, t) and a small ReLU MLP."""

    _target: Type = field(default_factory=lambda: HashGridField)
    grid: GridEncodingConfig = field(
        default_factory=lambda: GridEncodingConfig(grid_type="hash", num_levels=16, features_per_level=2, log2_hashmap_size=19)
    )
    hidden_dim: int = 64
    num_hidden: int = 2


class HashGridField(VideoField):
    config: HashGridFieldConfig

    def __init__(self, config: HashGridFieldConfig, shape: VideoShape) -> None:
        super().__init__(config, shape)
        # Finest level: one vertex per pixel and per frame.
        self.grid = config.grid.setup(finest_resolution=(shape.width, shape.height, max(shape.num_frames, 2)))
        self.net = relu_mlp(self.grid.output_dim, config.hidden_dim, config.num_hidden)

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        return 0.5 + 0.5 * read_as_stored(self, self.net, self.grid(xyt.clamp(0.0, 1.0)))


@dataclass
class KPlanesFieldConfig(VideoFieldConfig):
    """K-Planes (Fridovich-Keil et al. 2023) for video: xy, xt and yt planes multiplied, then a ReLU MLP."""

    _target: Type = field(default_factory=lambda: KPlanesField)
    planes: GridEncodingConfig = field(
        default_factory=lambda: GridEncodingConfig(grid_type="dense", num_levels=4, features_per_level=16, base_resolution=64, init_scale=0.1)
    )
    """Each plane; K-Planes uses a few scales with many features, combined by product across planes."""
    hidden_dim: int = 64
    num_hidden: int = 2


class KPlanesField(VideoField):
    config: KPlanesFieldConfig

    def __init__(self, config: KPlanesFieldConfig, shape: VideoShape) -> None:
        super().__init__(config, shape)
        finest = (shape.width, shape.height, max(shape.num_frames, 2))
        self.planes = nn.ModuleDict(
            {name: config.planes.setup(finest_resolution=[finest[axis] for axis in axes]) for axes, name in KEYFRAME_PLANES}
        )
        # Planes start near 1 so their product starts as a gentle signal, as K-Planes initialises.
        for plane in self.planes.values():
            with torch.no_grad():
                plane.params.add_(1.0)
        self.net = relu_mlp(next(iter(self.planes.values())).output_dim, config.hidden_dim, config.num_hidden)

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        xyt = xyt.clamp(0.0, 1.0)
        features = torch.ones(1, device=xyt.device)
        for axes, name in KEYFRAME_PLANES:
            features = features * self.planes[name](xyt[:, list(axes)])
        return 0.5 + 0.5 * read_as_stored(self, self.net, features)


@dataclass
class NeRVFieldConfig(VideoFieldConfig):
    """NeRV (Chen et al. 2021): the frame index, positionally encoded, through an MLP to a small feature
    map, then convolution + pixel-shuffle blocks that upsample it to the whole frame."""

    _target: Type = field(default_factory=lambda: NeRVField)
    num_frequencies: int = 80
    """Sine/cosine pairs of the frame-time encoding, frequencies 1.25^k * pi (NeRV's b = 1.25, l = 80)."""
    frequency_base: float = 1.25
    stem_dim: int = 512
    """Width of the MLP's hidden layer."""
    upscale_factors: Tuple[int, ...] = (4, 2, 2, 2, 2)
    """Pixel-shuffle factor of each block; the feature map starts at the frame size divided by their product."""
    channels: Tuple[int, ...] = (64, 64, 48, 32, 32, 16)
    """Channels of the first feature map, then after each block."""


class NeRVField(VideoField):
    """Generates whole frames, then reads the asked (x, y) from them (bilinear; exact at pixel centres)."""

    config: NeRVFieldConfig
    trains_on_whole_frames = True

    def __init__(self, config: NeRVFieldConfig, shape: VideoShape) -> None:
        super().__init__(config, shape)
        if len(config.channels) != len(config.upscale_factors) + 1:
            raise ValueError("NeRV needs one more channel count than upscale factors (the first feature map's)")
        scale = math.prod(config.upscale_factors)
        self.base_size = (-(-shape.height // scale), -(-shape.width // scale))  # cropped to the frame at the end
        self.register_buffer(
            "frequencies", config.frequency_base ** torch.arange(config.num_frequencies, dtype=torch.float32) * math.pi
        )
        base_pixels = self.base_size[0] * self.base_size[1]
        self.stem = nn.Sequential(
            nn.Linear(2 * config.num_frequencies, config.stem_dim), nn.GELU(),
            nn.Linear(config.stem_dim, config.channels[0] * base_pixels), nn.GELU(),
        )
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(nn.Conv2d(c_in, c_out * s * s, 3, padding=1), nn.PixelShuffle(s), nn.GELU())
                for c_in, c_out, s in zip(config.channels[:-1], config.channels[1:], config.upscale_factors)
            ]
        )
        self.head = nn.Conv2d(config.channels[-1], 3, 1)

    def frames(self, t: Float[Tensor, "k"]) -> Float[Tensor, "k 3 height width"]:
        """Whole frames at times t in [0, 1]."""
        phase = t[:, None] * self.frequencies
        features = self.stem(torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1))
        features = features.view(len(t), self.config.channels[0], *self.base_size)
        rgb = 0.5 + 0.5 * self.head(self.blocks(features))
        return rgb[:, :, : self.shape.height, : self.shape.width]

    def forward(self, xyt: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        xyt = xyt.clamp(0.0, 1.0)
        times, frame_of_point = torch.unique(xyt[:, 2], return_inverse=True)
        frames = self.frames(times)
        height, width = self.shape.height, self.shape.width
        # Pixel centres sit at (i + 0.5) / size: bilinear between the four nearest centres.
        column = (xyt[:, 0] * width - 0.5).clamp(0, width - 1)
        row = (xyt[:, 1] * height - 0.5).clamp(0, height - 1)
        column0, row0 = column.floor().long(), row.floor().long()
        column1, row1 = (column0 + 1).clamp(max=width - 1), (row0 + 1).clamp(max=height - 1)
        wx, wy = (column - column0)[:, None], (row - row0)[:, None]
        pixels = frames.permute(0, 2, 3, 1)  # [k, h, w, 3]

        def at(r: Tensor, c: Tensor) -> Tensor:
            return pixels[frame_of_point, r, c]

        top = at(row0, column0) * (1 - wx) + at(row0, column1) * wx
        bottom = at(row1, column0) * (1 - wx) + at(row1, column1) * wx
        return top * (1 - wy) + bottom * wy
