"""The sizing study behind `nvp-fast`: variants of its field run through `nvp-suite` (same clips, loop, budget and
report), each registered as a method for this process only. Takes nvp-suite's flags; --methods picks among the
variants below and the registered methods.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python scripts/nvp_fast_sizing.py --clips-dir clips/ \
        --only bikes carphone city --methods fast-before full-res-3d nvp-fast table-2e19 ngp-video --baseline ngp-video
"""

from __future__ import annotations

from dataclasses import replace

import tyro

from nvp_nerfstudio.methods import METHODS, NVP_FAST, VideoMethod
from nvp_nerfstudio.scripts.suite import SuiteConfig, main

# The nvp-fast of before the study: 16 keyframe levels, its 3D grid's finest level at half the width and height and
# two cells a frame; then that with a full-resolution 3D grid; nvp-fast itself adds 8 keyframe levels to that.
FAST_BEFORE = replace(NVP_FAST, keyframes=replace(NVP_FAST.keyframes, num_levels=16), positional_resolution=0.5, positional_cells_per_frame=2.0)
VARIANTS = {
    "fast-before": FAST_BEFORE,
    "full-res-3d": replace(FAST_BEFORE, positional_resolution=1.0, positional_cells_per_frame=1.0),
    "full-res-3d-16-levels": replace(FAST_BEFORE, positional_resolution=1.0, positional_cells_per_frame=1.0, positional=replace(NVP_FAST.positional, num_levels=16)),
    "table-2e19": replace(NVP_FAST, positional=replace(NVP_FAST.positional, log2_hashmap_size=19)),
    "table-2e20": replace(NVP_FAST, positional=replace(NVP_FAST.positional, log2_hashmap_size=20)),
    "mlp-2-layers": replace(NVP_FAST, mlp=replace(NVP_FAST.mlp, num_layers=2)),
    "keyframes-6-levels": replace(NVP_FAST, keyframes=replace(NVP_FAST.keyframes, num_levels=6)),
    "3d-12-levels": replace(NVP_FAST, positional=replace(NVP_FAST.positional, num_levels=12)),
    "single-xy-plane": replace(NVP_FAST, keyframes_per_shot=False),
    "keyframes-per-shot": replace(NVP_FAST, keyframes_per_shot=True),
}
# Learning-rate variants of nvp-fast (its field as it is).
LEARNING_RATES = {"lr-2e-2": 2e-2, "lr-5e-3": 5e-3}

if __name__ == "__main__":
    for name, variant in VARIANTS.items():
        METHODS[name] = VideoMethod(variant, METHODS["nvp-fast"].lr, f"sizing study: {name}")
    for name, lr in LEARNING_RATES.items():
        METHODS[name] = VideoMethod(NVP_FAST, lr, f"sizing study: {name}")
    main(tyro.cli(SuiteConfig))
