"""nvp-rd: the reference codecs in their child process, NVP points through the decompress path, the reading
at equal bpp, BD-rate and BD-PSNR against x265, and bad flags refused before anything runs. No training: a
perturbed field stands in for a run."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_compression import TINY_CONFIG, perturbed

from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.field_codec import CodecOptions, VideoInfo, compress, decode
from nvp_nerfstudio.data.output import to_uint8
from nvp_nerfstudio.data.video import FrameSelection, load_video
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.rendering import render_frame
from nvp_nerfstudio.scripts.rate_distortion import (
    Point,
    RateDistortionConfig,
    ReferenceJob,
    RunResult,
    bd_legend,
    bjontegaard_delta,
    bpp_at_psnr,
    main,
    markdown,
    nvp_point,
    plot,
    psnr_at_bpp,
    rate_distortion_front,
    reference_point,
    run_reference,
    series_deltas,
    write_bd_csv,
)

SELECTION = FrameSelection(max_frames=6, downscale=4)  # carphone: 6 frames of 44x36


@pytest.fixture(scope="module")
def clip():
    return load_video("sample:carphone", SELECTION)


def saved(frames: np.ndarray, folder: Path) -> Path:
    np.save(folder / "source.npy", frames)
    return folder / "source.npy"


def test_reference_child_counts_every_byte_and_decodes_every_frame(clip, tmp_path: Path) -> None:
    coded = run_reference(ReferenceJob("x265", "yuv420p", 28, "medium"), saved(clip.frames.numpy(), tmp_path), 60)
    assert coded.num_bytes == coded.extradata + sum(coded.packets) > 0
    assert coded.frames.shape == tuple(clip.frames.shape) and coded.frames.dtype == np.uint8
    assert list(tmp_path.iterdir()) == [tmp_path / "source.npy"]  # the decoded frames' file is gone
    # Odd sizes: padded for 4:2:0, cropped back.
    odd = load_video("sample:carphone", FrameSelection(max_frames=3, downscale=5)).frames  # 35x28
    coded = run_reference(ReferenceJob("svt-av1", "yuv420p", 30, "8"), saved(odd.numpy(), tmp_path), 60)
    assert coded.frames.shape == (3, 28, 35, 3)
    assert np.abs(coded.frames.astype(int) - odd.numpy()).mean() < 8


def test_reference_quality_follows_crf(clip, tmp_path: Path) -> None:
    path = saved(clip.frames.numpy(), tmp_path)
    # Lossless x264 in 4:4:4: only the 8-bit RGB -> YUV -> RGB round trip loses (52.4 dB measured).
    lossless = reference_point(ReferenceJob("x264", "yuv444p", 0, "medium"), path, clip.frames, 60)
    assert lossless.psnr >= 50
    fine, coarse = (reference_point(ReferenceJob("x264", "yuv420p", crf, "medium"), path, clip.frames, 60) for crf in (18, 38))
    assert lossless.num_bytes > fine.num_bytes > coarse.num_bytes
    assert lossless.psnr > fine.psnr > coarse.psnr + 5
    assert fine.bpp == fine.num_bytes * 8 / (6 * 36 * 44) and fine.setting == "crf 18" and fine.series == "x264 medium yuv420p"


def test_nvp_point_scores_the_decoded_file_as_uint8_frames(clip, tmp_path: Path) -> None:
    shape = VideoShape(clip.num_frames, clip.height, clip.width)
    field = perturbed(TINY_CONFIG, shape)
    info = VideoInfo("nvp", clip.fps, SELECTION)
    options = CodecOptions(hash_bits=6)
    point = nvp_point("nvp", "hash bits 6", field, info, options, clip.frames, 1 << 16, keep=tmp_path / "kept.nvp")
    # What nvp-compress writes and nvp-decompress renders from it.
    data = container.to_bytes(compress(field, info, options))
    decoded, decoded_info = decode(container.from_bytes(data, "clip.nvp"), "clip.nvp")
    assert decoded_info == info
    last = clip.num_frames - 1
    rendered = [torch.from_numpy(to_uint8(render_frame(decoded, i / last, clip.height, clip.width))) for i in range(clip.num_frames)]
    expected = sum(psnr(frame.float() / 255, truth.float() / 255) for frame, truth in zip(rendered, clip.frames)) / clip.num_frames
    assert point.num_bytes == len(data) and point.bpp == len(data) * 8 / (6 * 36 * 44)
    assert (tmp_path / "kept.nvp").read_bytes() == data  # the file it scored, kept
    assert point.psnr == pytest.approx(expected, abs=1e-9)
    assert point.codecs == "webp 90 + ffv1 + range, 6-bit hashes, float16 MLP"
    assert min(point.encode_seconds, point.decode_seconds, point.render_seconds) > 0


def test_psnr_at_equal_bpp_is_linear_in_log_bpp() -> None:
    curve = [(0.4, 36.0), (0.1, 30.0), (0.2, 33.0)]
    assert psnr_at_bpp(curve, 0.2) == 33.0
    assert psnr_at_bpp(curve, math.sqrt(0.1 * 0.2)) == pytest.approx(31.5)  # halfway in log(bpp)
    assert psnr_at_bpp(curve, 0.3) == pytest.approx(33.0 + 3.0 * math.log(1.5) / math.log(2.0))
    assert psnr_at_bpp(curve, 0.05) is None and psnr_at_bpp(curve, 0.41) is None
    assert psnr_at_bpp([(0.3, 40.0)], 0.3) == 40.0
    assert psnr_at_bpp([(0.1, 30.0), (0.2, math.inf)], 0.15) is None  # a lossless point is no curve
    assert bpp_at_psnr(curve, 31.5) == pytest.approx(math.sqrt(0.1 * 0.2))  # the inverse reading
    assert bpp_at_psnr(curve, 36.0) == pytest.approx(0.4) and bpp_at_psnr(curve, 36.1) is None


def test_markdown_reads_each_point_against_x265_and_the_target() -> None:
    # x265 at 0.1 bpp: 30 dB, at 0.2 bpp: 33 dB. The base point sits between (equal bpp and equal PSNR);
    # hash bits 5 is beyond x265's bpp but at its 30 dB (3x its 0.1 bpp).
    references = [Point("x265 medium yuv420p", f"crf {crf}", n, bpp, p, 0.1, 0.1) for crf, n, bpp, p in [(33, 100, 0.1, 30.0), (23, 200, 0.2, 33.0)]]
    points = [
        Point("nvp", "base", 1000, 0.15, 31.0, 1.0, 0.5, 2.0, "webp 90 + ffv1 + lzma, 8-bit hashes, float16 MLP"),
        Point("nvp", "hash bits 5", 400, 0.3, 30.0, 1.0, 0.5, 2.0, "webp 90 + ffv1 + lzma, 5-bit hashes, float16 MLP"),
    ]
    runs = [RunResult("nvp", Path("run/config.yml"), VideoShape(2, 10, 20), 31.2, 2000, points, "nvp")]
    text = markdown("clip", runs, references, "x265 medium yuv420p", series_deltas(runs, references, "x265 medium yuv420p"))
    at = 30.0 + 3.0 * math.log(1.5) / math.log(2.0)
    assert f"| {at:.2f} | {31.0 - at:+.2f} dB |" in text
    assert "| hash bits 5 |" in text and "outside its range" in text
    assert "Raw 8-bit latents (one byte per grid value, the MLP in float32): 2,000 bytes (40.000 bpp)" in text
    assert "not met; the smallest file within 0.3 dB: base (2.00x, -0.20 dB)" in text
    assert f"| {0.1 * 2 ** (1 / 3):.4f} | {0.15 / (0.1 * 2 ** (1 / 3)):.1f}x |" in text and "| 0.1000 | 3.0x |" in text
    assert f"nvp is {31.0 - at:+.2f} dB at equal bpp (1 of 2 points), and takes 1.2 to 3.0x its bits at equal PSNR (2 of 2 points)" in text
    # Two x265 points are too few for BD figures: said, not computed.
    assert "| nvp | 2 (1) | - | the anchor's front has 2 of the 4 points BD needs | - | the anchor's front has 2 of the 4 points BD needs |" in text


# An x265-like anchor: (bpp, PSNR) at five CRFs, not evenly spaced, bending as real curves do.
ANCHOR_CURVE = [(0.028, 29.0), (0.085, 34.35), (0.274, 38.91), (0.884, 41.8), (1.944, 43.0)]


def straight(offset: float, bpps: list[float]) -> list[tuple[float, float]]:
    """PSNR = 10 log10(bpp) + offset: a straight line in log bpp, which any interpolation through its points follows."""
    return [(bpp, 10 * math.log10(bpp) + offset) for bpp in bpps]


def test_bd_psnr_of_a_constant_psnr_offset_is_that_offset() -> None:
    better = [(bpp, psnr_db + 1.5) for bpp, psnr_db in ANCHOR_CURVE]
    delta = bjontegaard_delta(ANCHOR_CURVE, better, "psnr")
    assert delta.value == pytest.approx(1.5, abs=1e-9)
    assert delta.of_series == delta.of_anchor == 1 and delta.common == pytest.approx((0.028, 1.944))
    assert bjontegaard_delta(ANCHOR_CURVE, ANCHOR_CURVE, "psnr").value == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_of_half_the_bits_everywhere_is_minus_50_percent() -> None:
    half = [(bpp / 2, psnr_db) for bpp, psnr_db in ANCHOR_CURVE]
    delta = bjontegaard_delta(ANCHOR_CURVE, half, "rate")
    assert delta.value == pytest.approx(-50.0, abs=1e-9)
    assert delta.of_series == delta.of_anchor == 1 and delta.common == pytest.approx((29.0, 43.0))
    assert bjontegaard_delta(ANCHOR_CURVE, [(2 * bpp, p) for bpp, p in ANCHOR_CURVE], "rate").value == pytest.approx(100.0)


def test_bd_figures_average_over_the_common_range_only_and_say_how_much_that_is() -> None:
    # Parallel lines 1 dB apart: the anchor over 0.01-1 bpp (20-40 dB), the test over 0.1-10 bpp (31-51 dB).
    anchor = straight(40.0, [0.01, 0.03, 0.1, 0.3, 1.0])
    test = straight(41.0, [0.1, 0.2, 1.0, 3.0, 10.0])
    bd_psnr = bjontegaard_delta(anchor, test, "psnr")
    assert bd_psnr.value == pytest.approx(1.0, abs=1e-9)
    # One of the two decades of bpp each spans.
    assert bd_psnr.common == pytest.approx((0.1, 1.0)) and bd_psnr.of_series == pytest.approx(0.5) and bd_psnr.of_anchor == pytest.approx(0.5)
    # At equal PSNR the test needs 10^(-1/10) of the bits: 1 dB is a tenth of a decade on these lines.
    bd_rate = bjontegaard_delta(anchor, test, "rate")
    assert bd_rate.value == pytest.approx((10 ** (-0.1) - 1) * 100, abs=1e-9)
    assert bd_rate.common == pytest.approx((31.0, 40.0)) and bd_rate.of_series == pytest.approx(9 / 20) and bd_rate.of_anchor == pytest.approx(9 / 20)


def test_bd_gives_no_figure_for_too_few_points_or_no_overlap() -> None:
    too_few = bjontegaard_delta(ANCHOR_CURVE, ANCHOR_CURVE[:3], "rate")
    assert too_few.value is None and too_few.reason == "the series' front has 3 of the 4 points BD needs"
    assert bjontegaard_delta(ANCHOR_CURVE[1:4], ANCHOR_CURVE, "psnr").reason == "the anchor's front has 3 of the 4 points BD needs"
    # Five points, but one beaten by another (more bits, less PSNR) and one lossless: three left on the front.
    beaten = [*ANCHOR_CURVE[:3], (0.3, 38.0), (2.5, math.inf)]
    assert bjontegaard_delta(ANCHOR_CURVE, beaten, "psnr").reason == "the series' front has 3 of the 4 points BD needs"
    # 30 dB higher at the same bits: no PSNR in common (no BD-rate), the same bpp (BD-PSNR 30 dB).
    above = [(bpp, psnr_db + 30) for bpp, psnr_db in ANCHOR_CURVE]
    no_rate = bjontegaard_delta(ANCHOR_CURVE, above, "rate")
    assert no_rate.value is None and no_rate.common is None
    assert no_rate.reason == "no overlap: the series spans 59.00-73.00 dB, the anchor 29.00-43.00 dB"
    assert bjontegaard_delta(ANCHOR_CURVE, above, "psnr").value == pytest.approx(30.0)
    # Ranges that only touch have nothing to average over.
    beyond = [(1.944, 43.0), (3.0, 44.0), (5.0, 45.0), (9.0, 46.0)]
    assert bjontegaard_delta(ANCHOR_CURVE, beyond, "psnr").reason == "no overlap: the series spans 1.9440-9.0000 bpp, the anchor 0.0280-1.9440 bpp"


def test_rate_distortion_front_keeps_the_points_nothing_beats() -> None:
    points = [(0.5, 33.0), (0.1, 30.0), (0.3, 29.0), (0.2, 32.0), (0.2, 31.0), (0.4, 32.0), (0.9, math.inf), (0.6, 34.0)]
    # (0.3, 29) and (0.4, 32): (0.2, 32) beats both; (0.2, 31): the same bits for less; lossless: no PSNR.
    assert rate_distortion_front(points) == [(0.1, 30.0), (0.2, 32.0), (0.5, 33.0), (0.6, 34.0)]


def test_bd_figures_for_every_series_in_the_report_the_csv_and_the_plot(tmp_path: Path) -> None:
    anchor = "x265 medium yuv420p"
    references = [Point(anchor, f"crf {i}", 100, bpp, p, 0.1, 0.1) for i, (bpp, p) in enumerate(straight(40.0, [0.01, 0.03, 0.1, 0.3, 1.0]))]
    references += [Point("x264 medium yuv420p", f"crf {i}", 100, bpp, p, 0.1, 0.1) for i, (bpp, p) in enumerate(straight(41.0, [0.1, 0.2, 1.0, 3.0, 10.0]))]
    nvp = [Point("nvp", f"setting {i}", 1000, bpp, p, 1.0, 0.5, 2.0, "codecs") for i, (bpp, p) in enumerate(straight(39.0, [0.2, 0.25, 0.3, 0.4]))]
    runs = [
        RunResult("nvp", Path("run/config.yml"), VideoShape(2, 10, 20), 36.0, 2000, nvp, "nvp"),
        RunResult("nvp-paper", Path("paper/config.yml"), VideoShape(2, 10, 20), 36.0, 2000, nvp[:2], "nvp-paper"),
    ]
    deltas = series_deltas(runs, references, anchor)
    assert [d.series for d in deltas] == ["nvp", "nvp-paper", "x264 medium yuv420p"]  # the anchor is no series of its own
    text = markdown("clip", runs, references, anchor, deltas)
    assert "## BD-rate and BD-PSNR against x265 medium yuv420p" in text
    # nvp lies inside the anchor's range: all of it compared, over 0.3 of the anchor's 2 decades (3 of its 20 dB).
    within = f"all of the series' range, {math.log10(2) / 2:.1%} of the anchor's"
    assert f"| nvp | 4 (4) | {(10**0.1 - 1) * 100:+.1f} % | 32.01-35.02 dB ({within}) | -1.00 dB | 0.2000-0.4000 bpp ({within}) |" in text
    assert "| nvp-paper | 2 (2) | - | the series' front has 2 of the 4 points BD needs | - |" in text
    assert (
        f"| x264 medium yuv420p | 5 (5) | {(10**-0.1 - 1) * 100:+.1f} % | 31.00-40.00 dB (partial: 45.0% of the series' range, 45.0% of the anchor's) "
        "| +1.00 dB | 0.1000-1.0000 bpp (partial: 50.0% of the series' range, 50.0% of the anchor's) |"
    ) in text
    write_bd_csv(tmp_path / "rd_bd.csv", anchor, deltas)
    with open(tmp_path / "rd_bd.csv") as handle:
        rows = {row["series"]: row for row in csv.DictReader(handle)}
    assert float(rows["x264 medium yuv420p"]["bd_rate_percent"]) == pytest.approx((10 ** -0.1 - 1) * 100, abs=1e-4)
    assert float(rows["x264 medium yuv420p"]["bd_psnr_of_series"]) == pytest.approx(0.5, abs=1e-4)
    assert rows["nvp-paper"]["bd_rate_percent"] == "" and rows["nvp-paper"]["bd_psnr_note"] == "the series' front has 2 of the 4 points BD needs"
    assert {row["anchor"] for row in rows.values()} == {anchor}
    plot(tmp_path / "rd.png", "clip", runs, references, anchor, deltas)
    assert (tmp_path / "rd.png").stat().st_size > 0
    # Without x265 yuv420p there is nothing to read against: every series says so.
    alone = series_deltas(runs, [p for p in references if p.series != anchor], None)
    assert {d.rate.reason for d in alone} == {d.psnr.reason for d in alone} == {"no anchor: x265 yuv420p was not run (see --codecs and --pix-fmts)"}


@pytest.mark.parametrize(
    "flags,message",
    [
        ({"load_config": (Path("missing/config.yml"),)}, "missing/config.yml does not exist"),
        ({"crfs": (18, 60)}, "--crfs 60 is outside x264's 0..51"),
        ({"svt_av1_crfs": (0,)}, "--svt-av1-crfs 0 is outside svt-av1's 1..63"),
        ({"hash_bits": (9,)}, "hash bits 9: hash bits must be 1..8"),
        ({"load_config": ()}, "pass --load-config"),
    ],
)
def test_bad_flags_give_one_error_line_and_write_nothing(tmp_path: Path, flags: dict, message: str) -> None:
    (tmp_path / "config.yml").write_text("")  # never read: the flags are checked before any run loads
    config = RateDistortionConfig(**{"load_config": (tmp_path / "config.yml",), "output_dir": tmp_path / "rd", **flags})
    with pytest.raises(SystemExit) as raised:
        main(config)
    assert str(raised.value).startswith("error: ") and message in str(raised.value) and "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yml"]


def test_command_line_error_is_the_last_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "nvp_nerfstudio.scripts.rate_distortion", "--load-config", "missing.yml", "--output-dir", "rd"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: missing.yml does not exist: pass the config.yml of a trained run"
    assert list(tmp_path.iterdir()) == []


def test_runs_of_one_method_make_one_series_together(tmp_path: Path) -> None:
    """Two lambdas of a rate-aware method, two points each: neither run has the 4 points BD needs, together they do."""
    anchor = "x265 medium yuv420p"
    references = [Point(anchor, f"crf {i}", 100, bpp, p, 0.1, 0.1) for i, (bpp, p) in enumerate(straight(40.0, [0.01, 0.03, 0.1, 0.3, 1.0]))]
    curve = straight(39.0, [0.02, 0.04, 0.08, 0.16])
    points = [Point("nvp-c", f"setting {i}", 1000, bpp, p, 1.0, 0.5, 2.0, "codecs") for i, (bpp, p) in enumerate(curve)]
    runs = [
        RunResult("nvp-c (low)", Path("low/config.yml"), VideoShape(2, 10, 20), 36.0, 2000, points[:2], "nvp-c"),
        RunResult("nvp-c (high)", Path("high/config.yml"), VideoShape(2, 10, 20), 38.0, 2000, points[2:], "nvp-c"),
        RunResult("nvp", Path("nvp/config.yml"), VideoShape(2, 10, 20), 38.0, 2000, points[:1], "nvp"),
    ]
    deltas = {d.series: d for d in series_deltas(runs, references, anchor)}
    assert set(deltas) == {"nvp-c (low)", "nvp-c (high)", "nvp", "nvp-c, 2 runs"}
    assert deltas["nvp-c (low)"].psnr.value is None
    assert deltas["nvp-c, 2 runs"].points == 4
    assert deltas["nvp-c, 2 runs"].psnr.value == pytest.approx(-1.0, abs=1e-3)
    # In the plot's legend, a lambda's own run has no BD figures to give, the series of both has them.
    assert bd_legend(deltas["nvp-c (low)"]) == ""
    assert bd_legend(deltas["nvp-c, 2 runs"]) == f": BD-rate {(10**0.1 - 1) * 100:+.1f} %, BD-PSNR -1.00 dB"
    plot(tmp_path / "rd.png", "clip", runs, references, anchor, list(deltas.values()))
    assert (tmp_path / "rd.png").stat().st_size > 0
