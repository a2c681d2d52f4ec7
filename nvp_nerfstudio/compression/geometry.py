"""Which entries of a grid level input in [0, 1]^D can ever read, and the dense crop that holds them.

A GridEncoding shares one resolution across axes and scales its input per axis (`axis_scale`), so
along the shorter axes only the first part of each level is ever interpolated (bikes at 320x136:
43 % of each xy-plane level, 2-5 % of each dense level of NVP's 3D grid), and the vertices of a
coarse hashed level hit only part of its table (4-94 %). The rest never receives a gradient and
never reaches the output, so the codec leaves it out and the decoder restores it as zero: 2.75 M
of NVP-S's 6.74 M grid values are coded for that clip.

The reachable vertices of a level form a box. For a dense level the codec codes the part of the box
inside the grid as an image or video crop, plus the few entries that tiny-cuda-nn's wrap-around
indexing maps from the box's far faces to outside the crop; for a hashed level, every table entry
some vertex of the box hashes to.

Core module: imports only numpy and the grid encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from nvp_nerfstudio.encodings.grid import GridEncoding
from nvp_nerfstudio.encodings.layout import HASH_PRIMES, UINT32_MASK

# Vertices hashed per step when enumerating a hashed level's box (bounds memory, not the result).
CHUNK = 1 << 22


@dataclass(frozen=True)
class LevelGeometry:
    offset: int
    """First entry of the level in the grid's table."""
    hashed: bool
    crop: tuple[int, ...]
    """Dense levels: vertices per axis (x first) of the crop coded as an image or video; () for hashed levels."""
    entries: np.ndarray
    """Level-relative entries to code, in coding order: the crop in raster order (x fastest), then the rest."""

    @property
    def crop_size(self) -> int:
        return math.prod(self.crop) if self.crop else 0


def level_geometry(grid: GridEncoding, level: int) -> LevelGeometry:
    layout = grid.layout
    extent = vertex_extent(float(layout.scales[level]), tuple(grid.axis_scale.tolist()))
    resolution, size, hashed = layout.resolutions[level], layout.level_sizes[level], layout.hashed[level]
    if hashed:
        crop, entries = (), _hashed_entries(extent, size)
    else:
        crop, entries = _dense_entries(extent, resolution, size)
    return LevelGeometry(layout.offsets[level], hashed, crop, entries)


def vertex_extent(scale: float, axis_scale: tuple[float, ...]) -> tuple[int, ...]:
    """Per axis, the last grid vertex input in [0, 1] touches at a level (interpolation corners included).

    The encoding reads vertices floor(x * axis_scale * scale + 0.5) and one more, largest at x = 1.
    The product of two float32 values is exact in float64; the relative margin covers float32
    rounding (and an fma) that might round the position up across an integer, so the box is never
    too small (at worst one row larger).
    """
    return tuple(math.floor((axis * scale + 0.5) * (1 + 2**-20)) + 1 for axis in axis_scale)


def entry_index(vertices: np.ndarray, resolution: int, size: int, hashed: bool) -> np.ndarray:
    """Level-relative table entry of each vertex [n, dims], with GridEncoding's (tiny-cuda-nn's) indexing."""
    vertices = vertices.astype(np.int64)
    if hashed:
        index = vertices[:, 0] * HASH_PRIMES[0]
        for d in range(1, vertices.shape[1]):
            index ^= (vertices[:, d] * HASH_PRIMES[d]) & UINT32_MASK
        index &= UINT32_MASK
    else:
        index = sum(vertices[:, d] * resolution**d for d in range(vertices.shape[1]))
    return index % size


def _box(extent: tuple[int, ...], fixed: dict[int, range] | None = None) -> np.ndarray:
    """All vertices [n, dims] with coordinate d in 0..extent[d] (or in fixed[d])."""
    ranges = [(fixed or {}).get(d, range(top + 1)) for d, top in enumerate(extent)]
    grids = np.meshgrid(*[np.asarray(r, dtype=np.int64) for r in reversed(ranges)], indexing="ij")
    return np.stack([g.reshape(-1) for g in reversed(grids)], axis=-1)  # x fastest: raster order


@lru_cache(maxsize=256)
def _hashed_entries(extent: tuple[int, ...], size: int) -> np.ndarray:
    hit = np.zeros(size, dtype=bool)
    # Chunk along the last axis: a 1080p video's finest level has ~1e8 vertices in its box.
    per_slice = math.prod(top + 1 for top in extent[:-1])
    step = max(1, CHUNK // per_slice)
    for start in range(0, extent[-1] + 1, step):
        last = range(start, min(start + step, extent[-1] + 1))
        hit[entry_index(_box(extent, {len(extent) - 1: last}), 0, size, hashed=True)] = True
    return _frozen(np.flatnonzero(hit))


@lru_cache(maxsize=256)
def _dense_entries(extent: tuple[int, ...], resolution: int, size: int) -> tuple[tuple[int, ...], np.ndarray]:
    crop = tuple(min(top, resolution - 1) + 1 for top in extent)
    inside = entry_index(_box(tuple(c - 1 for c in crop)), resolution, size, hashed=False)
    # Vertices on a far face (coordinate == resolution) wrap around to other entries of the table.
    faces = [
        entry_index(_box(extent, {d: range(resolution, top + 1)}), resolution, size, hashed=False)
        for d, top in enumerate(extent)
        if top >= resolution
    ]
    outside = np.setdiff1d(np.concatenate([np.empty(0, np.int64), *faces]), inside)
    return crop, _frozen(np.concatenate([inside, outside]))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # cached and shared between calls
    return array
