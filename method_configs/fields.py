"""Field presets of the registered methods. No nerfstudio import here, so benchmarks run without it."""

from __future__ import annotations

from dataclasses import replace

from nvp_nerfstudio.fields.nvp import NVPFieldConfig

# NVP-S, as the paper: 2 features per level in the keyframes and the 3D grid (latent of 112 values).
NVP_S = NVPFieldConfig()
# NVP-L: 4 features per level and a 4x larger 3D hash table.
NVP_L = replace(
    NVP_S,
    keyframes=replace(NVP_S.keyframes, features_per_level=4),
    positional=replace(NVP_S.positional, features_per_level=4, log2_hashmap_size=21),
)

FIELDS = {"nvp": NVP_S, "nvp-large": NVP_L}
