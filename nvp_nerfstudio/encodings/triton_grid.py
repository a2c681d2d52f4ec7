"""Fused Triton kernels for multi-resolution grids on CUDA: one launch computes every level's corners,
gathers and interpolates them (forward), the backward scatters the gradients. A launch serves one grid, or
several grids of one shape that read different input axes (NVP's three keyframe planes): it writes their
features side by side, and scatters into each grid's own gradient.

The backward adds `weight * grad` into the gradient with one relaxed float atomic (a sum needs no memory
ordering; the default acq_rel one costs a memory barrier and an L1 invalidation each) per corner, feature, level and
point, except on levels of few entries (the coarse ones: a 16 x 16 level takes 2^20 points x 4 corners a
step on its 256 entries, and atomics on one address serialise). There a second launch sums a chunk of
points per program first, as a one-hot matrix product on the tensor cores, and adds each entry once
(`_scatter_reduced`): a program's atomics do not depend on the point count, so the chunk sets the saving.

They repeat the torch path's indexing exactly (tiny-cuda-nn's scales, +0.5 offset, dense index with
wrap, coherent prime hash), so the three backends give the same features for the same parameters; the
tests check that against the torch path with Triton's interpreter on a CPU.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from nvp_nerfstudio.encodings.layout import HASH_PRIMES, UINT32_MASK

BLOCK = 256
"""Points per program of the forward and of the backward's plain scatter."""
REDUCE_VALUES = 2048
"""The backward pre-reduces levels of at most this many entries x features: the program's sum fits in registers."""
REDUCE_CHUNK = 4096
"""Points per pre-reducing program: it adds each entry and feature of its level once for all of them."""
REDUCE_BLOCK = 32
"""Points per matrix product of a pre-reducing program (its K): few enough that its operands ([64, 32] for NVP's
planes) take 16 registers a thread each."""


@triton.jit
def _corner(
    x_ptr, axes, axis_scale_ptr, level_scale, point, mask, corner,
    x_dims: tl.constexpr, scale_inputs: tl.constexpr, d: tl.constexpr,
):
    """Vertex coordinate along axis d of one corner, and that axis's interpolation weight."""
    coordinate = tl.load(x_ptr + point * x_dims + axes[d], mask=mask, other=0.0)
    if scale_inputs:  # the grid's anisotropy, applied as GridEncoding.forward does for the other backends
        coordinate *= tl.load(axis_scale_ptr + d)
    pos = coordinate * level_scale + 0.5
    floor = tl.floor(pos)
    frac = pos - floor
    bit = (corner >> d) & 1
    vertex = floor.to(tl.int64) + bit
    weight = tl.where(bit == 1, frac, 1.0 - frac)
    return vertex, weight


@triton.jit
def _corner_index_and_weight(
    x_ptr, axes, axis_scale_ptr, level_scale, resolution, size, offset, hashed, point, mask, corner, p1, p2, p3,
    x_dims: tl.constexpr, dims: tl.constexpr, scale_inputs: tl.constexpr,
):
    """Table row and weight of one corner at one level for a block of points (as the torch path)."""
    v0, weight = _corner(x_ptr, axes, axis_scale_ptr, level_scale, point, mask, corner, x_dims, scale_inputs, 0)
    dense = v0
    hash_value = v0  # the first prime is 1
    stride = resolution
    if dims > 1:
        v1, w1 = _corner(x_ptr, axes, axis_scale_ptr, level_scale, point, mask, corner, x_dims, scale_inputs, 1)
        weight *= w1
        dense += v1 * stride
        stride *= resolution
        hash_value = hash_value ^ ((v1 * p1) & 0xFFFFFFFF)
    if dims > 2:
        v2, w2 = _corner(x_ptr, axes, axis_scale_ptr, level_scale, point, mask, corner, x_dims, scale_inputs, 2)
        weight *= w2
        dense += v2 * stride
        stride *= resolution
        hash_value = hash_value ^ ((v2 * p2) & 0xFFFFFFFF)
    if dims > 3:
        v3, w3 = _corner(x_ptr, axes, axis_scale_ptr, level_scale, point, mask, corner, x_dims, scale_inputs, 3)
        weight *= w3
        dense += v3 * stride
        hash_value = hash_value ^ ((v3 * p3) & 0xFFFFFFFF)
    index = tl.where(hashed != 0, hash_value & 0xFFFFFFFF, dense) % size
    index = tl.where(index < 0, index + size, index)  # floor modulo, as torch's on negative coordinates
    return index + offset, weight


@triton.jit
def _gather_or_scatter(
    x_ptr, values_ptr, table_ptr, axes, axis_scale_ptr, level_scale, resolution, size, offset, hashed,
    column, n, p1, p2, p3,
    x_dims: tl.constexpr, dims: tl.constexpr, features: tl.constexpr, width: tl.constexpr,
    scale_inputs: tl.constexpr, block: tl.constexpr, scatter: tl.constexpr,
):
    """One level for a block of points. scatter False: values = the table interpolated (forward); scatter
    True: table += corner weights x values, one atomic each (backward: `table` is the gradient, `values`
    grad_out)."""
    point = tl.program_id(0) * block + tl.arange(0, block)
    mask = point < n
    feature = tl.arange(0, features)[None, :]
    values_at = values_ptr + point[:, None] * width + column + feature
    if scatter:
        grad = tl.load(values_at, mask=mask[:, None], other=0.0)
    else:
        acc = tl.zeros([block, features], dtype=tl.float32)
    for corner in tl.static_range(1 << dims):
        index, weight = _corner_index_and_weight(
            x_ptr, axes, axis_scale_ptr, level_scale, resolution, size, offset, hashed, point, mask, corner,
            p1, p2, p3, x_dims, dims, scale_inputs,
        )
        rows = table_ptr + index[:, None] * features + feature
        if scatter:
            tl.atomic_add(rows, weight[:, None] * grad, mask=mask[:, None], sem="relaxed")
        else:
            acc += weight[:, None] * tl.load(rows, mask=mask[:, None], other=0.0)
    if not scatter:
        tl.store(values_at, acc, mask=mask[:, None])


@triton.jit
def _scatter_reduced(
    x_ptr, grad_ptr, table_ptr, axes, axis_scale_ptr, level_scale, resolution, size, offset, hashed,
    column, n, p1, p2, p3,
    x_dims: tl.constexpr, dims: tl.constexpr, features: tl.constexpr, width: tl.constexpr,
    scale_inputs: tl.constexpr, rows: tl.constexpr, cols: tl.constexpr, block: tl.constexpr, chunk: tl.constexpr,
):
    """The backward of one small level (at most rows x cols entries) for a chunk of points: their corner
    weights x grad_out summed per entry in registers, then one atomic per entry and feature, not one per
    point, corner and feature.

    Entry e = r * cols + c: the sum over points p is onehot(r_p)^T @ (onehot(c_p) * weight_p * grad_p), a
    [rows, block] x [block, cols * features] product on the tensor cores, which builds rows + cols x features
    values per corner where a one-hot of the whole level would build rows x cols (compares and selects on the
    CUDA cores, which would cost about what the atomics do). Two tf32 products keep the sum float32-exact:
    the one-hot factor is exact in tf32, and the values are split into a tf32 part and the remainder."""
    start = tl.program_id(0) * chunk
    row = tl.arange(0, rows)
    flat = tl.arange(0, cols * features)  # column c * features + f of the sum: entry column c, feature f
    acc = tl.zeros([rows, cols * features], dtype=tl.float32)
    for first in range(start, tl.minimum(start + chunk, n), block):
        point = first + tl.arange(0, block)
        mask = point < n
        # grad_out[p, f] at [c * features + f, p] for every entry column c, transposed: points along the fast
        # axis, as in the one-hot factor, so each thread computes few points' corners (1D loads keep it so).
        grad = tl.zeros([cols * features, block], dtype=tl.float32)
        for f in tl.static_range(features):
            grad_f = tl.load(grad_ptr + point * width + column + f, mask=mask, other=0.0)
            grad = tl.where(flat[:, None] % features == f, grad_f[None, :], grad)
        for corner in range(1 << dims):  # not unrolled: one corner's operands live at a time
            index, weight = _corner_index_and_weight(
                x_ptr, axes, axis_scale_ptr, level_scale, resolution, size, offset, hashed, point, mask, corner,
                p1, p2, p3, x_dims, dims, scale_inputs,
            )
            entry = (index - offset).to(tl.int32)
            onehot_row = (row[:, None] == (entry // cols)[None, :]).to(tl.float32)  # [rows, block]
            spread = tl.where(flat[:, None] // features == (entry % cols)[None, :], weight[None, :] * grad, 0.0)
            high = (spread.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)  # tf32's bits
            acc = tl.dot(onehot_row, tl.trans(high), acc, input_precision="tf32")
            acc = tl.dot(onehot_row, tl.trans(spread - high), acc, input_precision="tf32")
    # acc[r, c * features + f] is entry r * cols + c's feature f: the flat row-major index is the table's.
    flat = row[:, None] * (cols * features) + flat[None, :]
    tl.atomic_add(table_ptr + offset * features + flat, acc, mask=flat < size * features, sem="relaxed")


@triton.jit
def _grid_kernel(
    x_ptr, values_ptr, tables, axes, axis_scales, scales, resolutions, sizes, offsets, hashed, n, p1, p2, p3,
    x_dims: tl.constexpr, dims: tl.constexpr, features: tl.constexpr, levels: tl.constexpr, grids: tl.constexpr,
    scale_inputs: tl.constexpr, block: tl.constexpr, scatter: tl.constexpr, pre_reduce: tl.constexpr,
    reduce_rows: tl.constexpr, reduce_cols: tl.constexpr, reduce_chunk: tl.constexpr,
):
    """One level of one grid (program axis 1: the grids' levels one after another, as their features in
    `values`) for `block` points (axis 0); every per-grid argument is a tuple, one element per grid.

    pre_reduce: the backward of the levels of at most reduce_rows x reduce_cols entries, `reduce_chunk`
    points a program; else the forward, or the backward of the other levels. The backward is two launches,
    not one: a kernel's registers are allocated for its heaviest path, and the matrix products' (over a
    hundred a thread) would cut how many of the plain scatter's programs run at once."""
    grid = tl.program_id(1) // levels
    level = tl.program_id(1) % levels
    column = tl.program_id(1) * features
    width = grids * levels * features
    for g in tl.static_range(grids):
        if grid == g:  # a tuple takes only constant indices: each grid's branch reads its own tensors
            level_scale = tl.load(scales[g] + level)
            resolution = tl.load(resolutions[g] + level)
            size = tl.load(sizes[g] + level)
            offset = tl.load(offsets[g] + level)
            is_hashed = tl.load(hashed[g] + level)
            if pre_reduce:
                if size <= reduce_rows * reduce_cols:
                    _scatter_reduced(
                        x_ptr, values_ptr, tables[g], axes[g], axis_scales[g], level_scale, resolution, size,
                        offset, is_hashed, column, n, p1, p2, p3, x_dims, dims, features, width, scale_inputs,
                        reduce_rows, reduce_cols, block, reduce_chunk,
                    )
            elif size > reduce_rows * reduce_cols:  # every level where the tile is empty (the forward)
                _gather_or_scatter(
                    x_ptr, values_ptr, tables[g], axes[g], axis_scales[g], level_scale, resolution, size,
                    offset, is_hashed, column, n, p1, p2, p3, x_dims, dims, features, width, scale_inputs,
                    block, scatter,
                )


def _reduce_tile(encodings: Sequence) -> tuple[int, int]:
    """(rows, cols) of the backward's pre-reduced levels: rows x cols entries, a power of two covering the
    largest level of at most REDUCE_VALUES entries x features; (0, 0) where no level is that small. Both are
    at least 16, tl.dot's smallest shape."""
    features = encodings[0].config.features_per_level
    small = [size for e in encodings for size in e.layout.level_sizes if size * features <= REDUCE_VALUES]
    if not small:
        return 0, 0
    entries = triton.next_power_of_2(max(max(small), 256))
    cols = 1 << ((entries.bit_length() - 1) // 2)  # rows the larger half: a program builds rows + cols x features
    return entries // cols, cols


def backward_atomics(encodings: Sequence, n: int, pre_reduce: bool = True) -> int:
    """Float atomics that the backward over these grids issues for n points: one per point, corner and
    feature on a level of the plain scatter, one per entry and feature per REDUCE_CHUNK points on a
    pre-reduced one (pre_reduce False: the plain scatter on every level, as before the pre-reduction)."""
    rows, cols = _reduce_tile(encodings) if pre_reduce else (0, 0)
    count = 0
    for encoding in encodings:
        features, corners = encoding.config.features_per_level, 1 << encoding.layout.num_dims
        for size in encoding.layout.level_sizes:
            count += triton.cdiv(n, REDUCE_CHUNK) * size * features if size <= rows * cols else n * corners * features
    return count


def _launch(
    x: Tensor, tables: Sequence[Tensor], values: Tensor, encodings: Sequence, axes: tuple, scale_inputs: bool,
    scatter: bool, pre_reduce: bool = False,
) -> None:
    n, x_dims = x.shape
    first = encodings[0]
    levels = first.config.num_levels
    rows, cols = _reduce_tile(encodings) if scatter else (0, 0)
    if pre_reduce and not rows:
        return  # no level is small enough
    block, points = (REDUCE_BLOCK, REDUCE_CHUNK) if pre_reduce else (BLOCK, BLOCK)
    primes = [p & UINT32_MASK for p in HASH_PRIMES[1:4]]
    _grid_kernel[(triton.cdiv(n, points), len(encodings) * levels)](
        x, values, tuple(tables), axes, tuple(e.axis_scale for e in encodings),
        tuple(e.scales for e in encodings), tuple(e.resolutions for e in encodings),
        tuple(e.level_sizes for e in encodings), tuple(e.offsets for e in encodings),
        tuple(e.hashed for e in encodings), n, *primes,
        x_dims=x_dims, dims=first.layout.num_dims, features=first.config.features_per_level, levels=levels,
        grids=len(encodings), scale_inputs=scale_inputs, block=block, scatter=scatter, pre_reduce=pre_reduce,
        reduce_rows=rows, reduce_cols=cols, reduce_chunk=REDUCE_CHUNK,
    )


class _GridFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, encodings: tuple, axes: tuple, scale_inputs: bool, *params: Tensor) -> Tensor:
        out = torch.empty(x.shape[0], sum(e.output_dim for e in encodings), device=x.device, dtype=torch.float32)
        _launch(x, params, out, encodings, axes, scale_inputs, scatter=False)
        ctx.save_for_backward(x)
        ctx.grids = encodings, axes, scale_inputs
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        grads = [torch.zeros_like(e.params) for e in ctx.grids[0]]
        grad_out = grad_out.contiguous().float()
        for pre_reduce in (False, True):
            _launch(x, grads, grad_out, *ctx.grids, scatter=True, pre_reduce=pre_reduce)
        return None, None, None, None, *grads  # coordinates get no gradient: they are pixel positions


def _apply(encodings: Sequence, x: Tensor, axes: Sequence[Sequence[int]], scale_inputs: bool) -> Tensor:
    first = encodings[0].config
    shape = (len(axes[0]), first.num_levels, first.features_per_level)
    if any((len(a), e.config.num_levels, e.config.features_per_level) != shape for e, a in zip(encodings, axes)):
        raise ValueError("grids evaluated in one launch need the same dimensions, levels and features per level")
    if shape[0] > 4 or shape[2] & (shape[2] - 1):
        raise ValueError("the Triton grid kernels take 1 to 4 dimensions and a power of two features per level")
    params = [e.table.reshape(-1) for e in encodings]  # quantised, for a rate-aware grid
    return _GridFunction.apply(x.float().contiguous(), tuple(encodings), tuple(map(tuple, axes)), scale_inputs, *params)


def grid_forward(encoding, x: Float[Tensor, "n dims"]) -> Float[Tensor, "n out"]:
    """The features of a GridEncoding for scaled coordinates x, through the fused kernels."""
    return _apply([encoding], x, [range(x.shape[1])], scale_inputs=False)


def grids_forward(
    encodings: Sequence, x: Float[Tensor, "n inputs"], axes: Sequence[Sequence[int]]
) -> Float[Tensor, "n out"]:
    """torch.cat([encoding(x[:, a]) for encoding, a in zip(encodings, axes)], -1) for GridEncodings of the same
    dimensions, levels and features, in one forward launch and one backward launch (two where some levels
    pre-reduce) for all of them: NVP's three keyframe planes take three of each and a concatenation otherwise.
    Each encoding keeps its own parameters and gets its own gradient."""
    return _apply(encodings, x, axes, scale_inputs=True)
