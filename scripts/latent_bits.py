"""Where nvp-c's bits go, level by level: each latent level's range-coded bytes (as the file codes them, and under
the trained model alone), the empirical entropy of its symbols under the same channel prediction (what a perfectly
fitted model of that kind would take, its own cost left out), and the empirical entropy with a least-squares linear
prediction from causal neighbours added (left, up, up-left, up-right in a plane; the three earlier neighbours in a
3D crop) -- an upper bound on what a spatial context model for the mean could save. Hashed levels have no spatial
order: the same under both.

    python scripts/latent_bits.py --data sample:bikes --downscale 2 --steps 600
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console

from nvp_nerfstudio.compression import latent_coder
from nvp_nerfstudio.compression.field_codec import levels
from nvp_nerfstudio.compression.latent_coder import LevelModel
from nvp_nerfstudio.compression.latent_model import packed_level
from nvp_nerfstudio.data.video import VideoSource
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fit import FitConfig, psnr_against_time

CONSOLE = Console()


def entropy_bytes(symbols: np.ndarray) -> float:
    """Empirical entropy of integer symbols, in bytes."""
    _, counts = np.unique(symbols, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum()) / 8


def causal_neighbours(crop: np.ndarray) -> list[np.ndarray]:
    """The causal neighbours of every entry of a crop [(t,) y, x, channels] in raster order, zero past the edges."""
    if crop.ndim == 3:
        height, width, channels = crop.shape
        padded = np.zeros((height + 1, width + 2, channels))
        padded[1:, 1:-1] = crop
        return [padded[1:, :-2], padded[:-1, 1:-1], padded[:-1, :-2], padded[:-1, 2:]]
    frames, height, width, channels = crop.shape
    padded = np.zeros((frames + 1, height + 1, width + 1, channels))
    padded[1:, 1:, 1:] = crop
    return [padded[1:, 1:, :-1], padded[1:, :-1, 1:], padded[:-1, 1:, 1:]]


def spatial_entropy_bytes(crop: np.ndarray) -> float:
    """Entropy of the crop's residuals after a least-squares prediction from causal neighbours and earlier channels."""
    neighbours, total = causal_neighbours(crop), 0.0
    for channel in range(crop.shape[-1]):
        inputs = [n[..., channel].ravel() for n in neighbours] + [crop[..., d].ravel() for d in range(channel)]
        design = np.stack([*inputs, np.ones(crop[..., 0].size)], 1)
        target = crop[..., channel].ravel()
        weights, *_ = np.linalg.lstsq(design, target, rcond=None)
        total += entropy_bytes(target - np.round(design @ weights))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample:bikes")
    parser.add_argument("--downscale", type=int, default=2)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    video = VideoSource(args.data, args.downscale).load()
    config = FitConfig(method="nvp-c", steps=args.steps, eval_every=float("inf"), device="cpu")
    _, field = psnr_against_time(config, video, VideoShape(video.num_frames, video.height, video.width), final_frames=[0])
    field.eval()
    rows = []
    for level in levels(field):
        symbols, trained = level.symbols(), level.grid.quantiser.model.level_model(level.index)
        payload, channels = packed_level(symbols, trained), symbols.shape[1]
        model, coded = LevelModel.from_bytes(payload, channels), len(payload) - LevelModel.stored_size(channels)
        under_trained = len(latent_coder.encode(symbols, trained))
        channel_only = sum(entropy_bytes(symbols[:, c] - latent_coder.shifts(symbols, model, c)) for c in range(symbols.shape[1]))
        spatial = channel_only
        geometry = level.geometry
        if geometry.crop:
            crop = symbols[: geometry.crop_size].reshape(*reversed(geometry.crop), symbols.shape[1]).astype(np.float64)
            rest = symbols[geometry.crop_size :]
            spatial = spatial_entropy_bytes(crop) + sum(entropy_bytes(rest[:, c]) for c in range(rest.shape[1]) if len(rest))
        rows.append((level.name, "hashed" if geometry.hashed else f"dense {geometry.crop}", coded, under_trained, channel_only, spatial))
    CONSOLE.print("| level | kind | coded bytes | under the trained model | entropy, channel prediction | entropy, + causal neighbours |")
    CONSOLE.print("|---|---|---|---|---|---|")
    for name, kind, coded, under_trained, channel_only, spatial in rows:
        CONSOLE.print(f"| {name} | {kind} | {coded:,} | {under_trained:,} | {channel_only:,.0f} | {spatial:,.0f} |")
    coded, under_trained, channel_only, spatial = (sum(row[i] for row in rows) for i in (2, 3, 4, 5))
    hashed = sum(row[2] for row in rows if row[1] == "hashed")
    CONSOLE.print(
        f"| all | hashed levels {hashed / coded:.0%} of the coded bytes | {coded:,} | {under_trained:,} ({under_trained / coded - 1:+.1%}) "
        f"| {channel_only:,.0f} ({channel_only / coded - 1:+.1%}) | {spatial:,.0f} ({spatial / coded - 1:+.1%}) |"
    )


if __name__ == "__main__":
    main()
