"""Which kernel libraries this machine has: tiny-cuda-nn, Triton (and whether its interpreter runs the
kernels), numba.

Core module: imports only the standard library (the libraries themselves lazily).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache


@lru_cache(maxsize=1)
def tcnn_module():
    """The tinycudann module, or None where it is not installed."""
    try:
        import tinycudann
    except (ImportError, OSError, EnvironmentError):
        return None
    return tinycudann


@lru_cache(maxsize=1)
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """Whether Triton's interpreter runs the kernels (on CPU tensors too; slow: for tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


# numba is a dependency of the package, but a core-only install (a GPU machine) may lack it. A constant,
# not a cached function: torch.compile reads constants, and would trace through a cache wrapper.
NUMBA_INSTALLED = importlib.util.find_spec("numba") is not None
