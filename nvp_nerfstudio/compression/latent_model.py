"""The differentiable entropy model of one grid's latents, for rate-aware training (C3 / COOL-CHIC style).

Per (level, channel): a learned quantisation step (latents = symbols x step) and a discretised logistic
over the integer symbols, centred at a learned mean shifted by a rounded linear prediction from the
entry's earlier channels: latent_coder.py's stored model, which drives the range coder, is exactly this
model's parameters as float32. Training adds `bits` of the simulated quantised latents, times a
Lagrangian, to the distortion; the file stores `level_model(level)` and the coded `quantise(..., "round")`.

Core module: torch and numpy.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from nvp_nerfstudio.compression.latent_coder import MAX_LOG_SCALE, MIN_LOG_SCALE, PRECISION, SHIFT_LIMIT, LevelModel, pack

QuantiseMode = Literal["noise", "ste", "round"]


def rounded_straight_through(values: Tensor) -> Tensor:
    """round(values), with the gradient of the identity."""
    return values + (torch.round(values) - values).detach()


class LatentEntropyModel(nn.Module):
    """Quantisation steps and entropy models of a grid's levels, each [channels] (weights [channels, channels])."""

    def __init__(self, num_levels: int, channels: int, init_step: float = 2.0**-8, init_scale: float = 1.0) -> None:
        super().__init__()
        self.log_step = nn.Parameter(torch.full((num_levels, channels), math.log(init_step)))
        """Natural log of each channel's quantisation step: the step stays positive."""
        self.mean = nn.Parameter(torch.zeros(num_levels, channels))
        """Centre of each channel's logistic, in symbols."""
        self.log_scale = nn.Parameter(torch.full((num_levels, channels), math.log(init_scale)))
        """Natural log of each channel's logistic scale, in symbols (clamped as the coder clamps it)."""
        self.weights = nn.Parameter(torch.zeros(num_levels, channels, channels))
        """weights[level, c, d], d < c: channel c's predicted offset from its mean per unit of channel d's."""

    def step(self, level: int) -> Float[Tensor, "channels"]:
        return self.log_step[level].exp()

    def quantise(self, latents: Float[Tensor, "n channels"], level: int, mode: QuantiseMode) -> Float[Tensor, "n channels"]:
        """The latents in symbols: with additive uniform noise (training's stand-in for rounding: `bits` of it
        estimates the rate), rounded with the identity's gradient ("ste"), or rounded ("round": the coded symbols)."""
        scaled = latents / self.step(level)
        if mode == "noise":
            return scaled + torch.rand_like(scaled) - 0.5
        if mode == "ste":
            return rounded_straight_through(scaled)
        if mode == "round":
            return torch.round(scaled)
        raise ValueError(f"quantisation mode must be noise, ste or round, got {mode!r}")

    def dequantise(self, symbols: Float[Tensor, "n channels"], level: int) -> Float[Tensor, "n channels"]:
        return symbols * self.step(level)

    def bits(self, symbols: Float[Tensor, "n channels"], level: int) -> Float[Tensor, ""]:
        """Estimated bits of the symbols under the level's model (row_bits, summed)."""
        return self.row_bits(symbols, torch.full((len(symbols),), level, dtype=torch.long, device=symbols.device)).sum()

    def row_bits(self, symbols: Float[Tensor, "n channels"], levels: Int[Tensor, "n"]) -> Float[Tensor, "n"]:
        """Estimated bits of each row of symbols under its level's model: the sum over channels of -log2 P(symbol),
        P the logistic's mass over [symbol - 1/2, symbol + 1/2], floored at the coder's smallest probability. Rows
        of every level in one pass: a step estimates dozens of levels, and a pass per level was mostly overhead."""
        channels = symbols.shape[1]
        # Each level's parameters side by side, gathered per row in one index_select (several times faster on a CPU
        # than indexing with a tensor); weights by column: column d is every channel's weight on channel d.
        columns = torch.tril(self.weights, diagonal=-1).transpose(1, 2).flatten(1)
        per_level = torch.cat([self.mean, self.log_scale.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE).exp(), columns], 1)
        mean, scale, *weights = per_level.index_select(0, levels).split(channels, 1)
        offsets = symbols - mean
        # Each channel's rounded prediction from the entry's earlier channels (latent_coder.shifts), straight through.
        shifts = sum(column * offsets[:, d : d + 1] for d, column in enumerate(weights))
        centre = mean + rounded_straight_through(shifts)
        lower, upper = (symbols - 0.5 - centre) / scale, (symbols + 0.5 - centre) / scale
        # From the tail on each edge's side of the centre: no cancellation far out in either tail.
        below, above = torch.sigmoid(-lower.abs()), torch.sigmoid(-upper.abs())
        mass = torch.where(lower >= 0, below - above, torch.where(upper <= 0, above - below, 1 - below - above))
        return -torch.log2(mass.clamp_min(2.0**-PRECISION)).sum(-1)

    def level_model(self, level: int) -> LevelModel:
        """What the file stores for the level, and the coder codes its symbols under."""
        return LevelModel(*(value[level].detach().cpu().numpy().astype(np.float32) for value in self._coded()))

    def load_level_model(self, level: int, stored: LevelModel) -> None:
        """Take a stored model for the level: e.g. fit's of a trained field's codes, to start rate-aware training from."""
        with torch.no_grad():
            for parameter, value in zip(self._coded(), (stored.mean, stored.log_scale, stored.weights)):
                parameter[level] = torch.from_numpy(value).to(parameter)

    def _coded(self) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
        """The parameters the file stores (the step is the quantiser's, not the coder's)."""
        return self.mean, self.log_scale, self.weights


def fit(symbols: Int[np.ndarray, "n channels"]) -> LevelModel:
    """A model of one level's symbols, for a field not trained for rate, in closed form: the means, the channel
    prediction by least squares, each scale from its residuals' spread. (On NVP-S / bikes, 40 Adam steps on
    `bits` from there take off 0.02 %.)"""
    rows = torch.from_numpy(np.asarray(symbols, np.float64))
    channels = rows.shape[1]
    model = LatentEntropyModel(1, channels).double()
    if not len(rows):
        return model.level_model(0)
    with torch.no_grad():
        model.mean[0] = rows.mean(0).clamp(-SHIFT_LIMIT, SHIFT_LIMIT)
        offsets = rows - rows.mean(0)
        for channel in range(1, channels):
            model.weights[0, channel, :channel] = torch.linalg.lstsq(offsets[:, :channel], offsets[:, [channel]]).solution[:, 0]
        residuals = offsets - offsets @ torch.tril(model.weights[0], diagonal=-1).T
        model.log_scale[0] = (residuals.std(0, correction=0) * math.sqrt(3) / math.pi).clamp_min(1e-6).log()
    return model.level_model(0)


def packed_level(symbols: Int[np.ndarray, "n channels"], trained: LevelModel) -> bytes:
    """A rate-aware level as the file stores it (`latent_coder.pack`): its symbols under its trained model, or under
    the one `fit` makes of them where that codes them shorter. Training fits the model to noisy symbols for most of
    the run, and it lags the rounded ones the file holds (nvp-c on bikes at 320x136, 600 steps: 8.5 % of the latents'
    bytes, most on the finest levels; a near-constant level coded in 1,428 bytes under its trained model takes 36
    under its fit)."""
    models = (trained, fit(symbols)) if len(symbols) else (trained,)
    return min((pack(symbols, model) for model in models), key=len)  # the models' parameters take the same bytes


@torch.no_grad()
def coded_bits(symbols: Float[Tensor, "n channels"], trained: Float[Tensor, ""]) -> float:
    """The bits `packed_level` would code rounded symbols in, given their bits under the trained model: the
    smaller of those and their bits under the model `fit` makes of them (rate control's estimate of the file)."""
    if not len(symbols):
        return float(trained.detach())
    refitted = LatentEntropyModel(1, symbols.shape[1]).double()
    refitted.load_level_model(0, fit(symbols.detach().cpu().numpy().astype(np.int64)))
    return min(float(trained.detach()), float(refitted.bits(symbols.cpu().double(), 0)))
