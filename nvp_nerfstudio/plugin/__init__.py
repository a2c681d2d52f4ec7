"""The nerfstudio glue: everything that imports nerfstudio lives in this package (the registration in
method_configs/ aside); the rest of nvp_nerfstudio runs without it.
"""

import numpy as np
import torch

from nvp_nerfstudio.memory import reuse_freed_memory


def set_up_process() -> None:
    """The process-wide settings of a nerfstudio process that holds a video model (ns-train, ns-eval, the viewer,
    ns-render): the allocator keeps freed blocks for the next step (memory.py), and checkpoints load."""
    reuse_freed_memory()
    allow_nerfstudio_checkpoints()


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

