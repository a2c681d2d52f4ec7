"""NVP's decoder: a SIREN driven by t whose hidden states are multiplied by a modulator MLP of the latent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Type

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.config import InstantiateConfig
from nvp_nerfstudio.fields.mlp import Siren
from nvp_nerfstudio.kernels import triton_interpreted


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
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Arithmetic of the layers after the first sine layer, up to the head: bfloat16 halves the memory traffic
    and runs on bf16 units (GPUs from Ampere on, AVX512-BF16 CPUs); auto picks it where the hardware has them.
    The first layer (sin of w0 * t, w0 = 30) and the RGB head stay float32, as do the weights and the optimizer."""
    backend: Literal["torch", "triton"] = "torch"
    """`triton`: fused kernels, every layer of a block of samples in one launch (bfloat16; CUDA, or Triton's
    interpreter). They match the torch path to bfloat16 accuracy; `scripts/bench_gpu.sh` times both."""


@torch.compiler.assume_constant_result  # a fact of the machine: compiled graphs take it as a constant
def has_fast_bfloat16(device_type: str) -> bool:
    """Whether bfloat16 matrix products run on dedicated units here (rather than emulated, slower than float32)."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":  # oneDNN uses AVX512-BF16 dot products: ~2.8x float32's rate on one core
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


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
        if config.backend == "triton":
            from nvp_nerfstudio.fields.triton_modulated_siren import unsupported_reason

            reason = unsupported_reason(width, out_dim)
            if reason or config.precision == "float32":
                raise ValueError(f"backend 'triton' for the modulated SIREN: {reason or 'its kernels run in bfloat16, not float32'}")

    def forward(self, t: Float[Tensor, "n 1"], latent: Float[Tensor, "n latent"]) -> Float[Tensor, "n out"]:
        if self.uses_triton(t.device.type):
            from nvp_nerfstudio.fields.triton_modulated_siren import modulated_siren

            return modulated_siren(self, t, latent)
        synthesis, omegas = self.synthesis.layers, self.synthesis.omegas
        # In bfloat16, w0 * (W t + b) would be off by ~0.1 rad: the first sine layer stays float32.
        hidden = torch.sin(omegas[0] * synthesis[0](t))
        dtype = torch.bfloat16 if self.uses_bfloat16(t.device.type) else hidden.dtype
        with torch.autocast(t.device.type, torch.bfloat16, enabled=dtype == torch.bfloat16):
            # Each cast once, up front: autocast would cast the latent in every layer, and a float32 sine times a
            # bfloat16 modulation multiplies in float32, to be cast again by the next layer (and so the gradients).
            latent, hidden = latent.to(dtype), hidden.to(dtype)
            modulation = self.activation(self.modulator[0](latent))
            hidden = hidden * modulation
            for layer in range(1, len(synthesis)):
                modulation = self.activation(self.modulator[layer](torch.cat([modulation, latent], dim=-1)))
                pre_activation = synthesis[layer](hidden)
                if omegas[layer] != 1.0:  # the paper's hidden layers have omega 1: skip a product that changes nothing
                    pre_activation = omegas[layer] * pre_activation
                hidden = torch.sin(pre_activation) * modulation
        return self.synthesis.head(hidden.float())

    def uses_triton(self, device_type: str) -> bool:
        if self.config.backend != "triton":
            return False
        if device_type != "cuda" and not triton_interpreted():
            raise RuntimeError(
                "the modulated SIREN's triton backend needs CUDA tensors (or TRITON_INTERPRET=1, Triton's slow "
                "interpreter); use backend 'torch' on CPU"
            )
        return True

    def uses_bfloat16(self, device_type: str) -> bool:
        precision = self.config.precision
        return precision == "bfloat16" or (precision == "auto" and has_fast_bfloat16(device_type))
