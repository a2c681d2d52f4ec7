"""nvp-rd: the reference codecs in their child process, NVP points through the decompress path, the reading
at equal bpp, and bad flags refused before anything runs. No training: a perturbed field stands in for a run."""

from __future__ import annotations

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
    bpp_at_psnr,
    main,
    markdown,
    nvp_point,
    psnr_at_bpp,
    reference_point,
    run_reference,
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


def test_nvp_point_scores_the_decoded_file_as_uint8_frames(clip) -> None:
    shape = VideoShape(clip.num_frames, clip.height, clip.width)
    field = perturbed(TINY_CONFIG, shape)
    info = VideoInfo("nvp", clip.fps, SELECTION)
    options = CodecOptions(hash_bits=6)
    point = nvp_point("nvp", "hash bits 6", field, info, options, clip.frames, 1 << 16)
    # What nvp-compress writes and nvp-decompress renders from it.
    data = container.to_bytes(compress(field, info, options))
    decoded, decoded_info = decode(container.from_bytes(data, "clip.nvp"), "clip.nvp")
    assert decoded_info == info
    last = clip.num_frames - 1
    rendered = [torch.from_numpy(to_uint8(render_frame(decoded, i / last, clip.height, clip.width))) for i in range(clip.num_frames)]
    expected = sum(psnr(frame.float() / 255, truth.float() / 255) for frame, truth in zip(rendered, clip.frames)) / clip.num_frames
    assert point.num_bytes == len(data) and point.bpp == len(data) * 8 / (6 * 36 * 44)
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
    text = markdown("clip", [RunResult("nvp", Path("run/config.yml"), VideoShape(2, 10, 20), 31.2, 2000, points)], references, "x265 medium yuv420p")
    at = 30.0 + 3.0 * math.log(1.5) / math.log(2.0)
    assert f"| {at:.2f} | {31.0 - at:+.2f} dB |" in text
    assert "| hash bits 5 |" in text and "outside its range" in text
    assert "Raw 8-bit latents (one byte per grid value, the MLP in float32): 2,000 bytes (40.000 bpp)" in text
    assert "not met; the smallest file within 0.3 dB: base (2.00x, -0.20 dB)" in text
    assert f"| {0.1 * 2 ** (1 / 3):.4f} | {0.15 / (0.1 * 2 ** (1 / 3)):.1f}x |" in text and "| 0.1000 | 3.0x |" in text
    assert f"nvp is {31.0 - at:+.2f} dB at equal bpp (1 of 2 points), and takes 1.2 to 3.0x its bits at equal PSNR (2 of 2 points)" in text


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
