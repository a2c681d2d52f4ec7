"""Every video method's field and learning rate, in one table. Core module: no nerfstudio, so the commands
run without it; `method_configs/methods.py` turns each row into a registered nerfstudio method."""

from __future__ import annotations

from dataclasses import dataclass, replace

from nvp_nerfstudio.fields.base import VideoFieldConfig
from nvp_nerfstudio.fields.baselines import FourierFieldConfig, HashGridFieldConfig, KPlanesFieldConfig, NeRVFieldConfig, SirenFieldConfig
from nvp_nerfstudio.fields.nvp import NVPFieldConfig, NVPPaperFieldConfig
from nvp_nerfstudio.rate import RateConfig

# Adam's beta2 and eps for every method, as instant-ngp sets them for hash grids (torch's defaults
# are 0.999 and 1e-8): a grid entry's gradient is zero on most steps and tiny when not, and eps 1e-8
# is not small next to it, so it damped the grids' updates.
# NVP-S on bikes 640x272, 300 s (nvp-bench, seeds 0 / 1): 35.53 / 35.74 against 35.21 / 35.36 dB;
# ~0.2-0.3 dB better at equal steps late in the run, where gradients are small.
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-15
ADAM_WEIGHT_DECAY = 1e-3  # the paper's


@dataclass(frozen=True)
class VideoMethod:
    field: VideoFieldConfig
    lr: float
    """Initial learning rate of AdamW (cosine decay to lr / 1000, ADAM_WEIGHT_DECAY, ADAM_BETAS, ADAM_EPS)."""
    description: str


# NVP-S, as the paper: 2 features per level in the keyframes and the 3D grid (latent of 112 values).
NVP_S = NVPFieldConfig()
# NVP-L: 4 features per level and a 4x larger 3D hash table.
NVP_L = replace(
    NVP_S,
    keyframes=replace(NVP_S.keyframes, features_per_level=4),
    positional=replace(NVP_S.positional, features_per_level=4, log2_hashmap_size=21),
)

# NVP sized for a CPU, by rule from the clip: NVP-S with a 32-wide modulated SIREN (the paper: 128), 8 keyframe
# levels a plane (from 16 to the frame's width; the paper: 16 levels) and a 3D hash grid of 2^21
# entries a level (NVP-S: 2^19) whose finest level has a vertex per pixel and per frame, as instant-NGP's (NVP-S:
# a quarter of the width and height, two per frame). Every resolution follows the clip; the table does not.
# Study (docs/benchmarks.md, 150 s a run on one CPU thread, PSNR over every frame, against the previous nvp-fast:
# finest 3D level at half the width and height, 16 keyframe levels): the full-resolution 3D grid gained 0.4-2.4 dB
# on bikes, carphone and city; halving the keyframe levels made steps 1.3x cheaper and gained 0.6-2.6 dB more; a
# 2^19 table (1.35x cheaper steps again) lost 0.3-0.9 dB on bikes and carphone and won 0.1 dB on city.
NVP_FAST = replace(
    NVP_S,
    keyframes=replace(NVP_S.keyframes, num_levels=8),
    positional=replace(NVP_S.positional, log2_hashmap_size=21),
    positional_resolution=1.0,
    positional_cells_per_frame=1.0,
    mlp=replace(NVP_S.mlp, hidden_dim=32),
    keyframes_per_shot=True,
)

# NVP trained for rate (rate.py), C3-style: NVP-S's grids with quantised latents under learned steps and entropy
# models, a rate term in the loss, and a 32-wide modulated SIREN (NVP-S's 128-wide one is 0.15 bpp of float16
# weights alone at 320x136). The file codes the latents with the trained models (nvp-compress).
NVP_C = replace(NVP_S, mlp=replace(NVP_S.mlp, hidden_dim=32), rate=RateConfig())

METHODS = {
    "nvp": VideoMethod(NVP_S, 1e-2, "NVP-S: latent keyframes + 3D hash grid + modulated SIREN, a neural field of a video"),
    "nvp-large": VideoMethod(NVP_L, 1e-2, "NVP-L: NVP with 4 features per level (higher quality, ~2x the parameters)"),
    "nvp-fast": VideoMethod(NVP_FAST, 1e-2, "NVP sized for CPUs: NVP-S with a 32-wide modulated SIREN, 8 keyframe levels and a full-resolution 3D hash grid of 4x the entries"),
    "nvp-c": VideoMethod(NVP_C, 1e-2, "NVP trained for rate: quantised latents, learned entropy models, loss = MSE + lambda x bpp"),
    "nvp-paper": VideoMethod(
        NVPPaperFieldConfig(), 1e-2, "NVP-S with the reference code's 3D features: a coarse grid per frame, 3x3 cells read"
    ),
    # SIREN diverges at 1e-2; 1e-4 is its usual rate.
    "siren-video": VideoMethod(SirenFieldConfig(), 1e-4, "Baseline: SIREN, a 5 x 256 sine MLP of (x, y, t)"),
    "ffn-video": VideoMethod(FourierFieldConfig(), 1e-3, "Baseline: Fourier features (256, sigma 10) + 4 x 256 ReLU MLP"),
    "ngp-video": VideoMethod(HashGridFieldConfig(), 1e-2, "Baseline: Instant-NGP's 16-level 3D hash grid over (x, y, t) + 2 x 64 MLP"),
    "kplanes-video": VideoMethod(KPlanesFieldConfig(), 1e-2, "Baseline: K-Planes, xy/xt/yt planes multiplied + 2 x 64 MLP"),
    # NeRV trains on whole frames (its batch mode); 5e-4 is NeRV's rate with Adam.
    "nerv-video": VideoMethod(NeRVFieldConfig(), 5e-4, "Baseline: NeRV, frame time -> MLP -> 5 conv + pixel-shuffle blocks, whole frames"),
}
