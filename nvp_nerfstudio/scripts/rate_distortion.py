"""nvp-rd: rate-distortion of trained runs through the .nvp codec, against x264, x265 and SVT-AV1.

For each run: the uncompressed field's PSNR and the size of its raw 8-bit latents, then a sweep of
codec settings, each compressed to bytes, decoded from those bytes as nvp-decompress does (file ->
field), and rendered. The reference codecs code the same source frames through PyAV: x264 and x265
in yuv420p and yuv444p, SVT-AV1 in yuv420p only (it codes only 4:2:0), each encode in a fresh child
process (reference_codecs.py). Every point is measured the same way: frames as uint8, as a decoded
video is, mean per-frame RGB PSNR against the source frames (the run's frame selection), and
bpp = bytes x 8 / (frames x height x width): the whole .nvp file, or a codec's bitstream (packets and
extradata, no container). Every series but the anchor (x265-medium yuv420p) gets its BD-rate and BD-PSNR
against the anchor. Writes rd.csv (the points), rd_bd.csv (the BD figures), rd.md and rd.png to the output
folder.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Optional, Tuple

import av
import numpy as np
import torch
from jaxtyping import UInt8
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from nvp_nerfstudio.cli import command, parse
from nvp_nerfstudio.compression import container, reference_codecs
from nvp_nerfstudio.compression.field_codec import CodecOptions, VideoInfo, compress, decode, raw_8bit_bytes
from nvp_nerfstudio.data.output import to_uint8
from nvp_nerfstudio.fields.base import VideoField, VideoShape
from nvp_nerfstudio.metrics import bits_per_pixel, psnr
from nvp_nerfstudio.plugin.runs import check_run, load_run
from nvp_nerfstudio.rate import quantisers
from nvp_nerfstudio.rendering import field_frames

CONSOLE = Console()
ANCHOR = ("x265", "yuv420p")
"""The reference curve every NVP point is read against at equal bpp, and every series' BD figures are against."""
BD_METHOD = "pchip"
"""The bjontegaard package's interpolation of a rate-distortion curve: piecewise cubic Hermite, as the JCT-VC and
JVET common-test-condition sheets use (the package matches them to 10 decimals), so the figures read like the
published ones; it keeps a monotonic curve monotonic between unevenly spaced CRFs. Not 'cubic' (VCEG-M33's single
cubic polynomial: through four points, a least-squares fit that misses them through more) nor the package's
default 'akima' (steadier in its authors' study, but not what the common test conditions compute)."""
MIN_BD_POINTS = 4
"""Points a curve needs for a BD figure: four rates, as VCEG-M33 and the common test conditions take; the package
would interpolate two, but a curve of two or three points is mostly the interpolation's guess."""
TARGET_RATIO, TARGET_LOSS = 4.0, 0.3
"""The target: a file at least 4x smaller than the raw 8-bit latents, within 0.3 dB of the uncompressed field."""

Frames = UInt8[np.ndarray, "frames height width 3"]
Curve = list[tuple[float, float]]
"""(bpp, PSNR in dB) points of one series."""
SourceFrames = UInt8[Tensor, "frames height width 3"]


@dataclass
class RateDistortionConfig:
    load_config: Tuple[Path, ...]
    """config.yml of one or more trained runs of the same frames (e.g. an nvp and an nvp-paper run)."""
    output_dir: Path = Path("rd-results")
    """Folder for rd.csv, rd_bd.csv, rd.md and rd.png (made if missing; written only once every point is measured)."""
    base: CodecOptions = CodecOptions()
    """The first point of every run; each point of the sweeps below changes one of its options."""
    image_qualities: Tuple[int, ...] = (95, 80, 70)
    """Qualities of the base image codec (NVP's keyframes)."""
    hash_bits: Tuple[int, ...] = (8, 5, 4)
    """Bits per value of the hashed levels."""
    mlp_bits: Tuple[Literal[8, 16, 32], ...] = (8, 16)
    """Widths of the MLP besides the base's (8: integer weights with a scale per row); a width that is the base's
    for a run counts once."""
    paper_codecs: bool = True
    """Add a point with the paper's codecs: JPEG 95 keyframes, x265 at crf 21 for the 3D grid's dense levels."""
    lossless: bool = True
    """Add a point with lossless codecs (PNG, FFV1) and a float32 MLP: what the 8-bit latents alone cost."""
    codecs: Tuple[Literal["x264", "x265", "svt-av1"], ...] = ("x264", "x265", "svt-av1")
    """Reference codecs."""
    pix_fmts: Tuple[Literal["yuv420p", "yuv444p"], ...] = ("yuv420p", "yuv444p")
    """Pixel formats of x264 and x265; SVT-AV1 codes only yuv420p."""
    crfs: Tuple[int, ...] = (0, 4, 8, 13, 18, 23, 28, 33, 38)
    """Constant rate factors of x264 and x265 (0-51); the low ones reach the bpp of .nvp files."""
    svt_av1_crfs: Tuple[int, ...] = (1, 10, 20, 27, 34, 41, 48, 55)
    """Constant rate factors of SVT-AV1 (1-63)."""
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"] = "medium"
    """x264 and x265 preset."""
    svt_av1_preset: int = 8
    """SVT-AV1 preset (0 slowest and best - 13 fastest)."""
    codec_timeout: float = 600.0
    """Seconds an encode and decode of the reference codecs may take."""
    chunk: int = 1 << 16
    """Pixels per forward pass when rendering."""


@dataclass(frozen=True)
class ReferenceJob:
    codec: str
    pix_fmt: str
    crf: int
    preset: str

    @property
    def series(self) -> str:
        preset = f"preset {self.preset}" if self.codec == "svt-av1" else self.preset
        return f"{self.codec} {preset} {self.pix_fmt}"


@dataclass
class Point:
    series: str
    """The run's label, or the reference codec with its preset and pixel format."""
    setting: str
    """What varies along the series: the sweep's name of the codec options, or the crf."""
    num_bytes: int
    bpp: float
    psnr: float
    encode_seconds: float
    decode_seconds: float
    """From bytes to a field (NVP, before rendering) or to the frames (reference codecs)."""
    render_seconds: Optional[float] = None
    codecs: str = ""
    """NVP: every codec option, resolved."""


@dataclass(frozen=True)
class BjontegaardDelta:
    """One BD figure of a series against the anchor, or why there is none."""

    value: Optional[float] = None
    """BD-rate in % (negative: fewer bits at equal PSNR) or BD-PSNR in dB (positive: better at equal bpp)."""
    common: Optional[tuple[float, float]] = None
    """The range the figure averages over, which both curves span: PSNR in dB for BD-rate, bpp for BD-PSNR."""
    of_series: float = 0.0
    """That range's share of the series' own range (along log bpp for BD-PSNR): below 1 the overlap is partial,
    and the figure says nothing of the series' points beyond the anchor's."""
    of_anchor: float = 0.0
    """Its share of the anchor's range."""
    reason: str = ""
    """Why there is no figure."""


@dataclass(frozen=True)
class SeriesDeltas:
    series: str
    points: int
    front: int
    """Of those, the points on its rate-distortion front: the ones the BD figures use."""
    rate: BjontegaardDelta
    psnr: BjontegaardDelta


@dataclass
class RunResult:
    label: str
    config: Path
    shape: VideoShape
    uncompressed_psnr: float
    raw_bytes: int
    points: list[Point]
    method: str
    """The run's method: runs of one method (e.g. nvp-c at several lambdas) also make one series together."""
    uncompressed: str = "Uncompressed field"
    """What uncompressed_psnr is of (field_render)."""


# ---------------------------------------------------------------- measuring


def field_render(field: VideoField) -> str:
    """What a field renders before coding: a field trained for rate rounds its latents and reads its MLP as stored."""
    state = getattr(field, "rate", None)
    if state is None:
        return "Uncompressed field"
    return f"Uncompressed field (as trained: its latents rounded, its MLP at {state.config.mlp_bits} bits)"


def mean_psnr(frames: Frames, source: SourceFrames) -> float:
    """Mean over the frames of each frame's RGB PSNR against the source's (ns-eval and nvp-decompress average the same way)."""
    return sum(psnr(torch.from_numpy(frame).float() / 255, truth.float() / 255) for frame, truth in zip(frames, source)) / len(source)


def render_video(field: VideoField, chunk: int) -> Frames:
    """Every frame of the field, rounded to uint8 as a decoded video is."""
    return np.stack([to_uint8(frame) for frame in field_frames(field, chunk)])


def describe(options: CodecOptions, field: VideoField) -> str:
    """The codecs a file of this field written with these options uses: a field trained for rate codes its grids
    under its own steps and entropy models, whatever the image, video and hash options say."""
    options = options.for_field(field)
    mlp = "int8" if options.mlp_bits == 8 else f"float{options.mlp_bits}"
    if quantisers(field):
        return f"learned steps + range (trained or refitted models), {mlp} MLP"
    image = "png" if options.image_codec == "png" else f"{options.image_codec} {options.image_quality}"
    video = "ffv1" if options.video_codec == "ffv1" else f"{options.video_codec} crf {options.video_crf}"
    hashes = "range" if options.latent_coder == "range" else options.hash_coder
    return f"{image} + {video} + {hashes}, {options.hash_bits}-bit hashes, {mlp} MLP"


def nvp_point(
    series: str,
    setting: str,
    field: VideoField,
    info: VideoInfo,
    options: CodecOptions,
    source: SourceFrames,
    chunk: int,
    device: str = "cpu",
    keep: Optional[Path] = None,
) -> Point:
    """Compress to bytes (written to `keep` if given), decode those bytes to a field (nvp-decompress's path) on
    `device`, render it and score it."""
    start = time.perf_counter()
    data = container.to_bytes(compress(field, info, options))
    compressed_at = time.perf_counter()
    if keep is not None:
        keep.write_bytes(data)
    name = f"{series} ({setting})"
    decoded, _ = decode(container.from_bytes(data, name), name)
    decoded = decoded.to(device)
    decoded_at = time.perf_counter()
    frames = render_video(decoded, chunk)
    rendered_at = time.perf_counter()
    return Point(
        series, setting, len(data), bits_per_pixel(len(data), field.shape), mean_psnr(frames, source),
        compressed_at - start, decoded_at - compressed_at, rendered_at - decoded_at, describe(options, field),
    )


@dataclass
class Coded:
    """What a reference codec made of the frames."""

    extradata: int
    packets: list[int]
    frames: Frames
    encode_seconds: float
    decode_seconds: float

    @property
    def num_bytes(self) -> int:
        return self.extradata + sum(self.packets)


def run_reference(job: ReferenceJob, frames_path: Path, timeout: float) -> Coded:
    """Encode and decode the frames saved (.npy) at frames_path in a fresh child process."""
    output = frames_path.with_name(f"{frames_path.stem}.decoded.npy")
    request = {"frames": str(frames_path), "output": str(output), **job.__dict__}
    worker = Path(reference_codecs.__file__)  # run as a file: the package's __init__ would import torch
    what = f"{job.series} crf {job.crf}"
    try:
        child = subprocess.run([sys.executable, str(worker)], input=json.dumps(request).encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"error: {what} took over {timeout:g} s: raise --codec-timeout") from None
    if child.returncode != 0:
        lines = child.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {child.returncode}"]
        raise SystemExit(f"error: {what} failed: {lines[-1]}")
    result = json.loads(child.stdout)
    frames = np.load(output)
    output.unlink()
    return Coded(result["extradata"], result["packets"], frames, result["encode_seconds"], result["decode_seconds"])


def reference_point(job: ReferenceJob, frames_path: Path, source: SourceFrames, timeout: float) -> Point:
    coded = run_reference(job, frames_path, timeout)
    shape = VideoShape(*source.shape[:3])
    return Point(
        job.series, f"crf {job.crf}", coded.num_bytes, bits_per_pixel(coded.num_bytes, shape), mean_psnr(coded.frames, source),
        coded.encode_seconds, coded.decode_seconds,
    )


def interpolate(points: list[tuple[float, float]], x: float) -> Optional[float]:
    """y at x, linear between the two (x, y) points around it; None outside their range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (x - x0) / (x1 - x0) * (y1 - y0)
    return next((y for px, y in points if px == x), None)  # a one-point curve


def psnr_at_bpp(curve: list[tuple[float, float]], bpp: float) -> Optional[float]:
    """The PSNR of a codec's (bpp, PSNR) points at `bpp`, linear in log(bpp) between the two around it;
    None outside their range."""
    return interpolate([(math.log(b), p) for b, p in curve if math.isfinite(p)], math.log(bpp))


def bpp_at_psnr(curve: list[tuple[float, float]], psnr_db: float) -> Optional[float]:
    """The inverse reading: the bpp at which the codec reaches `psnr_db`, log(bpp) linear in PSNR."""
    log_bpp = interpolate([(p, math.log(b)) for b, p in curve if math.isfinite(p)], psnr_db)
    return None if log_bpp is None else math.exp(log_bpp)


def rate_distortion_front(curve: Curve) -> Curve:
    """The points no other point beats (as few or fewer bits at as high or higher PSNR), by bpp: rising in both
    bpp and PSNR, as BD's interpolation needs. NVP's settings vary different options, so its points are no curve
    until the beaten ones go; a lossless point (infinite PSNR) has no place on a PSNR axis."""
    front: Curve = []
    for bpp, psnr_db in sorted(curve, key=lambda point: (point[0], -point[1])):
        if math.isfinite(psnr_db) and (not front or psnr_db > front[-1][1]):
            front.append((bpp, psnr_db))
    return front


def bjontegaard_delta(anchor: Curve, test: Curve, figure: Literal["rate", "psnr"]) -> BjontegaardDelta:
    """BD-rate (%) or BD-PSNR (dB) of `test` against `anchor`, each taken as its rate-distortion front, by the
    bjontegaard package with BD_METHOD. The package averages over the range both curves span only (PSNR for
    BD-rate, log bpp for BD-PSNR), so nothing is extrapolated; the shares say how much of each range that is.
    No figure, with the reason, where a front has fewer than MIN_BD_POINTS points or the ranges do not overlap."""
    from bjontegaard import bd_psnr, bd_rate  # it imports matplotlib.pyplot: only when figures are due, as plot() does

    anchor, test = rate_distortion_front(anchor), rate_distortion_front(test)
    for whose, front in (("the anchor's", anchor), ("the series'", test)):
        if len(front) < MIN_BD_POINTS:
            return BjontegaardDelta(reason=f"{whose} front has {len(front)} of the {MIN_BD_POINTS} points BD needs")
    # BD-rate averages the log-bpp gap along PSNR, BD-PSNR the PSNR gap along log bpp; a front rises in both.
    along = (lambda point: point[1]) if figure == "rate" else (lambda point: math.log10(point[0]))
    (anchor_low, anchor_high), (test_low, test_high) = ((along(front[0]), along(front[-1])) for front in (anchor, test))
    low, high = max(anchor_low, test_low), min(anchor_high, test_high)
    if low >= high:
        return BjontegaardDelta(
            reason=f"no overlap: the series spans {span(test_low, test_high, figure)}, the anchor {span(anchor_low, anchor_high, figure)}"
        )
    compute = bd_rate if figure == "rate" else bd_psnr
    # min_overlap=0: the package would only warn where the common range is under 75 % of both curves' together;
    # the shares of each curve's range come with every figure instead.
    value = compute(*zip(*anchor), *zip(*test), method=BD_METHOD, require_matching_points=False, min_overlap=0)
    common = (low, high) if figure == "rate" else (10**low, 10**high)
    return BjontegaardDelta(float(value), common, (high - low) / (test_high - test_low), (high - low) / (anchor_high - anchor_low))


def span(low: float, high: float, figure: Literal["rate", "psnr"]) -> str:
    """A range along BD-rate's axis (PSNR) or BD-PSNR's (log10 bpp), in dB or bpp."""
    return f"{low:.2f}-{high:.2f} dB" if figure == "rate" else f"{10**low:.4f}-{10**high:.4f} bpp"


def series_deltas(runs: list[RunResult], references: list[Point], anchor: Optional[str]) -> list[SeriesDeltas]:
    """BD-rate and BD-PSNR against the anchor of every run and every reference series but the anchor."""
    anchor_curve = [(p.bpp, p.psnr) for p in references if p.series == anchor]
    series = {run.label: [(p.bpp, p.psnr) for p in run.points] for run in runs}
    series.update(joined_series(runs))
    for p in references:
        if p.series != anchor:
            series.setdefault(p.series, []).append((p.bpp, p.psnr))
    no_anchor = BjontegaardDelta(reason=f"no anchor: {ANCHOR[0]} {ANCHOR[1]} was not run (see --codecs and --pix-fmts)")
    deltas = []
    for name, curve in series.items():
        rate, psnr_delta = (bjontegaard_delta(anchor_curve, curve, figure) if anchor_curve else no_anchor for figure in ("rate", "psnr"))
        deltas.append(SeriesDeltas(name, len(curve), len(rate_distortion_front(curve)), rate, psnr_delta))
    return deltas


def joined_series(runs: list[RunResult]) -> dict[str, list[tuple[float, float]]]:
    """The points of every method's runs together, for each method with two or more runs: a rate-aware method
    reaches its rates by lambda, one run a rate, so its curve is the front across its runs."""
    methods = [run.method for run in runs]
    return {
        f"{method}, {methods.count(method)} runs": [(p.bpp, p.psnr) for run in runs if run.method == method for p in run.points]
        for method in dict.fromkeys(methods)
        if methods.count(method) > 1
    }


# ---------------------------------------------------------------- the sweep and its checks


def nvp_sweep(config: RateDistortionConfig) -> list[tuple[str, CodecOptions]]:
    """(name, options) of every NVP point, checked; the same options twice count once."""
    base = config.base
    sweep = [("base", base)]
    sweep += [(f"{base.image_codec} {quality}", replace(base, image_quality=quality)) for quality in config.image_qualities]
    sweep += [(f"hash bits {bits}", replace(base, hash_bits=bits)) for bits in config.hash_bits]
    sweep += [(f"{bits}-bit MLP", replace(base, mlp_bits=bits)) for bits in config.mlp_bits]
    if config.paper_codecs:
        sweep.append(("paper's codecs", replace(base, image_codec="jpeg", image_quality=95, video_codec="x265", video_crf=21)))
    if config.lossless:
        sweep.append(("lossless codecs", replace(base, image_codec="png", image_quality=None, video_codec="ffv1", video_crf=None, mlp_bits=32)))
    unique = {}
    for name, options in sweep:
        try:
            unique.setdefault(options.resolved(), (name, options))
        except ValueError as err:
            raise SystemExit(f"error: {name}: {err}") from None
    return list(unique.values())


def run_sweep(sweep: list[tuple[str, CodecOptions]], field: VideoField) -> list[tuple[str, CodecOptions]]:
    """The settings that make different files of this field: each resolved for it (the MLP's width where the base
    leaves it open); a field trained for rate (nvp-c) codes its grids with its own models, so only the MLP's width
    tells its points apart."""
    unique = {}
    for name, options in sweep:
        resolved = options.for_field(field)
        unique.setdefault(resolved.mlp_bits if quantisers(field) else resolved, (name, options))
    return list(unique.values())


def reference_jobs(config: RateDistortionConfig) -> list[ReferenceJob]:
    """Every reference encode, checked against the codec's crf range and this PyAV build."""
    if not 0 <= config.svt_av1_preset <= 13:
        raise SystemExit(f"error: --svt-av1-preset must be 0..13, got {config.svt_av1_preset}")
    jobs = []
    for name in config.codecs:
        codec = reference_codecs.CODECS[name]
        crfs = config.svt_av1_crfs if name == "svt-av1" else config.crfs
        bad = [crf for crf in crfs if crf not in codec.crfs]
        if bad:
            flag = "--svt-av1-crfs" if name == "svt-av1" else "--crfs"
            raise SystemExit(f"error: {flag} {bad[0]} is outside {name}'s {codec.crfs.start}..{codec.crfs.stop - 1}")
        missing = [c for c in (codec.encoder, codec.decoder) if c not in av.codecs_available]
        if missing:
            raise SystemExit(f"error: this PyAV build (av {av.__version__}) has no {' or '.join(missing)}: leave {name} out of --codecs")
        preset = str(config.svt_av1_preset) if name == "svt-av1" else config.preset
        pix_fmts = [f for f in config.pix_fmts if f in codec.pix_fmts] or list(codec.pix_fmts)
        jobs += [ReferenceJob(name, pix_fmt, crf, preset) for pix_fmt in pix_fmts for crf in crfs]
    return jobs


def run_labels(methods: list[str], paths: Tuple[Path, ...]) -> list[str]:
    """Each run's method name, with its timestamp folder where two runs share a method."""
    return [m if methods.count(m) == 1 else f"{m} ({p.parent.name})" for m, p in zip(methods, paths)]


# ---------------------------------------------------------------- outputs


def anchor_series(jobs: list[ReferenceJob]) -> Optional[str]:
    return next((job.series for job in jobs if (job.codec, job.pix_fmt) == ANCHOR), None)


def anchor_name(anchor: Optional[str]) -> str:
    return anchor or f"{ANCHOR[0]} {ANCHOR[1]} (not run)"


def markdown(title: str, runs: list[RunResult], references: list[Point], anchor: Optional[str], deltas: list[SeriesDeltas]) -> str:
    curve = [(p.bpp, p.psnr) for p in references if p.series == anchor]
    name = anchor_name(anchor)
    lines = [
        f"# Rate-distortion: {title}",
        "",
        "PSNR: mean over the frames of per-frame RGB PSNR of uint8 frames against the source frames (the runs' "
        "frame selection). bpp: bytes x 8 / (frames x height x width), of the whole .nvp file (decoded from "
        "those bytes, as nvp-decompress does) or of a reference codec's bitstream (packets and extradata, no "
        f"container). SVT-AV1 codes only 4:2:0. Each NVP point is read against {name} at equal bpp (its PSNR "
        "there and the difference, Δ) and at equal PSNR (the bpp it needs, and how many times that the .nvp "
        "file takes), linear in log(bpp) between its two CRF points around; blank outside its CRFs' range. "
        f"Each series' BD-rate and BD-PSNR against {name} follow the runs.",
    ]
    for run in runs:
        lines += [
            "",
            f"## {run.label} ({run.config})",
            "",
            f"{run.uncompressed}: {run.uncompressed_psnr:.2f} dB. Raw 8-bit latents (one byte per grid value, the MLP "
            f"in float32): {run.raw_bytes:,} bytes ({bits_per_pixel(run.raw_bytes, run.shape):.3f} bpp).",
            "",
            "| setting | codecs | bytes | bpp | PSNR (dB) | vs uncompressed | vs raw 8-bit | "
            f"{name}: PSNR at this bpp | Δ | bpp at this PSNR | .nvp / it | compress s | decode s | render s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        readings = [(psnr_at_bpp(curve, point.bpp), bpp_at_psnr(curve, point.psnr)) for point in run.points]
        for point, (at_bpp, at_psnr) in zip(run.points, readings):
            same_bpp = ["outside its range", ""] if at_bpp is None else [f"{at_bpp:.2f}", f"{point.psnr - at_bpp:+.2f} dB"]
            same_psnr = ["outside its range", ""] if at_psnr is None else [f"{at_psnr:.4f}", f"{point.bpp / at_psnr:.1f}x"]
            cells = [
                point.setting, point.codecs, f"{point.num_bytes:,}", f"{point.bpp:.4f}", f"{point.psnr:.2f}",
                f"{point.psnr - run.uncompressed_psnr:+.2f} dB", f"{run.raw_bytes / point.num_bytes:.2f}x smaller", *same_bpp, *same_psnr,
                f"{point.encode_seconds:.1f}", f"{point.decode_seconds:.1f}", f"{point.render_seconds:.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", target_line(run), "", anchor_line(run, name, curve, readings)]
    lines += ["", *bd_section(name, deltas)]
    lines += [
        "",
        "## Reference codecs",
        "",
        "| codec | setting | bytes | bpp | PSNR (dB) | encode s | decode s |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {p.series} | {p.setting} | {p.num_bytes:,} | {p.bpp:.4f} | {p.psnr:.2f} | {p.encode_seconds:.2f} | {p.decode_seconds:.2f} |"
            for p in references
        ],
    ]
    return "\n".join(lines) + "\n"


def target_line(run: RunResult) -> str:
    target = f"at least {TARGET_RATIO:g}x smaller than the raw 8-bit latents within {TARGET_LOSS:g} dB of the uncompressed field"
    met = sorted(
        (p for p in run.points if run.raw_bytes / p.num_bytes >= TARGET_RATIO and p.psnr >= run.uncompressed_psnr - TARGET_LOSS),
        key=lambda p: p.num_bytes,
    )

    def describe_point(p: Point) -> str:
        return f"{p.setting} ({run.raw_bytes / p.num_bytes:.2f}x, {p.psnr - run.uncompressed_psnr:+.2f} dB)"

    if met:
        return f"Target ({target}): met by {', '.join(describe_point(p) for p in met)}."
    close = [p for p in run.points if p.psnr >= run.uncompressed_psnr - TARGET_LOSS]
    best = f"; the smallest file within {TARGET_LOSS:g} dB: {describe_point(min(close, key=lambda p: p.num_bytes))}" if close else ""
    return f"Target ({target}): not met{best}."


def anchor_line(run: RunResult, name: str, curve: list[tuple[float, float]], readings: list[tuple[Optional[float], Optional[float]]]) -> str:
    if not curve:
        return f"{name}: no comparison."
    low, high = min(b for b, _ in curve), max(b for b, _ in curve)
    deltas = [point.psnr - at for point, (at, _) in zip(run.points, readings) if at is not None]
    ratios = [point.bpp / at for point, (_, at) in zip(run.points, readings) if at is not None]

    def spread(values: list[float], form: str) -> str:
        return f"{form.format(min(values))} to {form.format(max(values))}" if len(values) > 1 else form.format(values[0])

    points = f"of {len(run.points)} points"
    same_bpp = f"is {spread(deltas, '{:+.2f}')} dB at equal bpp ({len(deltas)} {points})" if deltas else "has no point at a bpp it spans"
    same_psnr = f"takes {spread(ratios, '{:.1f}')}x its bits at equal PSNR ({len(ratios)} {points})" if ratios else "has no point at a PSNR it spans"
    return f"Against {name} (its CRFs: {low:.4f}-{high:.4f} bpp): {run.label} {same_bpp}, and {same_psnr}."


def bd_section(name: str, deltas: list[SeriesDeltas]) -> list[str]:
    lines = [
        f"## BD-rate and BD-PSNR against {name}",
        "",
        f"Bjøntegaard deltas (the bjontegaard package, {BD_METHOD} interpolation as in the JCT-VC and JVET common test "
        f"conditions): BD-rate is the mean bpp difference at equal PSNR (negative: fewer bits than {name}), BD-PSNR the "
        "mean PSNR difference at equal bpp (positive: better). Each averages over the range both curves span only, "
        "nothing extrapolated, and gives that range's share of the series' range and of the anchor's (along log bpp "
        "for BD-PSNR); where the overlap is partial, the figure says nothing of the series' points outside it. A "
        "series counts with its rate-distortion front (the points none of its others beats in both bpp and PSNR; NVP's "
        f"settings vary different options, so only those make a curve), which needs at least {MIN_BD_POINTS} points.",
        "",
        "| series | points (on its front) | BD-rate | over PSNR | BD-PSNR | over bpp |",
        "|---|---|---|---|---|---|",
    ]
    for delta in deltas:
        cells = [*bd_cells(delta.rate, "{:+.1f} %", "{:.2f}-{:.2f} dB"), *bd_cells(delta.psnr, "{:+.2f} dB", "{:.4f}-{:.4f} bpp")]
        lines.append(f"| {delta.series} | {delta.points} ({delta.front}) | " + " | ".join(cells) + " |")
    return lines


def bd_cells(delta: BjontegaardDelta, figure: str, common: str) -> list[str]:
    """The figure and the range it averages over, with how much the curves overlap; or "-" and why there is none."""
    if delta.value is None:
        return ["-", delta.reason]
    overlap = f"{share(delta.of_series)} of the series' range, {share(delta.of_anchor)} of the anchor's"
    return [figure.format(delta.value), f"{common.format(*delta.common)} ({'' if delta.of_series == 1 else 'partial: '}{overlap})"]


def share(fraction: float) -> str:
    return "all" if fraction == 1 else f"{fraction:.1%}"


def write_csv(path: Path, runs: list[RunResult], references: list[Point]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series", "setting", "codecs", "bytes", "bpp", "psnr_db", "vs_raw_8bit", "encode_s", "decode_s", "render_s"])
        rows = [(p, run.raw_bytes) for run in runs for p in run.points] + [(p, None) for p in references]
        for p, raw in rows:
            writer.writerow([
                p.series, p.setting, p.codecs, p.num_bytes, f"{p.bpp:.6f}", f"{p.psnr:.6f}", "" if raw is None else f"{raw / p.num_bytes:.4f}",
                f"{p.encode_seconds:.3f}", f"{p.decode_seconds:.3f}", "" if p.render_seconds is None else f"{p.render_seconds:.3f}",
            ])


def write_bd_csv(path: Path, anchor: str, deltas: list[SeriesDeltas]) -> None:
    """One row a series: BD-rate (%) over a PSNR range (dB), BD-PSNR (dB) over a bpp range, each range's share of
    the series' range and of the anchor's; the figure and its range blank where the note says why there is none."""

    def columns(delta: BjontegaardDelta) -> list[str]:
        if delta.value is None:
            return ["", "", "", "", "", delta.reason]
        return [f"{delta.value:.4f}", *(f"{end:.6f}" for end in delta.common), f"{delta.of_series:.4f}", f"{delta.of_anchor:.4f}", ""]

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([
            "series", "anchor", "points", "front_points",
            "bd_rate_percent", "bd_rate_from_db", "bd_rate_to_db", "bd_rate_of_series", "bd_rate_of_anchor", "bd_rate_note",
            "bd_psnr_db", "bd_psnr_from_bpp", "bd_psnr_to_bpp", "bd_psnr_of_series", "bd_psnr_of_anchor", "bd_psnr_note",
        ])
        for delta in deltas:
            writer.writerow([delta.series, anchor, delta.points, delta.front, *columns(delta.rate), *columns(delta.psnr)])


def bd_legend(delta: SeriesDeltas) -> str:
    """The series' BD figures for its legend entry (": BD-rate ..., BD-PSNR ..."), with the share of its range they
    cover where that is partial; nothing where it has neither (one lambda's point of several: a dash each would only
    widen the legend)."""

    def figure(bd: BjontegaardDelta, form: str) -> str:
        if bd.value is None:
            return "-"
        return form.format(bd.value) + ("" if bd.of_series == 1 else f" (on {bd.of_series:.0%} of its range)")

    if delta.rate.value is None and delta.psnr.value is None:
        return ""
    return f": BD-rate {figure(delta.rate, '{:+.1f} %')}, BD-PSNR {figure(delta.psnr, '{:+.2f} dB')}"


def plot(path: Path, title: str, runs: list[RunResult], references: list[Point], anchor: str, deltas: list[SeriesDeltas]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bd = {delta.series: bd_legend(delta) for delta in deltas}
    figure, axis = plt.subplots(figsize=(10, 7))
    for series in dict.fromkeys(p.series for p in references):
        points = sorted((p.bpp, p.psnr) for p in references if p.series == series and math.isfinite(p.psnr))
        label = f"{series} (anchor)" if series == anchor else f"{series}{bd[series]}"
        axis.plot(*zip(*points), marker=".", linestyle="--" if "yuv444p" in series else "-", label=label)
    for run in runs:
        points = sorted(run.points, key=lambda p: p.bpp)
        # Markers only: the settings vary different options, so they are no curve.
        (line,) = axis.plot([p.bpp for p in points], [p.psnr for p in points], marker="o", linestyle="none", label=f"{run.label} (.nvp){bd[run.label]}")
        for p in points:
            # Slanted: the settings sit close together in bpp.
            axis.annotate(p.setting, (p.bpp, p.psnr), textcoords="offset points", xytext=(2, -4), fontsize=6, rotation=-40,
                          rotation_mode="anchor", color=line.get_color())
        axis.axhline(run.uncompressed_psnr, linestyle=":", color=line.get_color(), label=f"{run.label} uncompressed")
    for name, points in joined_series(runs).items():
        axis.plot(*zip(*rate_distortion_front(points)), color="black", linewidth=1.5, label=f"{name}, front (.nvp){bd[name]}")
    axis.set_xscale("log")
    axis.set(xlabel="bits per pixel (log)", ylabel="PSNR (dB)", title=title)
    axis.grid(alpha=0.3, which="both")
    # Below the axes, in two columns: the BD figures make the entries too long to sit on the curves, and beside the
    # axes they would take half the figure's width.
    axis.legend(fontsize=7, title=f"BD against {anchor}, over the common range", title_fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)


# ---------------------------------------------------------------- the command


@command()
def main(config: RateDistortionConfig) -> tuple[list[RunResult], list[Point]]:
    if not config.load_config:
        raise SystemExit("error: pass --load-config RUN/config.yml (one or more trained runs)")
    for path in config.load_config:
        check_run(path)
    if config.output_dir.exists() and not config.output_dir.is_dir():
        raise SystemExit(f"error: {config.output_dir} is a file: --output-dir needs a folder")
    sweep, jobs = nvp_sweep(config), reference_jobs(config)
    loaded = [load_run(path) for path in config.load_config]
    (_, info, video, _), *others = loaded
    for path, (_, other_info, other_video, _) in zip(config.load_config[1:], others):
        if (other_video.source, other_info.selection) != (video.source, info.selection):
            raise SystemExit(
                f"error: {path} was trained on {other_video.source} ({other_info.selection}) but {config.load_config[0]} on "
                f"{video.source} ({info.selection}): nvp-rd compares runs of the same frames"
            )
    labels = run_labels([run_info.method for _, run_info, _, _ in loaded], config.load_config)
    source, title = video.frames, video.clip_name
    CONSOLE.print(f"Rate-distortion of {', '.join(labels)} on {title}: {len(sweep)} codec settings a run, {len(jobs)} reference encodes")
    runs, references = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=CONSOLE) as progress, tempfile.TemporaryDirectory() as folder:
        task = progress.add_task("", total=len(jobs) + sum(1 + len(run_sweep(sweep, run[0])) for run in loaded))
        frames_path = Path(folder) / "source.npy"
        np.save(frames_path, source.numpy())
        for job in jobs:
            progress.update(task, description=f"{job.series} crf {job.crf}")
            references.append(reference_point(job, frames_path, source, config.codec_timeout))
            progress.advance(task)
        for label, path, (run_field, run_info, _, _) in zip(labels, config.load_config, loaded):
            progress.update(task, description=f"{label}: uncompressed")
            uncompressed = mean_psnr(render_video(run_field, config.chunk), source)
            progress.advance(task)
            points = []
            for name, options in run_sweep(sweep, run_field):
                progress.update(task, description=f"{label}: {name}")
                try:
                    points.append(nvp_point(label, name, run_field, run_info, options, source, config.chunk))
                except ValueError as err:  # compress(): a field that is not its method's
                    raise SystemExit(f"error: {path}: {err}") from None
                progress.advance(task)
            runs.append(
                RunResult(label, path, run_field.shape, uncompressed, raw_8bit_bytes(run_field), points, run_info.method, field_render(run_field))
            )
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    anchor = anchor_series(jobs)
    deltas = series_deltas(runs, references, anchor)
    text = markdown(title, runs, references, anchor, deltas)
    (out / "rd.md").write_text(text)
    write_csv(out / "rd.csv", runs, references)
    write_bd_csv(out / "rd_bd.csv", anchor_name(anchor), deltas)
    plot(out / "rd.png", f"{title}: rate-distortion", runs, references, anchor_name(anchor), deltas)
    Console(width=max(CONSOLE.width, 200)).print(text, markup=False, highlight=False)
    CONSOLE.print(f"Wrote {out / 'rd.md'}, {out / 'rd.csv'}, {out / 'rd_bd.csv'} and {out / 'rd.png'}")
    return runs, references


def entrypoint() -> None:
    main(parse(RateDistortionConfig))


if __name__ == "__main__":
    entrypoint()
