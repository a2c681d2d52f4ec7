"""Rate-distortion of rate-aware NVP (`nvp-c`) at several lambdas (or rate-control targets) on one clip, against
x265-medium yuv420p on the same frames: each point trained with the core loop (the loop `ns-train nvp-c` runs) for
a fixed number of steps or seconds, compressed, decoded from its bytes, every frame rendered as uint8 and scored;
the report is nvp-rd's (rd.md, rd.csv, rd_bd.csv, rd.png), the points joined into one series for the BD figures,
beside each point's .nvp file (nvp-decompress renders it).

    python scripts/rd_lambdas.py --data sample:bikes --downscale 2 --steps 2000 --lambdas 0.003 0.01 0.03 0.1 \
        --crfs 22 26 30 34 38 42 --output-dir rd-nvp-c
    python scripts/rd_lambdas.py --data sample:bigbuckbunny --seconds 900 --target-bpps 0.02 0.05 0.1
    python scripts/rd_lambdas.py --data sample:bikes --downscale 2 --steps 2000 --lambdas 0.01 --method nvp-c-fast-grids

On CUDA (`--device`, by default CUDA where torch sees it) the fields train on the GPU, the decoded files render there,
and the x265 encodes run meanwhile in child processes on the CPUs; on a CPU they run after the training, so that
they do not take its cores. On a CPU, `--jobs N` trains N points at once, each in a process of its own with the
cores shared out (`--jobs 2` on a 2-core machine: one thread each), and still writes one report of every point.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nvp_nerfstudio.compression.field_codec import CodecOptions, VideoInfo, raw_8bit_bytes
from nvp_nerfstudio.data.video import VideoFrames, VideoSource
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fit import FitConfig, psnr_against_time
from nvp_nerfstudio.methods import METHODS, NVP_C, NVP_FAST, VideoMethod
from nvp_nerfstudio.rate import RateConfig
from nvp_nerfstudio.scripts.rate_distortion import (
    ReferenceJob,
    RunResult,
    anchor_series,
    field_render,
    markdown,
    mean_psnr,
    nvp_point,
    plot,
    reference_point,
    render_video,
    series_deltas,
    write_bd_csv,
    write_csv,
)

CHUNK = 1 << 16
# Study variants of nvp-c (--method): nvp-fast's grids (8 keyframe levels a plane, a 3D grid whose finest level has a
# vertex per pixel and frame, here with NVP-S's 2^19 entries a level) trained for rate; nvp-c with 2^17 entries a hashed
# level instead of 2^19; nvp-c with a 16- or 48-wide modulated SIREN instead of 32 (what a field stores besides its
# latents is a quarter of a file at 0.02 bpp on mire 384x288).
VARIANTS = {
    "nvp-c-fast-grids": replace(NVP_FAST, positional=replace(NVP_FAST.positional, log2_hashmap_size=19), rate=RateConfig()),
    "nvp-c-table-17": replace(NVP_C, positional=replace(NVP_C.positional, log2_hashmap_size=17)),
    "nvp-c-mlp-16": replace(NVP_C, mlp=replace(NVP_C.mlp, hidden_dim=16)),
    "nvp-c-mlp-48": replace(NVP_C, mlp=replace(NVP_C.mlp, hidden_dim=48)),
}
# At import, so that a --jobs worker process (which imports this file anew) finds them too.
METHODS.update({name: VideoMethod(variant, METHODS["nvp-c"].lr, f"rate study: {name}") for name, variant in VARIANTS.items()})


def train_point(args: argparse.Namespace, setting: dict, video: Optional[VideoFrames] = None) -> RunResult:
    """One lambda or target: train, then compress at each MLP width, decode from the bytes and score every frame
    (the clip decoded here unless given); the files stay in the output folder."""
    source = VideoSource(args.data, downscale=args.downscale, max_frames=args.max_frames)
    video = source.load() if video is None else video
    shape = VideoShape(video.num_frames, video.height, video.width)
    info = VideoInfo(args.method, video.fps, source.selection)
    steps = None if args.seconds else args.steps or 2000
    config = FitConfig(method=args.method, device=args.device, steps=steps, seconds=args.seconds or 0.0, train_batch=args.train_batch, eval_every=float("inf"), eval_frames=0, **setting)
    trace, field = psnr_against_time(config, video, shape, final_frames=[0])  # every frame is scored below, as uint8
    field.eval()
    name = f"target {setting['target_bpp']:g} bpp" if "target_bpp" in setting else f"lambda {setting['lmbda']:g}"
    label = f"{args.method} {name} ({trace[-1]['steps']} steps, {trace[-1]['seconds']:.0f} s)"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    points = [
        nvp_point(label, f"{bits}-bit MLP", field, info, CodecOptions(mlp_bits=bits), video.frames, CHUNK, args.device,
                  keep=args.output_dir / f"{args.method} {name} {bits}-bit MLP.nvp".replace(" ", "_"))
        for bits in args.mlp_bits
    ]
    uncompressed = mean_psnr(render_video(field, CHUNK), video.frames)
    print(label, *(f"{p.setting}: {p.bpp:.4f} bpp {p.psnr:.2f} dB" for p in points), flush=True)
    return RunResult(label, Path("-"), shape, uncompressed, raw_8bit_bytes(field), points, args.method, field_render(field))


def train_points(args: argparse.Namespace, settings: list[dict], video: VideoFrames) -> list[RunResult]:
    """Every point, in this process or, with --jobs, that many at a time in worker processes (each decodes the clip)."""
    if args.jobs == 1:
        return [train_point(args, setting, video) for setting in settings]
    # A spawned worker reads these at its start, before torch and numba size their thread pools.
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    os.environ.update(OMP_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as workers:
        return list(workers.map(train_point, [args] * len(settings), settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample:bikes")
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--max-frames", type=int)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps a point (default 2000)")
    budget.add_argument("--seconds", type=float, help="training seconds a point, instead of steps")
    parser.add_argument("--train-batch", type=int, help="pixels a training step (default: 2^14 on a CPU, 2^20 on CUDA)")
    points = parser.add_mutually_exclusive_group()
    points.add_argument("--lambdas", type=float, nargs="+", help="lambdas (default 0.003 0.01 0.03 0.1)")
    points.add_argument("--target-bpps", type=float, nargs="+", help="rate-control targets in bits per pixel, instead of lambdas")
    parser.add_argument("--ste-from", type=float, help="fraction of the run trained on noise before rounding (default: the method's)")
    parser.add_argument("--mlp-bits", type=int, nargs="+", default=[16, 8], help="the MLP widths each lambda's file is measured at")
    parser.add_argument("--crfs", type=int, nargs="+", default=[22, 26, 30, 34, 38, 42], help="x265 crfs")
    parser.add_argument("--method", default="nvp-c", choices=["nvp-c", *VARIANTS], help="the rate-aware method or a study variant")
    parser.add_argument("--jobs", type=int, default=1, help="points trained at once on a CPU, each in a process of its own")
    parser.add_argument("--output-dir", type=Path, default=Path("rd-nvp-c"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the fields train and render")
    args = parser.parse_args()
    if args.jobs < 1 or (args.jobs > 1 and torch.device(args.device).type == "cuda"):
        parser.error("--jobs must be at least 1, and 1 on CUDA (the points share the GPU)")

    video = VideoSource(args.data, downscale=args.downscale, max_frames=args.max_frames).load()
    settings = [{"target_bpp": bpp} for bpp in args.target_bpps] if args.target_bpps else [{"lmbda": value} for value in args.lambdas or (0.003, 0.01, 0.03, 0.1)]
    if args.ste_from is not None:
        settings = [{**setting, "ste_from": args.ste_from} for setting in settings]
    jobs = [ReferenceJob("x265", "yuv420p", crf, "medium") for crf in args.crfs]
    on_gpu = torch.device(args.device).type == "cuda"
    # Each encode is a child process: beside a GPU's training all at once, on a CPU one at a time after it.
    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(max_workers=len(jobs) if on_gpu else 1) as pool:
        frames_path = Path(scratch) / "frames.npy"
        np.save(frames_path, video.frames.numpy())

        def encode_all() -> list:
            return [pool.submit(reference_point, job, frames_path, video.frames, 600) for job in jobs]

        encodes = encode_all() if on_gpu else None
        runs = train_points(args, settings, video)
        references = [encode.result() for encode in encodes or encode_all()]
    anchor = anchor_series(jobs)
    deltas = series_deltas(runs, references, anchor)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(video.clip_name, runs, references, anchor, deltas)
    (out / "rd.md").write_text(text)
    write_csv(out / "rd.csv", runs, references)
    write_bd_csv(out / "rd_bd.csv", anchor, deltas)
    plot(out / "rd.png", f"{video.clip_name}: {args.method} against x265", runs, references, anchor, deltas)
    print(text)


if __name__ == "__main__":
    main()
