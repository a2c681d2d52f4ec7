"""Plots the benchmarks share. Core module: matplotlib only, drawn off-screen."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional


def plot_psnr_against_time(path: Path, title: str, curves: Mapping[str, list[dict]], levels: Optional[Mapping[str, float]] = None) -> None:
    """PSNR against training time: a curve per run (points with "seconds" and "psnr"), and a dashed line per
    method without training (e.g. a linear blend) at its PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, curve in curves.items():
        axis.plot([p["seconds"] for p in curve], [p["psnr"] for p in curve], marker="o", label=label)
    for label, psnr in (levels or {}).items():
        axis.axhline(psnr, linestyle="--", color="grey", label=label)
    axis.set(xlabel="training time (s)", ylabel="PSNR (dB)", title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
