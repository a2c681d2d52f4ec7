"""Rate-aware training of a field's grids, as C3 and COOL-CHIC fit latent grids to one video.

Each grid gets a quantiser: per (level, channel) a learned step and an entropy model of the integer symbols
(compression/latent_model.py). Training reads the grid through it: symbols = latents / step plus uniform noise
(the rate's stand-in for rounding), then, from `ste_from` of the run on, rounded with the identity's gradient;
evaluation rounds. The loss adds lambda x the estimated bits per pixel of those symbols to the distortion, and
with a `target_bpp` lambda follows the estimated size of the file, the symbols rounded (rate control, a step at a
time, under a ceiling that falls from the first step's size to the target). Wherever the latents are rounded, the
MLP is read at the bits the file stores it at (`read_as_stored`). The .nvp file stores exactly the rounded
symbols, range-coded under the trained models, each step, and that MLP: a decoded field renders what the trained
one renders in evaluation.

Core module: no nerfstudio.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from nvp_nerfstudio.compression.geometry import level_geometry
from nvp_nerfstudio.compression.latent_coder import LevelModel
from nvp_nerfstudio.compression.latent_model import LatentEntropyModel, QuantiseMode, coded_bits, rounded_straight_through
from nvp_nerfstudio.compression.stored_tensors import as_stored
from nvp_nerfstudio.encodings.grid import GridEncoding

# Entries of a grid whose rate a training step estimates: each level's share of them drawn uniformly from the
# level's coded entries, their bits scaled up, so the estimate stays unbiased while a step does not pay for the
# entropy model of every entry of a hash table. The estimate's cost follows this, not the batch: on a CPU, 2^16
# left fewer steps in the same time and a worse point than 2^14 (docs/compression.md).
RATE_SAMPLE = 1 << 14
REFIT_EVERY = 16
"""Rate control's estimate refits each level's model to its sampled symbols (latent_model.coded_bits) on one step in
this many, and in between scales the bits under the trained models by the last refit's ratio: the refit cost a
large share of each step, and the ratio moves slowly."""
NOISE_POOL_SEED = 0x5EED
"""Seed of the generator the training noise's pool is drawn from (LatentQuantiser.uniform_noise): fixed, so that a
resumed run rebuilds the pool it had."""
TARGET_TOLERANCE = 0.1
"""Rate control has reached its target when the file's estimated size at the run's end is within this fraction of
it; further off, the run ends with a warning (`target_miss`)."""
LEVEL_OVERHEAD = 58
"""Bytes a latent level's section takes besides its symbols, steps and model (nvp-c on bikes at 320x136:
file size less the estimate over 44 levels, 86 bytes a level, of which the steps and model are 28)."""


@dataclass(frozen=True)
class RateConfig:
    """Rate-aware training: loss = MSE + lmbda x estimated bits per pixel of the grids' quantised latents."""

    lmbda: float = 1e-2
    """Weight of the rate (bits per source pixel) against the mean squared error of RGB in [0, 1]."""
    target_bpp: Optional[float] = None
    """Rate control: lmbda is adapted every step so the estimated file size approaches this many bits per
    pixel (latents and the other tensors at mlp_bits); None keeps lmbda fixed."""
    control_gain: float = 0.02
    """How fast rate control raises lmbda while the estimate is above its aim: by exp(gain x log(estimate / aim)) a
    training step, the log clamped to 1. Paced by steps, not by the run's fraction, because the latents' rate answers
    lmbda a step at a time at the optimiser's pace, however long the run: paced by the run, a long run's controller
    trailed its latents (bikes 320x136, 3000 steps at 0.05 bpp: +38 %), a short run's overshot them."""
    release_gain: float = 0.04
    """The same gain for lowering lmbda while the estimate is below the target itself: faster, because a lmbda too
    high shrinks the latents further than the optimiser soon undoes, while one too low only delays the rate's fall."""
    reach_at: float = 0.7
    """Rate control's aim is a ceiling that falls geometrically from the first step's size to the target by this
    fraction of the run, then holds it: lmbda rises only while the estimate is above it, and falls only while the
    estimate is below the target, so that a rate falling faster than the path is let fall (it reaches the target
    sooner, with less of the run spent at a lmbda that is then released) and an early lmbda does not wind up while
    the latents' rate follows it at the optimiser's pace."""
    lmbda_range: tuple[float, float] = (1e-6, 1e4)
    """Rate control keeps lmbda within these bounds (anti-windup: a target out of reach does not drive it on)."""
    ste_from: float = 0.85
    """Fraction of the run after which quantisation is rounding (straight through) instead of uniform noise. The
    longer the rounding phase, the larger the file at equal lambda, the PSNR moving less: a late switch brought
    nvp-c closest to x265 (docs/compression.md)."""
    init_step: float = 2.0**-7
    """Initial quantisation step of every level and channel (learned from there)."""
    mlp_bits: Literal[8, 16, 32] = 8
    """Bits per value the file stores the other tensors (the MLP) at, unless nvp-compress is told otherwise
    (CodecOptions.for_field): counted in the size rate control steers. The MLP is trained for them as the latents
    for their steps (`read_as_stored`)."""


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


class CodedRows:
    """A grid's rows that the file codes, level after level, and how many of each level a rate estimate draws."""

    def __init__(self, grid: GridEncoding, device: torch.device) -> None:
        per_level = [level_geometry(grid, level).entries + offset for level, offset in enumerate(grid.layout.offsets)]
        self.sizes = [len(rows) for rows in per_level]
        total = sum(self.sizes)
        self.counts = self.sizes if total <= RATE_SAMPLE else [min(size, max(1, RATE_SAMPLE * size // total)) for size in self.sizes]
        """Rows drawn a level: its share of RATE_SAMPLE (all of them where the grid codes fewer)."""
        self.rows = torch.from_numpy(np.concatenate(per_level)).to(device)
        counts, sizes = torch.tensor(self.counts, device=device), torch.tensor(self.sizes, device=device)
        self.levels = torch.repeat_interleave(torch.arange(len(self.counts), device=device), counts)
        """The level of each row drawn, the levels one after another."""
        self.row_sizes = sizes[self.levels]
        self.row_starts = torch.tensor([0, *itertools.accumulate(self.sizes)][:-1], device=device)[self.levels]
        self.weights = (self.row_sizes / counts[self.levels]).float()
        """Each row drawn stands for its level's rows over the rows drawn of it."""

    def sample(self) -> tuple[Int[Tensor, "n"], Int[Tensor, "n"], Float[Tensor, "n"]]:
        """(rows, their levels, their weights): drawn uniformly with replacement within each level; every row once
        where the grid codes few."""
        if self.counts == self.sizes:
            return self.rows, self.levels, self.weights
        within = (torch.rand(len(self.levels), dtype=torch.float64, device=self.rows.device) * self.row_sizes).long()
        return self.rows.index_select(0, self.row_starts + torch.minimum(within, self.row_sizes - 1)), self.levels, self.weights


class LatentQuantiser(nn.Module):
    """The table a rate-aware grid's backends read: each level quantised under its own step and entropy model."""

    def __init__(self, grid: GridEncoding, config: RateConfig) -> None:
        super().__init__()
        self.layout = grid.layout
        self.model = LatentEntropyModel(len(grid.layout.level_sizes), grid.config.features_per_level, init_step=config.init_step)
        self.coded: Optional[CodedRows] = None
        """The rows that the file codes (those input in [0, 1] reaches, geometry.py), found at the first estimate:
        the rest never reaches the output, is stored as zero, and costs nothing."""
        self.noise_pool: Optional[Tensor] = None
        """Uniform noise in [-1/2, 1/2), twice the table's size, drawn once (see `uniform_noise`)."""
        self.mode: QuantiseMode = "noise"
        self.baked = False
        """Set on a decoded field: its table already holds symbols x step, as the file stores them."""
        self.last: Optional[tuple[Tensor, Tensor, Optional[Tensor]]] = None
        """(table, steps, noise) of the last training forward, for its rate estimate."""
        self.coded_ratios: list[float] = []
        """Each level's bits as the file codes its sampled symbols over their bits under the trained model, at the
        last refit (REFIT_EVERY)."""
        self.estimates = 0
        """Rounded estimates made: the refit falls on the first and every REFIT_EVERY-th after."""

    def forward(self, table: Float[Tensor, "entries features"]) -> Float[Tensor, "entries features"]:
        if self.baked:
            return table
        steps = self.steps()
        sizes = tuple(self.layout.level_sizes)
        if not self.training:
            with torch.no_grad():
                return torch.cat([torch.round(level / step) * step for level, step in zip(table.split(sizes), steps)])
        noise = self.uniform_noise(table) if self.mode == "noise" else None
        self.last = (table, steps, noise)
        return SimulatedQuantisation.apply(table, steps, sizes, noise)

    def uniform_noise(self, table: Float[Tensor, "entries features"]) -> Float[Tensor, "entries features"]:
        """Uniform noise in [-1/2, 1/2) for every entry: a window of the pool at an offset drawn each step. Within a
        step the entries' noise is independent, and each entry's differs from step to step, as a fresh draw's; but
        it costs nothing, where drawing a number for each of millions of entries every step was a large part of a
        step on a CPU. The pool comes from a generator of its own with a fixed seed, so a resumed run rebuilds it as
        it was (the offsets come from torch's own)."""
        size = table.numel()
        if self.noise_pool is None or self.noise_pool.numel() != 2 * size or self.noise_pool.device != table.device:
            generator = torch.Generator(table.device).manual_seed(NOISE_POOL_SEED)
            self.noise_pool = torch.rand(2 * size, generator=generator, device=table.device).sub_(0.5)
        offset = int(torch.randint(size + 1, ()))
        return self.noise_pool[offset : offset + size].view_as(table)

    def estimated_bits(self, grid: GridEncoding, count_rounded: bool) -> tuple[Tensor, float, float]:
        """Bits of the last training forward's symbols under the entropy models, from about RATE_SAMPLE of the
        coded entries: each level's share drawn uniformly from its coded rows and gathered in one indexing
        (whose gradient is one table); the rows never coded get no rate gradient (under noise it would walk
        each of them by about a learning rate a step, and the estimate would count them). And, if `count_rounded`
        (nan otherwise: only rate control needs them), without a gradient, the bits of the same entries rounded: as
        the file codes them (latent_model.coded_bits, through the ratio of the last refit, REFIT_EVERY), and under
        the trained models alone. Under noise the two differ: the trained models are fitted to noisy symbols, and a
        symbol they are sure of costs about 0.15 bits (the logistic's narrowest scale, 1/16) where the file codes it
        in next to none."""
        table, steps, noise = self.last
        if self.coded is None:
            self.coded = CodedRows(grid, table.device)
        rows, levels, weights = self.coded.sample()
        # index_select: several times faster than indexing with a tensor on a CPU.
        scaled = table.index_select(0, rows) / steps.index_select(0, levels)
        symbols = scaled + noise.index_select(0, rows) if noise is not None else rounded_straight_through(scaled)
        bits = self.model.row_bits(symbols, levels)
        total = (bits * weights).sum()
        if not count_rounded:
            return total, math.nan, math.nan
        counts, refit = self.coded.counts, self.estimates % REFIT_EVERY == 0
        self.estimates += 1
        with torch.no_grad():
            coded = torch.round(scaled) if noise is not None else symbols
            trained = self.model.row_bits(coded, levels) if noise is not None else bits
            sampled = [part.sum() for part in trained.split(counts)]
            if refit:
                self.coded_ratios = [
                    coded_bits(part, bits) / float(bits) if count and bits > 0 else 1.0
                    for part, bits, count in zip(coded.split(counts), sampled, counts)
                ]
        level_bits = [float(bits) * (size / count) if count else 0.0 for bits, size, count in zip(sampled, self.coded.sizes, counts)]
        as_coded = sum(bits * ratio for bits, ratio in zip(level_bits, self.coded_ratios))
        return total, as_coded, sum(level_bits)

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
        """Bits of what rate-aware training does not shrink: the other tensors at mlp_bits, and what each latent
        level's section stores besides its symbols."""
        self.register_buffer("lmbda", torch.tensor(config.lmbda, dtype=torch.float64))
        self.register_buffer("progress", torch.tensor(0.0, dtype=torch.float64))
        """The fraction of the run done at the last training step (rate control's aim follows it)."""
        self.register_buffer("first_bpp", torch.tensor(0.0, dtype=torch.float64))
        """Where rate control's aim starts: the first step's estimate with the latents under the trained models (0 before
        it: an estimate never is). As the file codes them, the near-zero early latents cost next to nothing, and an aim
        starting there would wind lmbda up while they grow."""
        self.estimated_bpp = float("nan")
        """The file's estimated bits per pixel at the last training step: the latents rounded, as coded."""
        self.mode: QuantiseMode = "noise"
        """The quantisers' mode: the MLP is read as stored once the latents are rounded (`read_as_stored`)."""


def parameter_groups(field: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The field's parameters, with the quantisers' (steps and entropy models) apart: weight decay, which keeps
    latents and weights small, would only bias the steps and the models."""
    entropy = {id(p) for quantiser in quantisers(field) for p in quantiser.parameters()}
    groups = {"fields": [p for p in field.parameters() if id(p) not in entropy]}
    if entropy:
        groups["entropy"] = [p for quantiser in quantisers(field) for p in quantiser.parameters()]
    return groups


def rate_grids(field: nn.Module) -> list[GridEncoding]:
    return [module for module in field.modules() if isinstance(module, GridEncoding) and module.quantiser is not None]


def quantisers(field: nn.Module) -> list[LatentQuantiser]:
    return [grid.quantiser for grid in rate_grids(field)]


def mlp_parameters(field: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of a field trained for rate besides its grids' latents and their quantisers: its MLP, which the
    file stores at mlp_bits."""
    latent = {id(grid.params) for grid in rate_grids(field)} | {id(p) for quantiser in quantisers(field) for p in quantiser.parameters()}
    return {name: p for name, p in field.named_parameters() if id(p) not in latent}


FIXED_SHARE = 1 / 3
"""The most of a rate target that the MLP and the levels' models may take: beyond it the latents, which carry the
video, would get too few bits (nvp-c on bikes 320x136: 0.0147 bpp, 29 % of 0.05 bpp; 49 % of 0.03 bpp)."""


def attach(field: nn.Module, config: RateConfig) -> None:
    """Make every grid of the field rate-aware (called when the field's config asks for it)."""
    grids = [module for module in field.modules() if isinstance(module, GridEncoding)]
    if not grids:
        raise ValueError(f"{type(field).__name__} has no grid to train for rate: rate-aware training needs grid latents")
    for grid in grids:
        grid.quantiser = LatentQuantiser(grid, config)
    other_values = sum(p.numel() for p in mlp_parameters(field).values())
    level_bytes = sum(len(grid.layout.level_sizes) * latent_level_bytes(grid.config.features_per_level) for grid in grids)
    shape = field.shape
    pixels = shape.num_frames * shape.height * shape.width
    field.rate = RateState(config, pixels, other_values * config.mlp_bits + 8 * level_bytes)


def fixed_bpp(field: nn.Module) -> float:
    """Bits per pixel of what a rate-aware field stores besides its latents' symbols."""
    return field.rate.fixed_bits / field.rate.pixels


def crowds_its_target(field: nn.Module) -> bool:
    """Whether what the field stores besides its latents takes more than FIXED_SHARE of its rate target (a smaller
    field is then built: a field does not shrink with its clip)."""
    target = field.rate.config.target_bpp
    return target is not None and fixed_bpp(field) > FIXED_SHARE * target


def check_target(field: nn.Module) -> None:
    """One error line for a rate target below what the field stores besides its latents (its smallest size)."""
    config, shape = field.rate.config, field.shape
    if config.target_bpp is not None and config.target_bpp <= fixed_bpp(field):
        raise SystemExit(
            f"error: a target of {config.target_bpp:g} bpp is below what the smallest field stores besides its latents on "
            f"{shape.num_frames} frames of {shape.width}x{shape.height} ({fixed_bpp(field):.4g} bpp: its MLP at {config.mlp_bits} bits "
            "and each level's model): raise the target, or train on more frames"
        )


def latent_level_bytes(channels: int) -> int:
    """What a latent level's section stores besides its symbols' bits: its steps and entropy model, and about
    LEVEL_OVERHEAD bytes for its entry in the file's header and the range coder's last words."""
    return 4 * channels + LevelModel.stored_size(channels) + LEVEL_OVERHEAD


def set_training_progress(field: nn.Module, progress: float) -> None:
    """Noise early in the run, straight-through rounding from `ste_from` on; rate control's pace."""
    state = getattr(field, "rate", None)
    if state is None:
        return
    if state.config.target_bpp is not None:
        control(state, progress)
    state.mode = "noise" if progress < state.config.ste_from else "ste"
    for quantiser in quantisers(field):
        quantiser.mode = state.mode


def holds_stored_values(field: nn.Module) -> bool:
    """Whether the field holds the values its file stores (decoded from one, or field_codec.quantised's copy): its
    grids and MLP are read as they are."""
    return any(quantiser.baked for quantiser in quantisers(field))


def read_as_stored(field: nn.Module, module: nn.Module, *inputs: Tensor) -> Tensor:
    """module(*inputs), its parameters (the field's MLP) read as the file stores them (RateConfig.mlp_bits) wherever
    the field's latents are rounded: in evaluation, so that it renders what the file decodes to, and in training from
    `ste_from` on, with the identity's gradient, so that the MLP learns its 8 bits as the latents their steps
    (docs/compression.md). Plain module(*inputs) for a field not trained for rate, or decoded from a file (its MLP
    holds the stored values already)."""
    state = getattr(field, "rate", None)
    if state is None or holds_stored_values(field) or (field.training and state.mode == "noise"):
        return module(*inputs)
    bits = state.config.mlp_bits
    if field.training:
        values = {name: value + (as_stored(value, bits) - value).detach() for name, value in module.named_parameters()}
    else:
        values = {name: as_stored(value.detach(), bits) for name, value in module.named_parameters()}
    return torch.func.functional_call(module, values, inputs)


def as_trained(field: nn.Module, tensors: list[tuple[str, Tensor]], mlp_bits: int) -> list[tuple[str, Tensor]]:
    """The field's (name, tensor) pairs as a file at `mlp_bits` should take them: a field trained for rate and stored
    at bits other than those it was trained for stores the MLP it renders (read_as_stored), not the float32 weights
    it has not rendered with since `ste_from`."""
    state = getattr(field, "rate", None)
    if state is None or mlp_bits == state.config.mlp_bits or holds_stored_values(field):
        return tensors
    mlp = mlp_parameters(field)
    return [(name, as_stored(value, state.config.mlp_bits) if name in mlp else value) for name, value in tensors]


def control(state: RateState, progress: float) -> None:
    """Move lmbda toward the target by the last step's estimate: once a training step (no step since the last call,
    no move)."""
    stepped = progress > float(state.progress)
    state.progress.fill_(progress)
    if not stepped or not math.isfinite(state.estimated_bpp):
        return
    config, estimate = state.config, state.estimated_bpp
    aim = config.target_bpp * (float(state.first_bpp) / config.target_bpp) ** max(0.0, 1.0 - progress / config.reach_at)
    if estimate > aim:
        error, gain = min(1.0, math.log(estimate / aim)), config.control_gain
    elif estimate < config.target_bpp:
        error, gain = max(-1.0, math.log(estimate / config.target_bpp)), config.release_gain
    else:
        return
    low, high = config.lmbda_range
    state.lmbda.mul_(math.exp(gain * error)).clamp_(low, high)


def rate_metrics(field: nn.Module) -> dict[str, float]:
    """What a training step of a field under rate control shows of it: the file's estimated bits per pixel at the
    last step, and lmbda (empty for other fields and before the first estimate)."""
    state = getattr(field, "rate", None)
    if state is None or state.config.target_bpp is None or not math.isfinite(state.estimated_bpp):
        return {}
    return {"estimated_bpp": state.estimated_bpp, "lmbda": float(state.lmbda)}


def target_miss(field: nn.Module) -> Optional[str]:
    """A warning line for a run whose rate control ended further than TARGET_TOLERANCE from its target, with why and
    what to do (None when it did not, or had no target): a missed target is otherwise silent until the file is
    written."""
    metrics = rate_metrics(field)
    if not metrics:
        return None
    config, estimate = field.rate.config, metrics["estimated_bpp"]
    off = estimate / config.target_bpp - 1.0
    if abs(off) <= TARGET_TOLERANCE:
        return None
    low, high = config.lmbda_range
    if metrics["lmbda"] <= low or metrics["lmbda"] >= high:
        why = f"lmbda is at its bound ({metrics['lmbda']:g}): the target is beyond this field's reach; set another target"
    else:
        why = "lmbda had not settled when the run ended (the rate follows it over hundreds of steps): train more steps"
    side = "below" if off < 0 else "above"
    return f"warning: rate control ended at {estimate:.4g} bpp (the file's estimate), {100 * abs(off):.0f} % {side} its target of {config.target_bpp:g} bpp: {why}"


def rate_loss(field: nn.Module) -> Optional[Tensor]:
    """lmbda x the estimated bits per pixel of the last training forward's latents (None for a field not trained
    for rate, or in evaluation: nerfstudio's evaluation losses must not count as training steps); records the
    estimate of the file's size that rate control follows (nan without a target: nothing reads it)."""
    state = getattr(field, "rate", None)
    if state is None or not field.training:
        return None
    estimates = [grid.quantiser.estimated_bits(grid, count_rounded=state.config.target_bpp is not None) for grid in rate_grids(field)]
    bpp = sum(bits for bits, _, _ in estimates) / state.pixels
    state.estimated_bpp = (sum(as_coded for _, as_coded, _ in estimates) + state.fixed_bits) / state.pixels
    if float(state.first_bpp) == 0.0 and math.isfinite(state.estimated_bpp):
        state.first_bpp.fill_((sum(as_trained for _, _, as_trained in estimates) + state.fixed_bits) / state.pixels)
    return state.lmbda.float() * bpp
