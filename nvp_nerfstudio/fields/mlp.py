"""Small MLPs shared by the fields: a ReLU MLP and a SIREN."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn


def siren_init_(layer: nn.Linear, omega: float, is_first: bool) -> None:
    """SIREN's initialisation: keeps sin(omega * (Wx + b)) well spread at every depth."""
    bound = 1.0 / layer.in_features if is_first else math.sqrt(6.0 / layer.in_features) / omega
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)
        layer.bias.uniform_(-bound, bound)


def relu_mlp(in_dim: int, hidden_dim: int, num_hidden: int, out_dim: int = 3) -> nn.Sequential:
    """in -> (Linear, ReLU) x num_hidden -> Linear out."""
    layers: list[nn.Module] = []
    for i in range(num_hidden):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.ReLU()]
    layers.append(nn.Linear(hidden_dim if num_hidden else in_dim, out_dim))
    return nn.Sequential(*layers)


class Siren(nn.Module):
    """A sine MLP (Sitzmann et al. 2020) with its initialisation; linear output."""

    def __init__(
        self, in_dim: int, hidden_dim: int, num_hidden: int, first_omega: float, hidden_omega: float = 1.0, out_dim: int = 3
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim) for i in range(num_hidden))
        self.omegas = [first_omega] + [hidden_omega] * (num_hidden - 1)
        for i, (layer, omega) in enumerate(zip(self.layers, self.omegas)):
            siren_init_(layer, omega, is_first=i == 0)
        self.head = nn.Linear(hidden_dim, out_dim)
        siren_init_(self.head, hidden_omega, is_first=False)

    def forward(self, x: Float[Tensor, "n in"]) -> Float[Tensor, "n out"]:
        for layer, omega in zip(self.layers, self.omegas):
            x = torch.sin(omega * layer(x))
        return self.head(x)
