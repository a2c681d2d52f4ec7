"""Rate-aware training of a field's grids, as C3 and COOL-CHIC fit latent grids to one video.

Each grid gets a quantiser: per (level, channel) a learned step and an entropy model of the integer symbols
(compression/latent_model.py). Training reads the grid through it: symbols = latents / step plus uniform noise
(the rate's stand-in for rounding), then, from `ste_from` of the run on, rounded with the identity's gradient;
evaluation rounds. The loss adds lambda x the estimated bits per pixel of those symbols to the distortion, and
with a `target_bpp` lambda follows the estimate (rate control). The .nvp file stores exactly the rounded
symbols, range-coded under the trained models, and each step: a decoded field renders what the trained one
renders in evaluation.

Core module: no nerfstudio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.compression.latent_model import LatentEntropyModel, QuantiseMode, rounded_straight_through
from nvp_nerfstudio.encodings.grid import GridEncoding
from nvp_nerfstudio.encodings.layout import GridLayout

# Entries of a grid whose rate a training step estimates: each level's share of them drawn uniformly from the
# level, their bits scaled up, so the estimate stays unbiased while a step does not pay for the entropy model of
# every entry of a hash table.
RATE_SAMPLE = 1 << 16


@dataclass(frozen=True)
class RateConfig:
    """Rate-aware training: loss = MSE + lmbda x estimated bits per pixel of the grids' quantised latents."""

    lmbda: float = 1e-2
    """Weight of the rate (bits per source pixel) against the mean squared error of RGB in [0, 1]."""
    target_bpp: Optional[float] = None
    """Rate control: lmbda is adapted every step so the estimated file size approaches this many bits per
    pixel (latents and the other tensors at mlp_bits); None keeps lmbda fixed."""
    control_gain: float = 0.05
    """How fast lmbda follows the target: per step it is multiplied by exp(gain x (estimate / target - 1))."""
    ste_from: float = 0.7
    """Fraction of the run after which quantisation is rounding (straight through) instead of uniform noise."""
    init_step: float = 2.0**-7
    """Initial quantisation step of every level and channel (learned from there)."""
    mlp_bits: Literal[8, 16, 32] = 8
    """Bits per value the file stores the other tensors (the MLP) at, unless nvp-compress is told otherwise
    (CodecOptions.for_field): counted in the size rate control steers."""


class SimulatedQuantisation(torch.autograd.Function):
    """table -> each level's entries quantised under its steps [levels, features], in one pass a level each way.

    `noise` given: table + noise x step (uniform noise in symbols, the rate's stand-in for rounding); else
    round(table / step) x step with the identity's gradient. Either way the table gets the distortion's gradient
    as it is, and each step the gradient's sum against (noise, or the rounding error in symbols): d/ds of
    s x (table / s + noise) and of s x round(table / s), the noise and the rounding held fixed. Written out
    because autograd's version of the same formula made several passes over the whole table per step and
    per level."""

    @staticmethod
    def forward(ctx, table: Tensor, steps: Tensor, sizes: tuple[int, ...], noise: Optional[Tensor]) -> Tensor:
        out = torch.empty_like(table)
        offsets = None if noise is not None else torch.empty_like(table)
        start = 0
        for level, size in enumerate(sizes):
            rows, step = slice(start, start + size), steps[level]
            if noise is not None:
                torch.addcmul(table[rows], noise[rows], step, out=out[rows])
            else:
                scaled = table[rows] / step
                symbols = torch.round(scaled)
                torch.sub(symbols, scaled, out=offsets[rows])
                torch.mul(symbols, step, out=out[rows])
            start += size
        ctx.sizes = sizes
        ctx.save_for_backward(noise if noise is not None else offsets)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        (offsets,) = ctx.saved_tensors
        grad_steps, start = [], 0
        for size in ctx.sizes:
            rows = slice(start, start + size)
            grad_steps.append(torch.linalg.vecdot(grad[rows].T, offsets[rows].T))
            start += size
        return grad, torch.stack(grad_steps), None, None


class LatentQuantiser(nn.Module):
    """The table a rate-aware grid's backends read: each level quantised under its own step and entropy model."""

    def __init__(self, layout: GridLayout, features: int, config: RateConfig) -> None:
        super().__init__()
        self.layout = layout
        self.model = LatentEntropyModel(len(layout.level_sizes), features, init_step=config.init_step)
        self.mode: QuantiseMode = "noise"
        self.baked = False
        """Set on a decoded field: its table already holds symbols x step, as the file stores them."""
        self.last: Optional[tuple[Tensor, Tensor, Optional[Tensor]]] = None
        """(table, steps, noise) of the last training forward, for its rate estimate."""

    def forward(self, table: Float[Tensor, "entries features"]) -> Float[Tensor, "entries features"]:
        if self.baked:
            return table
        steps = self.steps()
        sizes = tuple(self.layout.level_sizes)
        if not self.training:
            with torch.no_grad():
                return torch.cat([torch.round(level / step) * step for level, step in zip(table.split(sizes), steps)])
        noise = torch.rand_like(table).sub_(0.5) if self.mode == "noise" else None
        self.last = (table, steps, noise)
        return SimulatedQuantisation.apply(table, steps, sizes, noise)

    def estimated_bits(self) -> Tensor:
        """Bits of the last training forward's symbols under the entropy models, from about RATE_SAMPLE entries:
        each level's share drawn uniformly from it and gathered in one indexing (whose gradient is one table)."""
        table, steps, noise = self.last
        picks, counts = [], []
        for offset, size in zip(self.layout.offsets, self.layout.level_sizes):
            count = min(size, max(1, RATE_SAMPLE * size // len(table)))
            picks.append(offset + (torch.randint(size, (count,), device=table.device) if count < size else torch.arange(size, device=table.device)))
            counts.append(count)
        rows = torch.cat(picks)
        levels = torch.repeat_interleave(torch.arange(len(counts), device=table.device), torch.tensor(counts, device=table.device))
        scaled = table[rows] / steps[levels]
        symbols = scaled + noise[rows] if noise is not None else rounded_straight_through(scaled)
        total = table.new_zeros(())
        for level, (part, size, count) in enumerate(zip(symbols.split(counts), self.layout.level_sizes, counts)):
            total = total + self.model.bits(part, level) * (size / count)
        return total

    def steps(self) -> Float[Tensor, "levels features"]:
        """Every level's step, computed in one place: evaluation and the file use these very float32 values."""
        return self.model.log_step.exp()


class RateState(nn.Module):
    """A field's rate term: lmbda (a buffer, so a resumed run continues with it) and what the size estimate
    adds to the latents' bits."""

    def __init__(self, config: RateConfig, pixels: int, fixed_bits: int) -> None:
        super().__init__()
        self.config = config
        self.pixels = pixels
        self.fixed_bits = fixed_bits
        """Bits of what rate-aware training does not shrink: the other tensors at mlp_bits."""
        self.register_buffer("lmbda", torch.tensor(config.lmbda, dtype=torch.float64))
        self.estimated_bpp = float("nan")
        """The file's estimated bits per pixel at the last training step."""


def parameter_groups(field: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The field's parameters, with the quantisers' (steps and entropy models) apart: weight decay, which keeps
    latents and weights small, would only bias the steps and the models."""
    entropy = {id(p) for quantiser in quantisers(field) for p in quantiser.parameters()}
    groups = {"fields": [p for p in field.parameters() if id(p) not in entropy]}
    if entropy:
        groups["entropy"] = [p for quantiser in quantisers(field) for p in quantiser.parameters()]
    return groups


def quantisers(field: nn.Module) -> list[LatentQuantiser]:
    return [module.quantiser for module in field.modules() if isinstance(module, GridEncoding) and module.quantiser is not None]


def attach(field: nn.Module, config: RateConfig) -> None:
    """Make every grid of the field rate-aware (called when the field's config asks for it)."""
    grids = [module for module in field.modules() if isinstance(module, GridEncoding)]
    if not grids:
        raise ValueError(f"{type(field).__name__} has no grid to train for rate: rate-aware training needs grid latents")
    for grid in grids:
        grid.quantiser = LatentQuantiser(grid.layout, grid.config.features_per_level, config)
    grid_values = sum(grid.params.numel() for grid in grids)
    other_values = sum(p.numel() for p in field.parameters()) - grid_values - sum(p.numel() for q in quantisers(field) for p in q.parameters())
    shape = field.shape
    field.rate = RateState(config, shape.num_frames * shape.height * shape.width, other_values * config.mlp_bits)


def set_training_progress(field: nn.Module, progress: float) -> None:
    """Noise early in the run, straight-through rounding from `ste_from` on."""
    state = getattr(field, "rate", None)
    if state is None:
        return
    mode: QuantiseMode = "noise" if progress < state.config.ste_from else "ste"
    for quantiser in quantisers(field):
        quantiser.mode = mode


def rate_loss(field: nn.Module) -> Optional[Tensor]:
    """lmbda x the estimated bits per pixel of the last training forward's latents (None for a field not trained
    for rate, or in evaluation: nerfstudio's evaluation losses must not move lmbda); with a target, lmbda then
    moves toward it."""
    state = getattr(field, "rate", None)
    if state is None or not field.training:
        return None
    bits = sum(quantiser.estimated_bits() for quantiser in quantisers(field))
    bpp = bits / state.pixels
    state.estimated_bpp = float(bpp.detach()) + state.fixed_bits / state.pixels
    target = state.config.target_bpp
    if target is not None:
        state.lmbda.mul_(math.exp(state.config.control_gain * max(-1.0, min(1.0, state.estimated_bpp / target - 1.0))))
    return state.lmbda.float() * bpp
