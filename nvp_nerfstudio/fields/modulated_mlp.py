"""NVP's decoder: a SIREN driven by t whose hidden states are multiplied by a modulator MLP of the latent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.config import InstantiateConfig
from nvp_nerfstudio.fields.mlp import Siren


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


class ModulatedSiren(nn.Module):
    """out = head(m_L * sin(w_L(... m_1 * sin(w0 * w_1(t))))), with m_i = modulator layer i of the latent z.

    The modulator sees z concatenated to every layer's input, so each layer can pick per-pixel detail.
    """

    def __init__(self, config: ModulatedSirenConfig, latent_dim: int, out_dim: int = 3) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_dim
        # The synthesis net is a plain SIREN of t; forward() runs its layers with a modulation after each.
        self.synthesis = Siren(1, width, config.num_layers, config.first_omega, config.hidden_omega, out_dim)
        self.modulator = nn.ModuleList(
            nn.Linear(latent_dim if i == 0 else width + latent_dim, width) for i in range(config.num_layers)
        )
        self.activation = nn.LeakyReLU(config.leaky_relu_slope)

    def forward(self, t: Float[Tensor, "n 1"], latent: Float[Tensor, "n latent"]) -> Float[Tensor, "n out"]:
        hidden = t
        modulator_input = latent
        for synthesis, modulator, omega in zip(self.synthesis.layers, self.modulator, self.synthesis.omegas):
            modulation = self.activation(modulator(modulator_input))
            hidden = torch.sin(omega * synthesis(hidden)) * modulation
            modulator_input = torch.cat([modulation, latent], dim=-1)
        return self.synthesis.head(hidden)
