"""Multi-resolution grid encoding (hashed or dense) with tiny-cuda-nn's exact indexing.

One parameter vector in tiny-cuda-nn's layout (levels one after another, each `entries x features`)
serves every backend: fused Triton kernels on CUDA (`triton_grid`), tiny-cuda-nn when asked for (never
chosen automatically), numba kernels on a CPU (`cpu_grid`), and the pure-torch
path, the reference the others are tested against. The torch path repeats tiny-cuda-nn's level scales,
+0.5 offset, dense indexing with wrap-around, coherent prime hash and per-level table sizes, so a
checkpoint gives the same features on any backend.

Core module: imports only torch and numpy (numba, triton and tinycudann lazily).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Literal, Sequence, Type

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nvp_nerfstudio.config import InstantiateConfig
from nvp_nerfstudio.encodings.layout import HASH_PRIMES, UINT32_MASK, GridLayout
from nvp_nerfstudio.kernels import NUMBA_INSTALLED, tcnn_module, triton_available, triton_interpreted

GridBackend = Literal["auto", "torch", "numba", "triton", "tcnn"]


@dataclass
class GridEncodingConfig(InstantiateConfig):
    """A multi-resolution grid; its finest resolution per axis is given at setup, from the video."""

    _target: Type = field(default_factory=lambda: GridEncoding)
    grid_type: Literal["hash", "dense"] = "hash"
    """`dense` stores every vertex; `hash` hashes levels whose vertices outnumber the table."""
    num_levels: int = 16
    features_per_level: int = 2
    log2_hashmap_size: int = 19
    """Entries per hashed level are 2**log2_hashmap_size (ignored for dense grids)."""
    base_resolution: int = 16
    """Vertices per axis of the coarsest level (along the longest axis)."""
    init_scale: float = 1e-4
    """Features start uniform in [-init_scale, init_scale], as tiny-cuda-nn and the NVP paper do."""
    backend: GridBackend = "auto"
    """`auto`: on CUDA the fused Triton kernels; on a CPU the numba kernels for 2D and 3D grids; else torch, with a
    warning where the faster kernels are missing (tiny-cuda-nn only when asked for: it is not tested here)."""


class GridEncoding(nn.Module):
    """Features of a point in [0, 1]^D, concatenated level by level: (N, D) -> (N, levels * features)."""

    def __init__(self, config: GridEncodingConfig, finest_resolution: Sequence[int]) -> None:
        super().__init__()
        self.config = config
        num_dims = len(finest_resolution)
        if not 1 <= num_dims <= len(HASH_PRIMES):
            raise ValueError(f"grid encodings take 1 to {len(HASH_PRIMES)} dimensions, got {num_dims}")
        longest = max(max(finest_resolution), config.base_resolution)
        self.layout = GridLayout.build(config, num_dims, longest)
        # Anisotropy through input scaling: tiny-cuda-nn grids share one resolution across axes.
        self.register_buffer(
            "axis_scale", torch.tensor([r / longest for r in finest_resolution], dtype=torch.float32), persistent=False
        )
        entries = self.layout.num_entries * config.features_per_level
        self.params = nn.Parameter(torch.empty(entries).uniform_(-config.init_scale, config.init_scale))
        self._register_level_tables()
        # Built on first CUDA call and kept outside the module tree: it shares `params`, owns nothing.
        self._tcnn: list[nn.Module] = []
        self.quantiser: nn.Module | None = None
        """Set for rate-aware training (rate.py): maps the stored table to the quantised one every backend reads."""
        if config.backend == "tcnn" and tcnn_module() is None:
            raise RuntimeError("backend 'tcnn' asked for, but tinycudann is not installed (see the README)")

    def _register_level_tables(self) -> None:
        layout = self.layout
        dims = layout.num_dims
        self.register_buffer("scales", torch.from_numpy(layout.scales.copy()), persistent=False)
        resolution = torch.tensor(layout.resolutions, dtype=torch.int64)
        strides = torch.stack([resolution**d for d in range(dims)], dim=-1)  # [levels, dims]
        self.register_buffer("strides", strides, persistent=False)
        self.register_buffer("resolutions", resolution, persistent=False)
        self.register_buffer("level_sizes", torch.tensor(layout.level_sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("offsets", torch.tensor(layout.offsets, dtype=torch.int64), persistent=False)
        self.register_buffer("hashed", torch.tensor(layout.hashed), persistent=False)
        self.register_buffer("primes", torch.tensor(HASH_PRIMES[:dims], dtype=torch.int64), persistent=False)
        corners = torch.tensor(list(itertools.product((0, 1), repeat=dims)), dtype=torch.int64).flip(-1)
        self.register_buffer("corners", corners, persistent=False)  # [2**dims, dims], dim 0 fastest

    @property
    def output_dim(self) -> int:
        return self.config.num_levels * self.config.features_per_level

    @property
    def stored_table(self) -> Float[Tensor, "entries features"]:
        """The parameters as a table (before any quantiser): what checkpoints and the codec hold."""
        return self.params.view(-1, self.config.features_per_level)

    @property
    def table(self) -> Float[Tensor, "entries features"]:
        """The values the backends interpolate: the parameters, or their quantised version under a quantiser."""
        return self.stored_table if self.quantiser is None else self.quantiser(self.stored_table)

    def backend_for(self, x: Tensor) -> str:
        """The backend that computes this input's features."""
        backend = self.config.backend
        if backend == "tcnn" and not x.is_cuda:
            raise RuntimeError("the tcnn grid backend needs CUDA tensors; use backend 'numba' or 'torch' on CPU")
        if backend == "triton" and not x.is_cuda and not triton_interpreted():
            raise RuntimeError(
                "the triton grid backend needs CUDA tensors (or TRITON_INTERPRET=1, Triton's slow interpreter); "
                "use backend 'numba' or 'torch' on CPU"
            )
        if backend == "tcnn" and self.quantiser is not None:
            raise RuntimeError("a rate-aware grid quantises its table, which tiny-cuda-nn does not read: use backend 'triton'")
        if backend == "numba" and x.is_cuda:
            raise RuntimeError("the numba grid backend runs on the CPU; use backend 'triton' or 'tcnn' on CUDA")
        if backend != "auto":
            return backend
        if not x.is_cuda:
            if not NUMBA_INSTALLED:
                warnings.warn("numba is not installed: the grids run on torch's path, several times slower on a CPU (pip install numba)", RuntimeWarning)
                return "torch"
            from nvp_nerfstudio.encodings.cpu_grid import SUPPORTED_DIMS

            return "numba" if x.shape[-1] in SUPPORTED_DIMS else "torch"
        # Never tiny-cuda-nn unasked: the Triton kernels are the ones tested against the torch path, and it never was.
        if triton_available():
            return "triton"
        warnings.warn("Triton is not available: the grids run on torch's slower path (backend 'tcnn' asks for tiny-cuda-nn)", RuntimeWarning)
        return "torch"

    def forward(self, x: Float[Tensor, "*batch dims"]) -> Float[Tensor, "*batch out"]:
        batch_shape = x.shape[:-1]
        scaled = x.reshape(-1, x.shape[-1]).float() * self.axis_scale
        backend = self.backend_for(scaled)
        if backend == "tcnn":
            features = self._tcnn_forward(scaled)
        elif backend == "triton":
            from nvp_nerfstudio.encodings.triton_grid import grid_forward

            features = grid_forward(self, scaled)
        elif backend == "numba":
            from nvp_nerfstudio.encodings.cpu_grid import grid_forward

            features = grid_forward(self, scaled)
        else:
            features = self.torch_forward(scaled)
        return features.reshape(*batch_shape, self.output_dim)

    def corner_indices_and_weights(self, x: Float[Tensor, "n dims"]) -> tuple[Tensor, Tensor]:
        """Table rows and interpolation weights of every corner at every level: two [n, levels, corners]."""
        with torch.no_grad():
            pos = torch.addcmul(torch.full_like(x[:, None, :], 0.5), x[:, None, :], self.scales[None, :, None])
            floor = torch.floor(pos)
            frac = pos - floor
            base = floor.to(torch.int64)  # [n, levels, dims]
            indices, weights = [], []
            for corner in self.corners:
                vertex = base + corner
                dense = (vertex * self.strides).sum(-1)
                hashed = vertex[..., 0] * self.primes[0]
                for d in range(1, vertex.shape[-1]):
                    hashed = torch.bitwise_xor(hashed, (vertex[..., d] * self.primes[d]) & UINT32_MASK)
                index = torch.where(self.hashed, hashed & UINT32_MASK, dense) % self.level_sizes + self.offsets
                indices.append(index)
                weights.append(torch.where(corner.bool(), frac, 1.0 - frac).prod(-1))
        return torch.stack(indices, -1), torch.stack(weights, -1)

    def torch_forward(self, x: Float[Tensor, "n dims"]) -> Float[Tensor, "n out"]:
        indices, weights = self.corner_indices_and_weights(x)
        # One gather for all corners; index_select's backward (index_add) is ~3x faster than embedding's on CPU.
        gathered = self.table.index_select(0, indices.view(-1)).view(*indices.shape, self.config.features_per_level)
        return torch.einsum("nlc,nlcf->nlf", weights, gathered).reshape(x.shape[0], self.output_dim)

    def _tcnn_forward(self, x: Float[Tensor, "n dims"]) -> Float[Tensor, "n out"]:
        if not self._tcnn:
            self._tcnn.append(self._build_tcnn())
        return self._tcnn[0](x).float()

    def tcnn_encoding_config(self) -> dict:
        return {
            "otype": "Grid",
            "type": "Hash" if self.config.grid_type == "hash" else "Dense",
            "n_levels": self.config.num_levels,
            "n_features_per_level": self.config.features_per_level,
            "log2_hashmap_size": self.config.log2_hashmap_size,
            "base_resolution": self.config.base_resolution,
            "per_level_scale": self.layout.per_level_scale,
            "interpolation": "Linear",
        }

    def _build_tcnn(self) -> nn.Module:
        encoding = tcnn_module().Encoding(
            n_input_dims=self.layout.num_dims, encoding_config=self.tcnn_encoding_config(), dtype=torch.float32
        )
        if encoding.params.numel() != self.params.numel():
            raise RuntimeError(
                f"tiny-cuda-nn allocates {encoding.params.numel()} grid parameters where {self.params.numel()} were "
                "expected: this tinycudann version lays out grids differently"
            )
        encoding.params = self.params  # share our parameter: one state_dict key for both backends
        return encoding
