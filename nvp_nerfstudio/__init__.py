"""NVP as a nerfstudio method: a neural field f(x, y, t) -> RGB of a video."""

import numpy as np
import torch


def allow_nerfstudio_checkpoints() -> None:
    """torch >= 2.6 loads checkpoints with weights_only=True, which refuses the numpy float64 scalars
    that nerfstudio's learning-rate schedulers leave in every checkpoint (ns-eval and resume fail).
    Allow exactly those, under the names numpy 1 and numpy 2 pickle them with: plain data, no code."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar

    torch.serialization.add_safe_globals(
        [
            (scalar, "numpy.core.multiarray.scalar"),
            (scalar, "numpy._core.multiarray.scalar"),
            np.dtype,
            type(np.dtype(np.float64)),
        ]
    )


allow_nerfstudio_checkpoints()
