"""nvp-compare on a real clip: every method trained in turn, one table, plots, and the interpolation mode."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from nvp_nerfstudio.data.interpolation import blend
from nvp_nerfstudio.data.video import FrameSelection, VideoSource, holdout_split, load_video
from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.scripts.compare import BLEND, CompareConfig, main

CLIP = dict(source=VideoSource("sample:carphone", downscale=2, max_frames=12), train_batch=2048, eval_every=2.0, device="cpu")


def read_table(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_compare_trains_every_method_and_writes_table_and_plots(tmp_path) -> None:
    config = CompareConfig(**CLIP, methods=("ngp-video", "nerv-video"), steps=40, eval_frames=3, metrics=("psnr", "ssim"), output_dir=tmp_path)
    results = main(config)
    rows = read_table(tmp_path / "compare.csv")
    assert [row["method"] for row in rows] == ["ngp-video", "nerv-video"]
    for result, row in zip(results, rows):
        assert result.steps == 40 and result.parameters > 0 and result.decode_fps > 0
        # The table's PSNR (per-frame metrics pass) and the training curve's last point (evaluation during
        # training) are two code paths over the same frames and the same field.
        assert float(row["psnr"]) == pytest.approx(result.curve[-1]["psnr"], abs=1e-3)
        assert 0 < float(row["ssim"]) <= 1
    assert float(rows[0]["psnr"]) > 20.0  # 40 steps of the hash grid: far above a flat colour (~12 dB)
    assert all(result.curve[-1]["frames"] == 12 for result in results)  # every frame, not eval_frames' 3
    assert "| method | psnr ↑ | ssim ↑ |" in (tmp_path / "compare.md").read_text()
    for image in ("psnr_vs_time.png", "frame_grid.png"):
        with Image.open(tmp_path / image) as picture:
            assert picture.width > 300 and picture.height > 200


def test_perceptual_metrics_score_the_stated_subset_and_the_rest_every_frame(tmp_path) -> None:
    config = CompareConfig(**CLIP, methods=("ngp-video",), steps=5, eval_frames=2, metrics=("psnr", "flip"), output_dir=tmp_path)
    (result,) = main(config)
    assert result.curve[-1]["frames"] == 12 and result.metrics["flip"] > 0
    assert "Metrics: mean over every frame (12); FLIP over 2 of them, evenly spaced (0, 11)" in (tmp_path / "compare.md").read_text()


def test_compare_interpolation_mode_scores_held_out_frames_and_linear_blend(tmp_path) -> None:
    config = CompareConfig(**CLIP, methods=("ngp-video",), steps=10, holdout_every=3, eval_frames=0, metrics=("psnr",), output_dir=tmp_path)
    results = main(config)
    assert [r.name for r in results] == ["ngp-video", BLEND]
    video = load_video("sample:carphone", FrameSelection(max_frames=12, downscale=2))
    kept, held = holdout_split(video.num_frames, 3)
    expected = sum(psnr(blend(video.frames, kept, i) / 255.0, video.frames[i].float() / 255.0) for i in held) / len(held)
    assert results[1].metrics["psnr"] == pytest.approx(expected, abs=1e-4)
    assert "interpolation of held-out frames (1 in 3)" in (tmp_path / "compare.md").read_text()


@pytest.mark.parametrize(
    "overrides,message",
    [({"methods": ("nvp", "nope")}, "unknown method(s) nope"), ({"metrics": ("psnr", "vmaf")}, "unknown metric(s) vmaf")],
)
def test_compare_rejects_bad_flags_with_one_line(tmp_path, overrides, message) -> None:
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")):
        main(CompareConfig(**CLIP, output_dir=tmp_path, **overrides))
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_compare_inpainting_mode_scores_masked_pixels_and_median_fill(tmp_path) -> None:
    config = CompareConfig(**CLIP, methods=("ngp-video",), steps=30, mask="box", eval_frames=4, metrics=("psnr",), output_dir=tmp_path)
    results = main(config)
    assert [r.name for r in results] == ["ngp-video", "temporal median fill"]
    for result in results:
        assert {"psnr", "psnr_masked", "psnr_known"} <= set(result.metrics)
    fill = results[1].metrics
    # The median fill keeps every known pixel as it is and only guesses the box.
    assert fill["psnr_known"] == float("inf") and fill["psnr_masked"] < 40
    assert "inpainting (mask box)" in (tmp_path / "compare.md").read_text()
