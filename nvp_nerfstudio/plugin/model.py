"""The video model shared by every video field: rays meet the video plane z = 0 at (x, y, t)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Type

import torch
from jaxtyping import Bool, Float
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerSlider
from torch import Tensor
from torch.nn import Parameter

from nvp_nerfstudio.fields.base import VideoFieldConfig, VideoShape
from nvp_nerfstudio.fields.nvp import NVPFieldConfig
from nvp_nerfstudio.fit import training_losses
from nvp_nerfstudio.metrics import LpipsWeightsError, frame_metrics, psnr
from nvp_nerfstudio.plugin import set_up_process
from nvp_nerfstudio.plugin.viewer import VideoViewerControl
from nvp_nerfstudio.rate import parameter_groups, set_training_progress


@dataclass
class VideoModelConfig(ModelConfig):
    _target: Type = field(default_factory=lambda: VideoModel)
    field: VideoFieldConfig = field(default_factory=NVPFieldConfig)
    """The video field f(x, y, t) -> RGB: the only part that differs between methods."""
    background_color: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Colour of rays that miss the video plane (the viewer only)."""
    enable_collider: bool = False
    eval_num_rays_per_chunk: int = 1 << 16
    perceptual_metrics_every: Optional[int] = None
    """Evaluation scores MS-SSIM, FLIP and LPIPS on every k-th frame only (together ~1 s a 640x272 frame on a
    2-core CPU); the frames between repeat the last scored frame. None: every frame on CUDA, every 10th on a CPU."""


class VideoModel(Model):
    config: VideoModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        set_up_process()
        video = self.kwargs["metadata"]["video"]
        self.video = video
        self.video_shape = VideoShape(video.num_frames, video.height, video.width)
        self.field = self.config.field.setup(shape=self.video_shape)
        longest = max(video.width, video.height)
        # World extent of the plane, matching the data parser's cameras (longest side 1).
        self.plane_size = (video.width / longest, video.height / longest)
        self.viewer_control = VideoViewerControl(self.plane_size)
        self.sampled_metric_names = ("ms_ssim", "flip", "lpips")
        self.last_sampled_metrics: Tuple[int, Dict[str, float]] = (-1, {})  # (frame index, its sampled metrics)
        last_frame = max(video.num_frames - 1, 1)
        self.frame_slider = ViewerSlider(
            "Frame", 0, 0, last_frame, 1, hint="Source frame to show (moves the Time slider to it)",
            cb_hook=lambda slider: self.viewer_control.show_time(slider.value / last_frame),
        )

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """A field trained for rate switches from noise to rounding part-way through the run (rate.py)."""
        total = max(training_callback_attributes.trainer.config.max_num_iterations, 1)
        return [
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], lambda step: set_training_progress(self.field, step / total)
            )
        ]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return parameter_groups(self.field)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Always strict: nerfstudio retries a failed load non-strictly, which would leave the field partly
        at its random initialisation and rendering noise with no warning."""
        expected, given = set(self.state_dict()), set(state_dict)
        if expected != given:
            differing = sorted(expected ^ given)
            raise SystemExit(
                f"error: the checkpoint does not fit this {type(self.field).__name__} ({len(differing)} parameter names "
                f"differ, e.g. {differing[0]}): it was written by another version of nvp-nerfstudio or for another "
                "method; load it with that version, or train again"
            )
        return super().load_state_dict(state_dict, strict=True, assign=assign)

    def plane_coordinates(self, ray_bundle: RayBundle) -> Tuple[Float[Tensor, "n 3"], Bool[Tensor, "n"], Float[Tensor, "n"]]:
        """(x, y, t) in [0, 1]^3 where each ray meets z = 0, whether it does inside the frame, and at what distance."""
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        dz = directions[:, 2]
        parallel = dz.abs() < 1e-9
        distance = -origins[:, 2] / torch.where(parallel, torch.ones_like(dz), dz)
        hit = origins + distance[:, None] * directions
        x = hit[:, 0] / self.plane_size[0] + 0.5
        y = 0.5 - hit[:, 1] / self.plane_size[1]  # image rows run down, world y up
        if ray_bundle.times is None:
            t = torch.zeros_like(x)
        else:
            t = ray_bundle.times.reshape(-1).to(x)
        inside = ~parallel & (distance > 0) & (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
        return torch.stack([x, y, t.clamp(0.0, 1.0)], dim=-1), inside, distance

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        batch_shape = ray_bundle.origins.shape[:-1]
        xyt, inside, distance = self.plane_coordinates(ray_bundle)
        if "xyt" in ray_bundle.metadata:  # a data manager's batch of pixels: their centres exactly, as the core loop
            xyt = ray_bundle.metadata["xyt"].reshape(-1, 3).to(xyt)
        rgb = torch.tensor(self.config.background_color, device=xyt.device).expand(len(xyt), 3)
        if bool(inside.all()):
            rgb = self.field(xyt)
        elif bool(inside.any()):
            rgb = rgb.clone()
            rgb[inside] = self.field(xyt[inside])
        depth = torch.where(inside, distance, torch.zeros_like(distance))
        outputs = {
            "rgb": rgb.reshape(*batch_shape, 3),
            "depth": depth.reshape(*batch_shape, 1),
            "accumulation": inside.to(rgb.dtype).reshape(*batch_shape, 1),
        }
        if not self.training:
            # The viewer's "Output type" list then offers the source frame and the error beside the reconstruction.
            truth = self.ground_truth(xyt, inside)
            outputs["ground_truth"] = truth.reshape(*batch_shape, 3)
            outputs["error"] = ((rgb.clamp(0, 1) - truth).abs().mean(-1, keepdim=True) * inside[:, None]).reshape(*batch_shape, 1)
        return outputs

    def nearest_frame(self, t: Tensor) -> Tensor:
        return torch.round(t * (self.video_shape.num_frames - 1)).long()

    def ground_truth(self, xyt: Float[Tensor, "n 3"], inside: Bool[Tensor, "n"]) -> Float[Tensor, "n 3"]:
        """The source pixel under each point (nearest frame, nearest pixel); background outside the frame."""
        frames = self.video.frames
        shape = self.video_shape
        column = (xyt[:, 0] * shape.width).long().clamp(0, shape.width - 1).cpu()
        row = (xyt[:, 1] * shape.height).long().clamp(0, shape.height - 1).cpu()
        truth = frames[self.nearest_frame(xyt[:, 2]).cpu(), row, column].to(xyt.device).float() / 255.0
        background = torch.tensor(self.config.background_color, device=xyt.device)
        return torch.where(inside[:, None], truth, background)

    def get_metrics_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        image = batch["image"].to(self.device)
        return {"psnr": torch.tensor(psnr(outputs["rgb"].detach().clamp(0, 1), image))}

    def get_loss_dict(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], metrics_dict: Dict[str, Tensor] | None = None
    ) -> Dict[str, Tensor]:
        image = batch["image"].to(self.device)
        return training_losses(self.field, outputs["rgb"], image)

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        image = batch["image"].to(self.device)
        rgb = outputs["rgb"].clamp(0.0, 1.0)
        error = (rgb - image).abs().mean(dim=-1, keepdim=True)
        # Per-frame metrics: ns-eval averages them over frames, as the paper reports PSNR.
        metrics = {**frame_metrics(rgb, image, ("psnr", "ssim")), **self.sampled_metrics(rgb, image, int(batch["image_idx"]))}
        if "missing" in batch:  # inpainting: the filled-in pixels and the known ones apart
            missing = batch["missing"].to(self.device)
            metrics["psnr_masked"] = psnr(rgb, image, missing)
            metrics["psnr_known"] = psnr(rgb, image, ~missing)
        images = {"img": torch.cat([image, rgb], dim=1), "error": colormaps.apply_colormap(error / error.max().clamp_min(1e-6))}
        return metrics, images

    def sampled_metrics(self, rgb: Float[Tensor, "h w 3"], image: Float[Tensor, "h w 3"], index: int) -> Dict[str, float]:
        """MS-SSIM, FLIP and LPIPS of every k-th frame, for the frames between the values of the last scored one.

        nerfstudio averages the metrics of the first frame over all frames and fails on a key missing from one, so
        each frame carries them: the average weights each scored frame by the frames it stands for.
        """
        every = self.config.perceptual_metrics_every or (1 if rgb.is_cuda else 10)
        last_index, metrics = self.last_sampled_metrics
        if index % every == 0 or last_index != index - 1:  # a new block, or frames not evaluated in order
            try:
                metrics = frame_metrics(rgb, image, self.sampled_metric_names)
            except LpipsWeightsError as err:  # offline without cached weights: evaluate (and train) on without LPIPS
                CONSOLE.print(f"Leaving LPIPS out: {err}", style="yellow", markup=False)
                self.sampled_metric_names = ("ms_ssim", "flip")
                metrics = frame_metrics(rgb, image, self.sampled_metric_names)
        self.last_sampled_metrics = (index, metrics)
        return {**metrics, "perceptual_metrics_every": float(every)}
