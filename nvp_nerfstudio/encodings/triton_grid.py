"""Fused Triton kernels for the multi-resolution grid on CUDA: one launch computes every level's corners,
gathers and interpolates them (forward), one scatters the gradients with atomics (backward).

They repeat the torch path's indexing exactly (tiny-cuda-nn's scales, +0.5 offset, dense index with
wrap, coherent prime hash), so the three backends give the same features for the same parameters; the
tests check that against the torch path with Triton's interpreter on a CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from nvp_nerfstudio.encodings.grid import HASH_PRIMES, UINT32_MASK

BLOCK = 256


@triton.jit
def _corner(x_ptr, level_scale, point, mask, corner, dims: tl.constexpr, d: tl.constexpr):
    """Vertex coordinate along axis d of one corner, and that axis's interpolation weight."""
    pos = tl.load(x_ptr + point * dims + d, mask=mask, other=0.0) * level_scale + 0.5
    floor = tl.floor(pos)
    frac = pos - floor
    bit = (corner >> d) & 1
    vertex = floor.to(tl.int64) + bit
    weight = tl.where(bit == 1, frac, 1.0 - frac)
    return vertex, weight


@triton.jit
def _corner_index_and_weight(
    x_ptr, level_scale, resolution, size, offset, hashed, point, mask, corner,
    p1, p2, p3, dims: tl.constexpr,
):
    """Table row and weight of one corner at one level for a block of points (as the torch path)."""
    v0, weight = _corner(x_ptr, level_scale, point, mask, corner, dims, 0)
    dense = v0
    hash_value = v0  # the first prime is 1
    stride = resolution
    if dims > 1:
        v1, w1 = _corner(x_ptr, level_scale, point, mask, corner, dims, 1)
        weight *= w1
        dense += v1 * stride
        stride *= resolution
        hash_value = hash_value ^ ((v1 * p1) & 0xFFFFFFFF)
    if dims > 2:
        v2, w2 = _corner(x_ptr, level_scale, point, mask, corner, dims, 2)
        weight *= w2
        dense += v2 * stride
        stride *= resolution
        hash_value = hash_value ^ ((v2 * p2) & 0xFFFFFFFF)
    if dims > 3:
        v3, w3 = _corner(x_ptr, level_scale, point, mask, corner, dims, 3)
        weight *= w3
        dense += v3 * stride
        hash_value = hash_value ^ ((v3 * p3) & 0xFFFFFFFF)
    index = tl.where(hashed != 0, hash_value & 0xFFFFFFFF, dense) % size
    index = tl.where(index < 0, index + size, index)  # floor modulo, as torch's on negative coordinates
    return index + offset, weight


@triton.jit
def _grid_kernel(
    x_ptr, table_ptr, values_ptr, scales_ptr, strides_ptr, sizes_ptr, offsets_ptr, hashed_ptr, n,
    p1, p2, p3,
    dims: tl.constexpr, features: tl.constexpr, levels: tl.constexpr, block: tl.constexpr, scatter: tl.constexpr,
):
    """One level (program axis 1) for a block of points. scatter False: values = the table interpolated
    (forward); scatter True: table += corner weights x values, with atomics (backward: `table` is the
    gradient, `values` grad_out)."""
    level = tl.program_id(1)
    point = tl.program_id(0) * block + tl.arange(0, block)
    mask = point < n
    feature = tl.arange(0, features)[None, :]
    level_scale = tl.load(scales_ptr + level)
    resolution = tl.load(strides_ptr + level)
    size = tl.load(sizes_ptr + level)
    offset = tl.load(offsets_ptr + level)
    hashed = tl.load(hashed_ptr + level)
    values_at = values_ptr + point[:, None] * (levels * features) + level * features + feature
    if scatter:
        grad = tl.load(values_at, mask=mask[:, None], other=0.0)
    else:
        acc = tl.zeros([block, features], dtype=tl.float32)
    for corner in tl.static_range(1 << dims):
        index, weight = _corner_index_and_weight(
            x_ptr, level_scale, resolution, size, offset, hashed, point, mask, corner, p1, p2, p3, dims
        )
        rows = table_ptr + index[:, None] * features + feature
        if scatter:
            tl.atomic_add(rows, weight[:, None] * grad, mask=mask[:, None])
        else:
            acc += weight[:, None] * tl.load(rows, mask=mask[:, None], other=0.0)
    if not scatter:
        tl.store(values_at, acc, mask=mask[:, None])


def _launch(x: Tensor, table: Tensor, values: Tensor, encoding, scatter: bool) -> None:
    n, dims = x.shape
    levels = encoding.config.num_levels
    primes = [p & UINT32_MASK for p in HASH_PRIMES[1:4]]
    _grid_kernel[(triton.cdiv(n, BLOCK), levels)](
        x, table, values, encoding.scales, encoding.resolutions, encoding.level_sizes, encoding.offsets,
        encoding.hashed, n, *primes,
        dims=dims, features=encoding.config.features_per_level, levels=levels, block=BLOCK, scatter=scatter,
    )


class _GridFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, params: Tensor, encoding) -> Tensor:
        out = torch.empty(x.shape[0], encoding.output_dim, device=x.device, dtype=torch.float32)
        _launch(x, params, out, encoding, scatter=False)
        ctx.save_for_backward(x)
        ctx.encoding = encoding
        ctx.num_params = params.numel()
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        grad_params = torch.zeros(ctx.num_params, device=x.device, dtype=torch.float32)
        _launch(x, grad_params, grad_out.contiguous().float(), ctx.encoding, scatter=True)
        return None, grad_params, None  # coordinates get no gradient: they are pixel positions


def grid_forward(encoding, x: Float[Tensor, "n dims"]) -> Float[Tensor, "n out"]:
    """The features of a GridEncoding for scaled coordinates x, through the fused kernels."""
    features = encoding.config.features_per_level
    if x.shape[1] > 4 or features & (features - 1):
        raise ValueError("the Triton grid kernels take 1 to 4 dimensions and a power of two features per level")
    return _GridFunction.apply(x.contiguous(), encoding.params, encoding)
