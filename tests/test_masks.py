"""Inpainting masks: generated and read from video, kept out of training, scored apart, and the median-fill baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import moving_gradient, write_clip

from nvp_nerfstudio.data.masks import generated_mask, load_mask, temporal_median_fill
from nvp_nerfstudio.data.sampler import FramePixelSampler
from nvp_nerfstudio.data.video import FrameSelection, VideoInputError, load_video
from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.plugin.dataparser import VideoDataParserConfig


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mkv", moving_gradient(9, 16, 24), codec="ffv1", pix_fmt="bgr0")


def test_generated_masks_cover_what_they_promise() -> None:
    box = generated_mask("box", 3, 16, 24)
    assert box[:, 6:10, 9:15].all() and box.sum() == 3 * 4 * 6  # the middle quarter of each side
    logo = generated_mask("logo", 3, 16, 24)
    assert logo[:, :, :12].sum() == 0 and 0 < logo.sum() < box.sum()  # a small box on the right
    strokes = generated_mask("strokes", 5, 64, 96, seed=1)
    assert not torch.equal(strokes[0], strokes[1])  # new strokes every frame
    assert torch.equal(strokes, generated_mask("strokes", 5, 64, 96, seed=1))
    assert 0.02 < strokes.float().mean() < 0.6


def test_mask_video_goes_through_the_same_frame_selection(clip: Path, tmp_path: Path) -> None:
    white_box = np.zeros((9, 16, 24, 3), dtype=np.uint8)
    white_box[:, 2:6, 4:10] = 255
    mask_clip = write_clip(tmp_path / "mask.mkv", white_box, codec="ffv1", pix_fmt="bgr0")
    selection = FrameSelection(start=1, stride=2, downscale=2)
    video = load_video(clip, selection)
    mask = load_mask(str(mask_clip), video, selection)
    assert mask.shape == (4, 8, 12) and mask[:, 1:3, 2:5].all() and mask.sum() == 4 * 2 * 3
    with pytest.raises(VideoInputError, match="give a mask of the video's length and size"):
        load_mask(str(mask_clip), load_video(clip, FrameSelection(max_frames=3)))
    everything = write_clip(tmp_path / "white.mkv", np.full((9, 16, 24, 3), 255, np.uint8), codec="ffv1", pix_fmt="bgr0")
    with pytest.raises(VideoInputError, match="covers every pixel"):
        load_mask(str(everything), load_video(clip))


def test_sampler_never_draws_missing_pixels_and_keeps_its_batch_size() -> None:
    frames = torch.randint(0, 256, (4, 16, 24, 3), dtype=torch.uint8)
    missing = generated_mask("strokes", 4, 16, 24, seed=3)
    sampler = FramePixelSampler(frames, [0, 2, 3], seed=0, missing=missing)
    indices, rgb = sampler.sample(5000)
    assert indices.shape == (5000, 3)
    frame = torch.tensor([0, 2, 3])[indices[:, 0]]
    assert not missing[frame, indices[:, 1], indices[:, 2]].any()
    torch.testing.assert_close(rgb, frames[frame, indices[:, 1], indices[:, 2]].float() / 255)
    whole = FramePixelSampler(frames, [1], seed=0, whole_frames=True, missing=missing)
    assert len(whole.sample(16 * 24)[0]) == int((~missing[1]).sum())  # one frame, its known pixels only
    with pytest.raises(ValueError, match="no pixel"):
        FramePixelSampler(frames, [0], missing=torch.ones(4, 16, 24, dtype=torch.bool))


@pytest.mark.parametrize("missing_fraction", [0.06, 0.4])
def test_masked_sampler_is_uniform_over_known_pixels(missing_fraction: float) -> None:
    """Chi-square over frames and over rows: each gets samples in proportion to its known pixels, however
    the mask spreads them and whatever order the batch is handed out in."""
    from scipy.stats import chi2

    frames = torch.zeros(20, 16, 24, 3, dtype=torch.uint8)
    # More missing in later frames and lower rows, so a sampler that favours early pixels shows.
    weight = torch.linspace(0.5, 1.5, 20)[:, None, None] * torch.linspace(0.5, 1.5, 16)[None, :, None]
    missing = torch.rand(20, 16, 24, generator=torch.Generator().manual_seed(1)) < missing_fraction * weight
    known = ~missing
    sampler = FramePixelSampler(frames, range(20), seed=0, missing=missing)
    draws = torch.cat([sampler.sample(4096)[0] for _ in range(100)])
    for axis, dims in ((0, (1, 2)), (1, (0, 2))):
        observed = torch.bincount(draws[:, axis], minlength=known.shape[axis]).double()
        expected = known.sum(dims).double() / known.sum() * len(draws)
        statistic = ((observed - expected) ** 2 / expected).sum().item()
        assert chi2.sf(statistic, len(observed) - 1) > 1e-3, (axis, (observed / expected).tolist())


def test_temporal_median_fill_keeps_known_pixels_and_fills_from_other_frames() -> None:
    frames = torch.zeros(5, 2, 3, 3, dtype=torch.uint8)
    frames[:, 0, 0] = torch.tensor([10, 20, 200, 30, 40], dtype=torch.uint8)[:, None]
    frames[:, 1, 2] = 50
    missing = torch.zeros(5, 2, 3, dtype=torch.bool)
    missing[2, 0, 0] = True  # its neighbours in time know 10, 20, 30, 40
    missing[:, 1, 2] = True  # missing in every frame: the frame's mean known colour
    filled = temporal_median_fill(frames, missing, rows_per_chunk=1)
    assert filled[2, 0, 0, 0] * 255 == pytest.approx(20)  # torch's nanmedian takes the lower middle
    expected_mean = (frames[2].float().sum(dim=(0, 1)) - 200 - 50) / 4 / 255  # 4 known pixels left in frame 2
    torch.testing.assert_close(filled[2, 1, 2], expected_mean)
    known = ~missing
    torch.testing.assert_close(filled[known], frames[known].float() / 255)


def test_psnr() -> None:
    truth = torch.zeros(2, 2, 3)
    prediction = truth.clone()
    prediction[0, 0] = 0.1
    region = torch.tensor([[True, False], [False, False]])
    assert psnr(prediction, truth, region) == pytest.approx(20.0)
    assert psnr(prediction, truth, ~region) == float("inf")
    assert psnr(prediction, truth, torch.zeros(2, 2, dtype=torch.bool)) is None


def test_data_parser_mask_flag(clip: Path) -> None:
    parser = VideoDataParserConfig(data=clip, mask="logo").setup()
    video = parser.get_dataparser_outputs("train").metadata["video"]
    torch.testing.assert_close(video.missing, generated_mask("logo", 9, 16, 24))
    with pytest.raises(SystemExit, match="mask 'blob' is neither a mask video or folder nor one of box, strokes, logo"):
        VideoDataParserConfig(data=clip, mask="blob").setup().get_dataparser_outputs("train")


def test_eval_scores_masked_and_known_pixels_apart(clip: Path) -> None:
    from nvp_nerfstudio.plugin.dataset import VideoDataset
    from nvp_nerfstudio.plugin.model import VideoModelConfig

    outputs = VideoDataParserConfig(data=clip, mask="box").setup().get_dataparser_outputs("test")
    dataset = VideoDataset(outputs)
    data = dataset.get_data(3)
    torch.testing.assert_close(data["missing"], generated_mask("box", 9, 16, 24)[3])
    model = VideoModelConfig(perceptual_metrics_every=1000).setup(scene_box=outputs.scene_box, num_train_data=9, metadata=outputs.metadata)
    model.eval()
    rgb = torch.rand(16, 24, 3)
    metrics, _ = model.get_image_metrics_and_images({"rgb": rgb}, data)
    assert metrics["psnr_masked"] == pytest.approx(psnr(rgb, data["image"], data["missing"]))
    assert metrics["psnr_known"] == pytest.approx(psnr(rgb, data["image"], ~data["missing"]))
    unmasked = VideoDataset(VideoDataParserConfig(data=clip).setup().get_dataparser_outputs("test"))
    assert "missing" not in unmasked.get_data(3)
