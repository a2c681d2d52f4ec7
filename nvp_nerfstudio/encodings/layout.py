"""Where a multi-resolution grid keeps its values: tiny-cuda-nn's level geometry, hash and layout, which
every grid backend (torch, numba, Triton, tiny-cuda-nn) and the codec share.

Core module: imports only numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from nvp_nerfstudio.encodings.grid import GridEncodingConfig

# tiny-cuda-nn's coherent prime hash factors (the first is 1: x stays coherent in memory).
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
UINT32_MASK = 0xFFFFFFFF
# Largest resolution whose dense index fits in uint32, per dimension count (tiny-cuda-nn's MAX_BASES).
MAX_DENSE_BASE = (0x0, 0xFFFFFFFF, 0xFFFF, 0x659, 0xFF, 0x54, 0x28, 0x17, 0xF, 0xB, 0x9)


@dataclass(frozen=True)
class GridLayout:
    """Per-level geometry, computed exactly as tiny-cuda-nn does (float32 scales)."""

    num_dims: int
    per_level_scale: float
    scales: np.ndarray  # float32 [levels]
    resolutions: tuple[int, ...]
    level_sizes: tuple[int, ...]  # entries per level
    offsets: tuple[int, ...]  # first entry of each level
    hashed: tuple[bool, ...]

    @property
    def num_entries(self) -> int:
        return self.offsets[-1] + self.level_sizes[-1]

    @classmethod
    def build(cls, config: GridEncodingConfig, num_dims: int, longest_resolution: int) -> "GridLayout":
        longest = max(longest_resolution, config.base_resolution)
        levels = config.num_levels
        per_level_scale = (longest / config.base_resolution) ** (1.0 / (levels - 1)) if levels > 1 else 1.0
        log2_scale = np.float32(np.log2(np.float32(per_level_scale)))
        scales = np.exp2(np.arange(levels, dtype=np.float32) * log2_scale) * np.float32(config.base_resolution)
        scales = (scales - np.float32(1.0)).astype(np.float32)
        resolutions, sizes, offsets, hashed = [], [], [], []
        offset = 0
        for scale in scales:
            resolution = int(math.ceil(float(scale))) + 1
            dense = min(resolution**num_dims, UINT32_MASK // 2)
            size = -(-dense // 8) * 8  # tiny-cuda-nn aligns every level to 8 entries
            if config.grid_type == "hash":
                size = min(size, 1 << config.log2_hashmap_size)
            stride = resolution**num_dims if resolution <= MAX_DENSE_BASE[num_dims] else UINT32_MASK
            resolutions.append(resolution)
            sizes.append(size)
            offsets.append(offset)
            hashed.append(config.grid_type == "hash" and size < stride)
            offset += size
        return cls(num_dims, per_level_scale, scales, tuple(resolutions), tuple(sizes), tuple(offsets), tuple(hashed))
