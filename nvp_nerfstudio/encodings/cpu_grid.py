"""Compiled CPU kernels for 2D and 3D multi-resolution grids (numba): one pass over the points computes
each level's corners and interpolates the table (forward) or scatters the gradient into it (backward).

The forward splits the points between threads; the backward splits the levels: levels own disjoint rows
of the table, so it needs no atomics and no per-thread copy of the gradient. The indexing repeats the
torch path's (tiny-cuda-nn's float32 scales, +0.5 offset, dense index with wrap, coherent prime hash);
the tests compare the two.

Both kernels are registered as torch operators, so torch.compile keeps them as single calls in its graph.
numba compiles them on first use (seconds) and caches the machine code on disk.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from nvp_nerfstudio.encodings.layout import UINT32_MASK

SUPPORTED_DIMS = (2, 3)
_MASK = np.int64(UINT32_MASK)
# numba's fallback thread pool aborts the process on concurrent calls (the viewer renders beside training).
_KERNEL_LOCK = threading.Lock()


# Helpers are inlined into numba's IR: as calls they made the kernels 3x slower.
@numba.njit(inline="always")
def _axis(x, point, axis, scale):
    """Lower vertex along one axis and the fraction of the way to the next."""
    pos = x[point, axis] * scale + np.float32(0.5)
    floor = np.floor(pos)
    return np.int64(floor), pos - floor


@numba.njit(inline="always")
def _corners_2d(x, point, scale, resolution, size, offset, hashed, primes):
    """Table rows and interpolation weights of the 4 corners around a point at one level (x fastest)."""
    vx, fx = _axis(x, point, 0, scale)
    vy, fy = _axis(x, point, 1, scale)
    gx, gy = np.float32(1.0) - fx, np.float32(1.0) - fy
    if hashed:  # a hashed level's table has a power-of-two size: the modulo is a mask
        hy0, hy1, last = (vy * primes[1]) & _MASK, ((vy + 1) * primes[1]) & _MASK, size - 1
        rows = ((vx ^ hy0) & last, ((vx + 1) ^ hy0) & last, (vx ^ hy1) & last, ((vx + 1) ^ hy1) & last)
    else:
        base, r = vx + vy * resolution, resolution
        rows = (base, base + 1, base + r, base + r + 1)
        if base < 0 or rows[3] >= size:  # vertices past the last one wrap (floor modulo, as the torch path)
            rows = (rows[0] % size, rows[1] % size, rows[2] % size, rows[3] % size)
    rows = (rows[0] + offset, rows[1] + offset, rows[2] + offset, rows[3] + offset)
    return rows, (gx * gy, fx * gy, gx * fy, fx * fy)


@numba.njit(inline="always")
def _corners_3d(x, point, scale, resolution, size, offset, hashed, primes):
    """Table rows and interpolation weights of the 8 corners around a point at one level (x fastest)."""
    vx, fx = _axis(x, point, 0, scale)
    vy, fy = _axis(x, point, 1, scale)
    vz, fz = _axis(x, point, 2, scale)
    gx, gy, gz = np.float32(1.0) - fx, np.float32(1.0) - fy, np.float32(1.0) - fz
    if hashed:
        hy0, hy1 = (vy * primes[1]) & _MASK, ((vy + 1) * primes[1]) & _MASK
        hz0, hz1 = (vz * primes[2]) & _MASK, ((vz + 1) * primes[2]) & _MASK
        x0, x1, last = vx, vx + 1, size - 1
        rows = (
            (x0 ^ hy0 ^ hz0) & last, (x1 ^ hy0 ^ hz0) & last, (x0 ^ hy1 ^ hz0) & last, (x1 ^ hy1 ^ hz0) & last,
            (x0 ^ hy0 ^ hz1) & last, (x1 ^ hy0 ^ hz1) & last, (x0 ^ hy1 ^ hz1) & last, (x1 ^ hy1 ^ hz1) & last,
        )
    else:
        r, s = resolution, resolution * resolution
        base = vx + vy * r + vz * s
        rows = (base, base + 1, base + r, base + r + 1, base + s, base + s + 1, base + s + r, base + s + r + 1)
        if base < 0 or rows[7] >= size:
            rows = (
                rows[0] % size, rows[1] % size, rows[2] % size, rows[3] % size,
                rows[4] % size, rows[5] % size, rows[6] % size, rows[7] % size,
            )
    rows = (
        rows[0] + offset, rows[1] + offset, rows[2] + offset, rows[3] + offset,
        rows[4] + offset, rows[5] + offset, rows[6] + offset, rows[7] + offset,
    )
    wxy = (gx * gy, fx * gy, gx * fy, fx * fy)
    return rows, (wxy[0] * gz, wxy[1] * gz, wxy[2] * gz, wxy[3] * gz, wxy[0] * fz, wxy[1] * fz, wxy[2] * fz, wxy[3] * fz)


@numba.njit(inline="always")
def _apply(rows, weights, table, values, point, column, scatter) -> None:
    """One point at one level: values[point, column:] = the corners interpolated (forward), or
    table[corner rows] += weights x values[point, column:] (backward: `table` is the gradient)."""
    for feature in range(table.shape[1]):
        if scatter:
            grad = values[point, column + feature]
            for corner in range(len(rows)):
                table[rows[corner], feature] += weights[corner] * grad
        else:
            total = np.float32(0.0)
            for corner in range(len(rows)):
                total += weights[corner] * table[rows[corner], feature]
            values[point, column + feature] = total


@numba.njit(cache=True, boundscheck=False)
def _points_at_level(x, table, values, start, stop, level, scales, resolutions, sizes, offsets, hashed, primes, scatter) -> None:
    """Points start..stop-1 at one level (a function of its own: numba's parallel loop cannot take inlined helpers)."""
    scale, resolution, size, offset, level_hashed = scales[level], resolutions[level], sizes[level], offsets[level], hashed[level]
    column = level * table.shape[1]
    for point in range(start, stop):
        if x.shape[1] == 2:
            rows, weights = _corners_2d(x, point, scale, resolution, size, offset, level_hashed, primes)
            _apply(rows, weights, table, values, point, column, scatter)
        else:
            rows_3d, weights_3d = _corners_3d(x, point, scale, resolution, size, offset, level_hashed, primes)
            _apply(rows_3d, weights_3d, table, values, point, column, scatter)


# Points a thread takes at a time: their slice of `values` (block x levels x features) stays in its L1/L2 cache
# while it goes through the levels.
BLOCK = 1024


@numba.njit(parallel=True, cache=True)
def _forward_kernel(parts, x, table, values, scales, resolutions, sizes, offsets, hashed, primes) -> None:
    """Each part (thread) takes a run of points and writes whole rows of `values`: no cache line is shared."""
    points = x.shape[0]
    for part in numba.prange(parts):
        first, end = points * part // parts, points * (part + 1) // parts
        for start in range(first, end, BLOCK):
            stop = min(end, start + BLOCK)
            for level in range(scales.shape[0]):
                _points_at_level(x, table, values, start, stop, level, scales, resolutions, sizes, offsets, hashed, primes, False)


@numba.njit(parallel=True, cache=True)
def _backward_kernel(parts, x, grad, values, scales, resolutions, sizes, offsets, hashed, primes) -> None:
    """grad = 0, then += every point's gradient. Threads split the levels (level % threads): each owns its levels'
    rows, so the scatter needs no atomics, and adds a row's terms in point order (the same sum with any thread
    count). Dealt round-robin, the costly fine levels spread over the threads."""
    levels, points = scales.shape[0], x.shape[0]
    for part in numba.prange(parts):
        for level in range(part, levels, parts):
            grad[offsets[level] : offsets[level] + sizes[level]] = 0.0
        for start in range(0, points, BLOCK):
            stop = min(points, start + BLOCK)
            for level in range(part, levels, parts):
                _points_at_level(x, grad, values, start, stop, level, scales, resolutions, sizes, offsets, hashed, primes, True)


def _run(kernel, x: Tensor, table: Tensor, values: Tensor, levels: list[Tensor]) -> None:
    with _KERNEL_LOCK:
        threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        kernel(threads, x.numpy(), table.numpy(), values.numpy(), *(level.numpy() for level in levels))


@torch.library.custom_op("nvp::grid_features", mutates_args=())
def grid_features(
    x: Tensor, table: Tensor, scales: Tensor, resolutions: Tensor, sizes: Tensor, offsets: Tensor, hashed: Tensor, primes: Tensor
) -> Tensor:
    """Features of scaled points x [n, dims] from a grid table [entries, features]: [n, levels * features]."""
    out = x.new_empty(x.shape[0], scales.shape[0] * table.shape[1])
    _run(_forward_kernel, x, table, out, [scales, resolutions, sizes, offsets, hashed, primes])
    return out


@grid_features.register_fake
def _(x, table, scales, resolutions, sizes, offsets, hashed, primes):
    return x.new_empty(x.shape[0], scales.shape[0] * table.shape[1])


@torch.library.custom_op("nvp::grid_features_backward", mutates_args=())
def grid_features_backward(
    x: Tensor, grad_out: Tensor, rows: int, scales: Tensor, resolutions: Tensor, sizes: Tensor, offsets: Tensor, hashed: Tensor, primes: Tensor
) -> Tensor:
    """The gradient of grid_features with respect to its table of `rows` entries."""
    grad_table = grad_out.new_empty(rows, grad_out.shape[1] // scales.shape[0])  # the kernel zeroes it, level by level
    _run(_backward_kernel, x, grad_table, grad_out.contiguous(), [scales, resolutions, sizes, offsets, hashed, primes])
    return grad_table


@grid_features_backward.register_fake
def _(x, grad_out, rows, scales, resolutions, sizes, offsets, hashed, primes):
    return grad_out.new_empty(rows, grad_out.shape[1] // scales.shape[0])


def _setup_context(ctx, inputs, output) -> None:
    x, table, *levels = inputs
    ctx.save_for_backward(x, *levels)
    ctx.rows = table.shape[0]


def _backward(ctx, grad_out: Tensor):
    x, *levels = ctx.saved_tensors
    # Coordinates get no gradient (pixel positions), nor do the level tables.
    return None, grid_features_backward(x, grad_out, ctx.rows, *levels), None, None, None, None, None, None


grid_features.register_autograd(_backward, setup_context=_setup_context)


def grid_forward(encoding, x: Float[Tensor, "n dims"]) -> Float[Tensor, "n out"]:
    """The features of a 2D or 3D GridEncoding for scaled coordinates x, through the compiled kernels."""
    if x.shape[1] not in SUPPORTED_DIMS:
        raise ValueError(f"the CPU grid kernels take {' or '.join(map(str, SUPPORTED_DIMS))} dimensions, got {x.shape[1]}")
    levels = (encoding.scales, encoding.resolutions, encoding.level_sizes, encoding.offsets, encoding.hashed, encoding.primes)
    return grid_features(x.contiguous(), encoding.table, *levels)
