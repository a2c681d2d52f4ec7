"""Uniform quantisation with one float32 [min, max] range per channel, as the NVP paper does per
(plane, level, channel) at 8 bits. Fewer bits are an option for the entropy-coded (hashed) levels.

Core module: imports only torch.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, UInt8
from torch import Tensor


def quantise(
    values: Float[Tensor, "n channels"], bits: int = 8
) -> tuple[UInt8[Tensor, "n channels"], Float[Tensor, "channels 2"]]:
    """Codes 0..2^bits - 1 and each channel's float32 [min, max]."""
    values = values.float()
    if not torch.isfinite(values).all():
        raise ValueError("the field has non-finite parameters (a diverged run?): there is nothing sound to compress")
    ranges = torch.stack([values.amin(0), values.amax(0)], dim=-1)
    step = _step(ranges, bits)
    codes = torch.round((values - ranges[:, 0]) / torch.where(step > 0, step, 1.0)).clamp(0, 2**bits - 1)
    return codes.to(torch.uint8), ranges


def dequantise(
    codes: UInt8[Tensor, "n channels"], ranges: Float[Tensor, "channels 2"], bits: int = 8
) -> Float[Tensor, "n channels"]:
    return ranges[:, 0] + codes.float() * _step(ranges, bits)


def _step(ranges: Float[Tensor, "channels 2"], bits: int) -> Float[Tensor, "channels"]:
    # One formula for both directions, in float32 from the stored float32 ranges: encoder and decoder agree bitwise.
    return (ranges[:, 1] - ranges[:, 0]) / (2**bits - 1)
