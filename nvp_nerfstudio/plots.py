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


def plot_psnr_per_frame(path: Path, title: str, frame_psnrs: Mapping[str, Mapping[int, float]], baseline: Optional[str] = None) -> None:
    """Each run's PSNR frame by frame (frame index -> dB) and, with a baseline among them, below it each other
    run's difference from the baseline on every frame: where in time a method wins or loses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = baseline in frame_psnrs
    figure, axes = plt.subplots(2 if compared else 1, 1, figsize=(8, 6.5 if compared else 4), sharex=True, squeeze=False)
    top = axes[0, 0]
    for label, scores in frame_psnrs.items():
        frames = sorted(scores)
        top.plot(frames, [scores[i] for i in frames], linewidth=1, label=label)
    top.set(ylabel="PSNR (dB)", title=title)
    if compared:
        bottom = axes[1, 0]
        reference = frame_psnrs[baseline]
        for label, scores in frame_psnrs.items():
            if label != baseline:
                frames = sorted(set(scores) & set(reference))
                bottom.plot(frames, [scores[i] - reference[i] for i in frames], linewidth=1, label=label)
        bottom.axhline(0.0, color="grey", linewidth=0.8)
        bottom.set(ylabel=f"PSNR - {baseline} (dB)")
    axes[-1, 0].set(xlabel="frame")
    for axis in axes[:, 0]:
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
