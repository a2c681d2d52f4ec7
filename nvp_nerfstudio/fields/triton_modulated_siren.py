"""Fused Triton kernels for the modulated SIREN (NVP's decoder) on CUDA.

Forward: one launch takes a block of samples through every synthesis and modulator layer and the RGB
head. Matrix products are bfloat16 with float32 accumulation; sines, leaky ReLUs and modulations stay in
registers; only the RGB is written. Nothing is kept for the backward but the inputs.

Backward: one launch recomputes that forward, back-propagates through it to the latent (whose gradient
the grids need) and writes, in bfloat16, each layer's input and the gradient of its output. The weight
gradients are then a few large matrix products (cuBLAS), which outrun per-block atomic sums of
128 x 240 weight matrices by far.

The arithmetic is the torch path's in bfloat16 (ModulatedSiren with precision bfloat16): the first sine
layer, sin(w0 (w t + b)), and the RGB head are float32-accurate (the head's weights as two bfloat16
halves, hi + lo). The tests check both against that path through Triton's interpreter on a CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor

from nvp_nerfstudio.kernels import triton_interpreted

if TYPE_CHECKING:
    from nvp_nerfstudio.fields.modulated_mlp import ModulatedSiren

OUT_PAD = 16  # the RGB head's columns, padded to the smallest matrix-product width
# Samples per program and warps per program of each kernel (scripts/bench_kernels.py compares others).
FORWARD_LAUNCH = {"BLOCK_ROWS": 64, "num_warps": 8}
BACKWARD_LAUNCH = {"BLOCK_ROWS": 64, "num_warps": 8}


def padded_latent_dim(latent_dim: int) -> int:
    return max(16, triton.next_power_of_2(latent_dim))


def unsupported_reason(hidden_dim: int, out_dim: int) -> str | None:
    """Why the fused kernels cannot run an MLP of this shape, or None."""
    if hidden_dim < 16 or hidden_dim & (hidden_dim - 1):
        return f"the fused kernels need a hidden width that is a power of two >= 16, got {hidden_dim}"
    if out_dim > OUT_PAD:
        return f"the fused kernels take at most {OUT_PAD} outputs, got {out_dim}"
    return None


@triton.jit
def _mm(a, b, acc, INTERPRETED: tl.constexpr):
    """a @ b (+ acc), float32 accumulation. Triton's interpreter multiplies bfloat16 operands wrongly
    (as their bit patterns): there it gets the same values in float32."""
    if INTERPRETED:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc)


@triton.jit
def _tile(ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """A row-major [ROWS, COLS] matrix."""
    return tl.load(ptr + tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :])


@triton.jit
def _row_vector(ptr, COLS: tl.constexpr):
    return tl.load(ptr + tl.arange(0, COLS))[None, :]


@triton.jit
def _rows(ptr, n, columns, first, BLOCK_ROWS: tl.constexpr, COLS: tl.constexpr):
    """Rows first.. of a row-major [n, columns] matrix as a [BLOCK_ROWS, COLS >= columns] block. A block
    pointer, not a tensor of addresses: those would hold 64 bits an element in registers, and spill."""
    return tl.make_block_ptr(ptr, (n, columns), (columns, 1), (first, 0), (BLOCK_ROWS, COLS), (1, 0))


@triton.jit
def _load_rows(ptr, n, columns, first, BLOCK_ROWS: tl.constexpr, COLS: tl.constexpr):
    """Zeros beyond the matrix."""
    return tl.load(_rows(ptr, n, columns, first, BLOCK_ROWS, COLS), boundary_check=(0, 1), padding_option="zero")


@triton.jit
def _store_rows(ptr, n, columns, first, value, BLOCK_ROWS: tl.constexpr, COLS: tl.constexpr):
    block = _rows(ptr, n, columns, first, BLOCK_ROWS, COLS)
    tl.store(block, value.to(ptr.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def _leaky_relu(x, slope):
    return tl.where(x > 0, x, x * slope)


@triton.jit
def _first_layer(t_ptr, z_ptr, n, latent_dim, first, ws0_ptr, bs_ptr, bm_ptr, wm0_ptr, first_omega, slope,
                 WIDTH: tl.constexpr, LATENT: tl.constexpr, BLOCK_ROWS: tl.constexpr, INTERPRETED: tl.constexpr):
    """t, the latent in bfloat16 (zero-padded to LATENT), the first sine layer's argument w0 (w t + b),
    and the first modulation m0, for the block of samples from `first`."""
    t = tl.load(t_ptr + first + tl.arange(0, BLOCK_ROWS), mask=first + tl.arange(0, BLOCK_ROWS) < n, other=0.0)
    z = _load_rows(z_ptr, n, latent_dim, first, BLOCK_ROWS, LATENT).to(tl.bfloat16)
    # float32: in bfloat16, w0 (w t + b) with w0 = 30 would be off by ~0.1 rad.
    angle = first_omega * (t[:, None] * _row_vector(ws0_ptr, WIDTH) + _row_vector(bs_ptr, WIDTH))
    m = _leaky_relu(_mm(z, _tile(wm0_ptr, LATENT, WIDTH), None, INTERPRETED) + _row_vector(bm_ptr, WIDTH), slope)
    return t, z, angle, m


@triton.jit
def _hidden_layer(h, m, z, layer, wmm_ptr, wmz_ptr, ws_ptr, bs_ptr, bm_ptr, omega, slope,
                  WIDTH: tl.constexpr, LATENT: tl.constexpr, INTERPRETED: tl.constexpr):
    """Layer `layer` >= 1: its modulation m = lrelu(Wm [m_prev, z] + b), its sine's argument p and its
    output sin(p) m, from the previous layer's output h and modulation m (both bfloat16)."""
    square = (layer - 1) * WIDTH * WIDTH
    q = _mm(m, _tile(wmm_ptr + square, WIDTH, WIDTH), None, INTERPRETED)
    q = _mm(z, _tile(wmz_ptr + (layer - 1) * LATENT * WIDTH, LATENT, WIDTH), q, INTERPRETED)
    m = _leaky_relu(q + _row_vector(bm_ptr + layer * WIDTH, WIDTH), slope)
    p = _mm(h, _tile(ws_ptr + square, WIDTH, WIDTH), None, INTERPRETED)
    p = omega * (p + _row_vector(bs_ptr + layer * WIDTH, WIDTH))
    return m, p, tl.sin(p) * m


@triton.jit(do_not_specialize=["n"])
def _forward_kernel(
    t_ptr, z_ptr, out_ptr, n, latent_dim,
    ws0_ptr, bs_ptr, bm_ptr, wm0_ptr, wmm_ptr, wmz_ptr, ws_ptr, wh_hi_ptr, wh_lo_ptr, bh_ptr,
    first_omega, omega, slope,
    WIDTH: tl.constexpr, LATENT: tl.constexpr, LAYERS: tl.constexpr, OUT: tl.constexpr, OUT_COLS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr, INTERPRETED: tl.constexpr,
):
    first = tl.program_id(0) * BLOCK_ROWS
    t, z, angle, m = _first_layer(
        t_ptr, z_ptr, n, latent_dim, first, ws0_ptr, bs_ptr, bm_ptr, wm0_ptr, first_omega, slope, WIDTH, LATENT,
        BLOCK_ROWS, INTERPRETED,
    )
    h = tl.sin(angle) * m
    for layer in range(1, LAYERS):  # a loop, not unrolled: one layer's weights in flight at a time
        m, p, h = _hidden_layer(
            h.to(tl.bfloat16), m.to(tl.bfloat16), z, layer, wmm_ptr, wmz_ptr, ws_ptr, bs_ptr, bm_ptr, omega, slope,
            WIDTH, LATENT, INTERPRETED,
        )
    h = h.to(tl.bfloat16)
    out = _mm(h, _tile(wh_hi_ptr, WIDTH, OUT_COLS), None, INTERPRETED)
    out = _mm(h, _tile(wh_lo_ptr, WIDTH, OUT_COLS), out, INTERPRETED) + _row_vector(bh_ptr, OUT_COLS)
    _store_rows(out_ptr, n, OUT, first, out, BLOCK_ROWS, OUT_COLS)


@triton.jit(do_not_specialize=["n"])
def _backward_kernel(
    t_ptr, z_ptr, dout_ptr, dz_ptr, zb_ptr, m_ptr, h_ptr, p_ptr, dq_ptr, dp_ptr, dws0_ptr, dbs_ptr, dbm_ptr,
    n, latent_dim,
    ws0_ptr, bs_ptr, bm_ptr, wm0_ptr, wmm_ptr, wmz_ptr, ws_ptr, wh_ptr,
    first_omega, omega, slope,
    WIDTH: tl.constexpr, LATENT: tl.constexpr, LAYERS: tl.constexpr, OUT: tl.constexpr, OUT_COLS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr, INTERPRETED: tl.constexpr,
):
    """Per layer l, into [layers, n, width] bfloat16 buffers: m (modulations), h (outputs), p (sine arguments,
    l >= 1), dq (gradients of the modulator layers' pre-activations), dp (of the synthesis layers' linear
    outputs, l >= 1); the latent in bfloat16 (zb); the latent's gradient (dz, float32). The first layer's
    weight and every bias get their gradients summed per block, then added atomically."""
    first = tl.program_id(0) * BLOCK_ROWS
    plane = n.to(tl.int64) * WIDTH  # one layer's slice of a [layers, n, width] buffer: past 2^31 at 2^24 samples
    width = tl.arange(0, WIDTH)
    t, z, angle, m = _first_layer(
        t_ptr, z_ptr, n, latent_dim, first, ws0_ptr, bs_ptr, bm_ptr, wm0_ptr, first_omega, slope, WIDTH, LATENT,
        BLOCK_ROWS, INTERPRETED,
    )
    _store_rows(zb_ptr, n, latent_dim, first, z, BLOCK_ROWS, LATENT)
    # The forward again, keeping what the weight gradients and the way back need.
    h = (tl.sin(angle) * m).to(tl.bfloat16)
    m = m.to(tl.bfloat16)
    _store_rows(m_ptr, n, WIDTH, first, m, BLOCK_ROWS, WIDTH)
    _store_rows(h_ptr, n, WIDTH, first, h, BLOCK_ROWS, WIDTH)
    for layer in range(1, LAYERS):
        m, p, h = _hidden_layer(h, m, z, layer, wmm_ptr, wmz_ptr, ws_ptr, bs_ptr, bm_ptr, omega, slope, WIDTH, LATENT,
                                 INTERPRETED)
        h, m = h.to(tl.bfloat16), m.to(tl.bfloat16)
        _store_rows(m_ptr + layer * plane, n, WIDTH, first, m, BLOCK_ROWS, WIDTH)
        _store_rows(h_ptr + layer * plane, n, WIDTH, first, h, BLOCK_ROWS, WIDTH)
        _store_rows(p_ptr + (layer - 1) * plane, n, WIDTH, first, p, BLOCK_ROWS, WIDTH)
    tl.debug_barrier()  # the way back reads rows that other threads of this block wrote
    dout = _load_rows(dout_ptr, n, OUT, first, BLOCK_ROWS, OUT_COLS)
    dh = _mm(dout, _tile(wh_ptr, OUT_COLS, WIDTH), None, INTERPRETED)  # through the head, [OUT_COLS, WIDTH] float32
    dm_from_next = tl.zeros([BLOCK_ROWS, WIDTH], dtype=tl.float32)  # reaches m_l through layer l+1's modulator
    dz = tl.zeros([BLOCK_ROWS, LATENT], dtype=tl.float32)
    for step in range(1, LAYERS):
        layer = LAYERS - step
        sine_argument = _load_rows(p_ptr + (layer - 1) * plane, n, WIDTH, first, BLOCK_ROWS, WIDTH).to(tl.float32)
        modulation = _load_rows(m_ptr + layer * plane, n, WIDTH, first, BLOCK_ROWS, WIDTH).to(tl.float32)
        dm = dh * tl.sin(sine_argument) + dm_from_next
        dp = omega * dh * modulation * tl.cos(sine_argument)
        dq = tl.where(modulation > 0, dm, dm * slope)  # leaky ReLU keeps the sign: m > 0 exactly where q > 0
        tl.atomic_add(dbs_ptr + layer * WIDTH + width, tl.sum(dp, axis=0), sem="relaxed")
        tl.atomic_add(dbm_ptr + layer * WIDTH + width, tl.sum(dq, axis=0), sem="relaxed")
        dp, dq = dp.to(tl.bfloat16), dq.to(tl.bfloat16)
        _store_rows(dp_ptr + (layer - 1) * plane, n, WIDTH, first, dp, BLOCK_ROWS, WIDTH)
        _store_rows(dq_ptr + layer * plane, n, WIDTH, first, dq, BLOCK_ROWS, WIDTH)
        square = (layer - 1) * WIDTH * WIDTH
        dh = _mm(dp, tl.trans(_tile(ws_ptr + square, WIDTH, WIDTH)), None, INTERPRETED)
        dm_from_next = _mm(dq, tl.trans(_tile(wmm_ptr + square, WIDTH, WIDTH)), None, INTERPRETED)
        dz = _mm(dq, tl.trans(_tile(wmz_ptr + (layer - 1) * LATENT * WIDTH, LATENT, WIDTH)), dz, INTERPRETED)
    modulation = _load_rows(m_ptr, n, WIDTH, first, BLOCK_ROWS, WIDTH).to(tl.float32)
    # w0 (w t + b) again: cheaper than keeping a [block, width] tile alive through the whole kernel.
    angle = first_omega * (t[:, None] * _row_vector(ws0_ptr, WIDTH) + _row_vector(bs_ptr, WIDTH))
    dm = dh * tl.sin(angle) + dm_from_next
    dangle = first_omega * dh * modulation * tl.cos(angle)  # gradient of the first layer's w t + b
    dq = tl.where(modulation > 0, dm, dm * slope)
    tl.atomic_add(dws0_ptr + width, tl.sum(dangle * t[:, None], axis=0), sem="relaxed")
    tl.atomic_add(dbs_ptr + width, tl.sum(dangle, axis=0), sem="relaxed")
    tl.atomic_add(dbm_ptr + width, tl.sum(dq, axis=0), sem="relaxed")
    dq = dq.to(tl.bfloat16)
    _store_rows(dq_ptr, n, WIDTH, first, dq, BLOCK_ROWS, WIDTH)
    dz = _mm(dq, tl.trans(_tile(wm0_ptr, LATENT, WIDTH)), dz, INTERPRETED)
    _store_rows(dz_ptr, n, latent_dim, first, dz, BLOCK_ROWS, LATENT)


def _pad_rows(matrix: Tensor, rows: int) -> Tensor:
    return torch.nn.functional.pad(matrix, (0, 0, 0, rows - matrix.shape[0]))


def _stack_or_empty(matrices: list[Tensor], rows: int, columns: int, like: Tensor) -> Tensor:
    """Per-layer matrices stacked; one layer of zeros for a one-layer MLP (the kernels never read it)."""
    if not matrices:
        return like.new_zeros(1, rows, columns, dtype=torch.bfloat16)
    return torch.stack(matrices).to(torch.bfloat16).contiguous()


class _PackedWeights:
    """The MLP's parameters laid out for the kernels: transposed, stacked per layer, latent rows padded."""

    def __init__(self, siren: "ModulatedSiren", latent_dim: int) -> None:
        synthesis, modulator, head = siren.synthesis.layers, siren.modulator, siren.synthesis.head
        width = siren.config.hidden_dim
        latent = padded_latent_dim(latent_dim)
        self.first_weight = synthesis[0].weight[:, 0].float().contiguous()
        self.synthesis_bias = torch.stack([layer.bias for layer in synthesis]).float().contiguous()
        self.modulator_bias = torch.stack([layer.bias for layer in modulator]).float().contiguous()
        self.first_modulator = _pad_rows(modulator[0].weight.t(), latent).to(torch.bfloat16).contiguous()
        hidden = range(1, len(synthesis))
        like = self.first_weight
        self.modulator_from_m = _stack_or_empty([modulator[i].weight[:, :width].t() for i in hidden], width, width, like)
        self.modulator_from_z = _stack_or_empty(
            [_pad_rows(modulator[i].weight[:, width:].t(), latent) for i in hidden], latent, width, like
        )
        self.synthesis = _stack_or_empty([synthesis[i].weight.t() for i in hidden], width, width, like)
        head_columns = _pad_rows(head.weight, OUT_PAD).float()  # [OUT_PAD, width]
        self.head = head_columns.contiguous()
        self.head_hi = head_columns.t().to(torch.bfloat16).contiguous()
        self.head_lo = (head_columns.t() - self.head_hi.float()).to(torch.bfloat16).contiguous()
        self.head_bias = torch.nn.functional.pad(head.bias.float(), (0, OUT_PAD - head.bias.shape[0])).contiguous()


def _constants(siren: "ModulatedSiren", latent_dim: int, out_dim: int) -> dict:
    config = siren.config
    return {
        "first_omega": float(siren.synthesis.omegas[0]),
        "omega": float(config.hidden_omega),
        "slope": float(config.leaky_relu_slope),
        "WIDTH": config.hidden_dim,
        "LATENT": padded_latent_dim(latent_dim),
        "LAYERS": config.num_layers,
        "OUT": out_dim,
        "OUT_COLS": OUT_PAD,
        "INTERPRETED": triton_interpreted(),
    }


def siren_parameters(siren: "ModulatedSiren") -> list[Tensor]:
    """The parameters the fused function takes and returns gradients for, in its order."""
    synthesis = siren.synthesis
    return [p for layer in [*synthesis.layers, synthesis.head, *siren.modulator] for p in (layer.weight, layer.bias)]


class _ModulatedSirenFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, latent: Tensor, siren: "ModulatedSiren", *parameters: Tensor) -> Tensor:
        n, latent_dim = latent.shape
        out_dim = siren.synthesis.head.out_features
        weights = _PackedWeights(siren, latent_dim)
        constants = _constants(siren, latent_dim, out_dim)
        out = torch.empty(n, out_dim, device=latent.device, dtype=torch.float32)
        _forward_kernel[(triton.cdiv(n, FORWARD_LAUNCH["BLOCK_ROWS"]),)](
            t, latent, out, n, latent_dim,
            weights.first_weight, weights.synthesis_bias, weights.modulator_bias, weights.first_modulator,
            weights.modulator_from_m, weights.modulator_from_z, weights.synthesis, weights.head_hi, weights.head_lo,
            weights.head_bias, **constants, **FORWARD_LAUNCH,
        )
        ctx.save_for_backward(t, latent)
        ctx.weights, ctx.constants = weights, constants
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        t, latent = ctx.saved_tensors
        weights, constants = ctx.weights, ctx.constants
        n, latent_dim = latent.shape
        layers, width = constants["LAYERS"], constants["WIDTH"]
        dout = dout.float().contiguous()
        scratch = {"device": latent.device, "dtype": torch.bfloat16}
        dz = torch.empty(n, latent_dim, device=latent.device, dtype=torch.float32)
        zb = torch.empty(n, latent_dim, **scratch)
        m, h, dq = (torch.empty(layers, n, width, **scratch) for _ in range(3))
        p, dp = (torch.empty(max(layers - 1, 1), n, width, **scratch) for _ in range(2))
        dws0 = torch.zeros(width, device=latent.device, dtype=torch.float32)
        dbs, dbm = (torch.zeros(layers, width, device=latent.device, dtype=torch.float32) for _ in range(2))
        _backward_kernel[(triton.cdiv(n, BACKWARD_LAUNCH["BLOCK_ROWS"]),)](
            t, latent, dout, dz, zb, m, h, p, dq, dp, dws0, dbs, dbm, n, latent_dim,
            weights.first_weight, weights.synthesis_bias, weights.modulator_bias, weights.first_modulator,
            weights.modulator_from_m, weights.modulator_from_z, weights.synthesis, weights.head, **constants,
            **BACKWARD_LAUNCH,
        )
        # Weight gradients: sums over the samples, as matrix products of the buffers (bfloat16 in, as autocast's).
        synthesis = [(dws0[:, None], dbs[0])]
        synthesis += [((dp[i - 1].t() @ h[i - 1]).float(), dbs[i]) for i in range(1, layers)]
        head = (dout.t() @ h[-1].float(), dout.sum(0))
        modulator = [((dq[0].t() @ zb).float(), dbm[0])]
        modulator += [(torch.cat([dq[i].t() @ m[i - 1], dq[i].t() @ zb], dim=1).float(), dbm[i]) for i in range(1, layers)]
        grads = [g for pair in [*synthesis, head, *modulator] for g in pair]
        return (None, dz, None, *grads)


def modulated_siren(siren: "ModulatedSiren", t: Float[Tensor, "n 1"], latent: Float[Tensor, "n latent"]) -> Float[Tensor, "n out"]:
    """ModulatedSiren's output through the fused kernels (bfloat16 arithmetic)."""
    return _ModulatedSirenFunction.apply(
        t.reshape(-1).float().contiguous(), latent.float().contiguous(), siren, *siren_parameters(siren)
    )
