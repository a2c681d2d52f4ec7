"""How the file stores a field's tensors besides its grids (the MLP): float16 or float32, or at 8 bits as int8
with a float32 scale per row. The encoder, the decoder and rate-aware training (rate.py) share these functions, so
what training reads, what the file stores and what the decoder rebuilds are the same values.

Core module: imports only torch.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

FLOAT_TYPES = {16: torch.float16, 32: torch.float32}


def stored_dtype(value: Tensor, mlp_bits: int) -> torch.dtype:
    """How the file stores a tensor of the other tensors: int8 for a float matrix at 8 bits (plus row scales)."""
    if not value.is_floating_point():
        return value.dtype
    if mlp_bits == 8:
        return torch.int8 if row_coded(value, mlp_bits) else torch.float16
    return FLOAT_TYPES[mlp_bits]


def row_coded(value: Tensor, mlp_bits: int) -> bool:
    """Whether the file stores the tensor as 8-bit integers with a scale per row (a float matrix at 8 bits)."""
    return mlp_bits == 8 and value.is_floating_point() and value.dim() >= 2


def row_codes(value: Tensor) -> tuple[Int[Tensor, "rows values"], Float[Tensor, "rows"]]:
    """A matrix as int8 codes per row and each row's float32 scale (its largest magnitude maps to 127)."""
    rows = value.detach().float().reshape(len(value), -1)
    scales = (rows.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.round(rows / scales[:, None]).to(torch.int8), scales


def from_row_codes(codes: Tensor, scales: Tensor, like: Tensor) -> Tensor:
    """The matrix the codes and scales stand for, shaped and typed as `like`: the encoder's view and the decoder's."""
    return (codes.float() * scales[:, None]).reshape(like.shape).to(like.dtype)


def as_stored(value: Tensor, mlp_bits: int) -> Tensor:
    """The tensor as the decoder gets it back (in its own dtype)."""
    if row_coded(value, mlp_bits):
        return from_row_codes(*row_codes(value), value)
    return value.to(stored_dtype(value, mlp_bits)).to(value.dtype)


def stored_size(value: Tensor, mlp_bits: int) -> int:
    """Bytes of the tensor in the section before the entropy coder: values, then an 8-bit matrix's row scales."""
    scales = len(value) * 4 if row_coded(value, mlp_bits) else 0
    return value.numel() * stored_dtype(value, mlp_bits).itemsize + scales
