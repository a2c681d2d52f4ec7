"""Videos longer than memory: one decoding pass in segments, a field per segment, rendered and scored as one video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import moving_gradient, write_clip
from nvp_nerfstudio.data.video import iter_segments, load_video
from nvp_nerfstudio.render import psnr
from nvp_nerfstudio.segments import EvaluateConfig, FitConfig, MemoryBenchConfig, RenderConfig, evaluate, fit, memory_bench, render


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "long.mkv", moving_gradient(14, 24, 32), codec="ffv1", pix_fmt="bgr0")


@pytest.mark.parametrize("frames,expected", [(10, [(0, 3), (3, 6), (6, 9)]), (7, [(0, 3), (3, 6)]), (2, [(0, 1)])])
def test_segments_share_boundary_frames_and_match_the_whole_decode(tmp_path: Path, frames: int, expected: list) -> None:
    clip = write_clip(tmp_path / f"clip{frames}.mkv", moving_gradient(frames, 8, 10), codec="ffv1", pix_fmt="bgr0")
    whole = load_video(clip)
    segments = list(iter_segments(clip, 4))
    assert [(s.source_indices[0], s.source_indices[-1]) for s in segments] == expected
    for segment in segments:
        assert torch.equal(segment.frames, whole.frames[segment.source_indices[0] : segment.source_indices[-1] + 1])


def test_fit_render_evaluate_treat_segments_as_one_video(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit"
    fit(FitConfig(data=str(clip), output_dir=out, method="ngp-video", segment_frames=6, steps_per_segment=40, train_batch=2048, device="cpu"))
    manifest = json.loads((out / "segments.json").read_text())
    assert [(s["first"], s["last"]) for s in manifest["segments"]] == [(0, 5), (5, 10), (10, 13)]
    frames_dir = tmp_path / "frames"
    render(RenderConfig(segments=out, output=frames_dir))
    rendered = load_video(frames_dir)
    truth = load_video(clip)
    assert rendered.num_frames == 14
    scores = evaluate(EvaluateConfig(segments=out))
    expected = sum(psnr(rendered.frames[i].float() / 255, truth.frames[i].float() / 255) for i in range(14)) / 14
    assert scores["frames"] == 14 and scores["psnr"] == pytest.approx(expected, abs=0.3)  # PNG frames are 8-bit
    assert scores["psnr"] > 20 and scores["psnr_near_boundaries"] is not None


def test_peak_memory_stays_flat_as_the_clip_grows() -> None:
    rows = memory_bench(MemoryBenchConfig(lengths=(16, 96), segment_frames=8, size=(64, 48), steps_per_segment=2))
    assert [r["frames"] for r in rows] == [16, 96]
    assert rows[1]["peak_rss_mib"] < rows[0]["peak_rss_mib"] * 1.15
