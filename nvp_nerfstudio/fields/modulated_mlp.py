"""NVP's decoder: a SIREN driven by t whose hidden states are multiplied by a modulator MLP of the latent."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Type

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.config import InstantiateConfig


@dataclass
class ModulatedSirenConfig(InstantiateConfig):
    _target: Type = field(default_factory=lambda: ModulatedSiren)
    num_layers: int = 3
    """Sine layers in the synthesis net (each paired with one modulator layer)."""
    hidden_dim: int = 128
    first_omega: float = 30.0
    """Frequency of the first sine layer (w0 in SIREN)."""
    hidden_omega: float = 1.0
    leaky_relu_slope: float = 0.01


def siren_init_(layer: nn.Linear, omega: float, is_first: bool) -> None:
    """SIREN's initialisation: keeps sin(omega * (Wx + b)) well spread at every depth."""
    bound = 1.0 / layer.in_features if is_first else math.sqrt(6.0 / layer.in_features) / omega
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)
        layer.bias.uniform_(-bound, bound)


class ModulatedSiren(nn.Module):
    """out = head(m_L * sin(w_L(... m_1 * sin(w0 * w_1(t))))), with m_i = modulator layer i of the latent z.

    The modulator sees z concatenated to every layer's input, so each layer can pick per-pixel detail.
    """

    def __init__(self, config: ModulatedSirenConfig, latent_dim: int, out_dim: int = 3) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_dim
        self.synthesis = nn.ModuleList(nn.Linear(1 if i == 0 else width, width) for i in range(config.num_layers))
        self.modulator = nn.ModuleList(
            nn.Linear(latent_dim if i == 0 else width + latent_dim, width) for i in range(config.num_layers)
        )
        self.head = nn.Linear(width, out_dim)
        self.omegas = [config.first_omega] + [config.hidden_omega] * (config.num_layers - 1)
        for i, (layer, omega) in enumerate(zip(self.synthesis, self.omegas)):
            siren_init_(layer, omega, is_first=i == 0)
        siren_init_(self.head, config.hidden_omega, is_first=False)
        self.activation = nn.LeakyReLU(config.leaky_relu_slope)

    def forward(self, t: Float[Tensor, "n 1"], latent: Float[Tensor, "n latent"]) -> Float[Tensor, "n out"]:
        hidden = t
        modulator_input = latent
        for synthesis, modulator, omega in zip(self.synthesis, self.modulator, self.omegas):
            modulation = self.activation(modulator(modulator_input))
            hidden = torch.sin(omega * synthesis(hidden)) * modulation
            modulator_input = torch.cat([modulation, latent], dim=-1)
        return self.head(hidden)
