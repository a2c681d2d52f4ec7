"""The video model shared by every video field: rays meet the video plane z = 0 at (x, y, t)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerSlider
from torch import Tensor
from torch.nn import Parameter

from nvp_nerfstudio.data.fingerprint import SourceFingerprint
from nvp_nerfstudio.data.video import VideoInputError
from nvp_nerfstudio.fields.base import VideoFieldConfig, VideoShape, pixel_coordinates
from nvp_nerfstudio.fields.nvp import NVPFieldConfig
from nvp_nerfstudio.fit import training_losses, warn_of_a_missed_target
from nvp_nerfstudio.metrics import LpipsWeightsError, frame_metrics, psnr
from nvp_nerfstudio.plugin import set_up_process
from nvp_nerfstudio.plugin.viewer import MAX_STILL_RENDER_SIDE, VideoViewerControl, rendering_still_view, uninterrupted
from nvp_nerfstudio.rate import parameter_groups, rate_metrics, set_training_progress


def pixels_read(centres: Float[Tensor, "n"], size: int) -> Tuple[int, int]:
    """First and last pixel of a row (or column) of `size` that bilinear interpolation at these positions, in
    pixel-centre units, reads."""
    first = int(centres.min().floor().clamp(0, size - 1))
    last = int((centres.max().floor() + 1).clamp(0, size - 1))
    return first, last


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
        self.source_fingerprint = SourceFingerprint.of(video)
        self.video_shape = VideoShape.of(video, self.config.field)
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
        """A field trained for rate switches from noise to rounding part-way through the run (rate.py): through the
        run as the learning-rate schedule counts it, which a resumed run takes from the run it resumes (a resume
        trains --max-num-iterations more steps)."""
        schedule = training_callback_attributes.optimizers.schedulers["fields"].lr_lambdas[0]
        total = getattr(schedule, "total_steps", max(training_callback_attributes.trainer.config.max_num_iterations, 1))
        return [
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], lambda step: set_training_progress(self.field, step / total)
            ),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN], lambda step: warn_of_a_missed_target(self.field)),
        ]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return parameter_groups(self.field)

    def get_extra_state(self) -> Dict[str, Any]:
        """Saved in every checkpoint: the fingerprint of the frames the run trains on, and where their shots begin
        (a field built per shot is rebuilt from it without the frames: plugin/runs.py)."""
        return {"source": self.source_fingerprint.to_dict(), "shots": list(self.video_shape.shot_starts)}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        """A loaded run (ns-eval, nvp-render, nvp-compress, a resume) refuses another video put at its source's path."""
        try:
            SourceFingerprint.from_dict(state["source"]).check_video(self.video, "the run")
        except VideoInputError as err:
            raise SystemExit(f"error: {err}") from None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Always strict: nerfstudio retries a failed load non-strictly, which would leave the field partly
        at its random initialisation and rendering noise with no warning."""
        # torch's key of get_extra_state; a run written before fingerprints has none, and nothing to check against.
        state_dict = {"_extra_state": self.get_extra_state(), **state_dict}
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
        return {
            "rgb": rgb.reshape(*batch_shape, 3),
            "depth": depth.reshape(*batch_shape, 1),
            "accumulation": inside.to(rgb.dtype).reshape(*batch_shape, 1),
        }

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        """An image of the video plane (viewer, ns-eval, ns-render): the frame's pixels, sampled where the rays meet it.

        The frame is evaluated at pixel centres, as ns-eval scores it, never between them; the outputs are the
        reconstruction, the source frame ("ground_truth") and their per-pixel error, which the viewer lists under
        "Output type".
        """
        xyt, inside, distance = self.plane_hits(camera, obb_box)
        finest, coarsest = self.source_pixels_per_image_pixel(xyt, inside)
        if coarsest > 1.0 and rendering_still_view():
            scale = min(coarsest, MAX_STILL_RENDER_SIDE / max(inside.shape))
            if scale > 1.0:
                # In place: the viewer composites depth with rays of this same camera.
                camera.rescale_output_resolution(scale, scale_rounding_mode="ceil")
                xyt, inside, distance = self.plane_hits(camera, obb_box)
                finest, _ = self.source_pixels_per_image_pixel(xyt, inside)
        height, width = inside.shape
        background = torch.tensor(self.config.background_color, device=xyt.device)
        rgb = background.expand(height, width, 3).clone()
        truth = rgb.clone()
        error = torch.zeros(height, width, 1, device=xyt.device)
        if bool(inside.any()):
            # A frame sampled more sparsely than its pixels is evaluated on a coarser grid of pixel centres.
            detail = 1.0 if finest <= 1.0 else 1.0 / finest
            rgb[inside], truth[inside], error[inside] = self.sample_frame(xyt[inside], detail)
        return {
            "rgb": rgb,
            "ground_truth": truth,
            "error": error,
            "depth": torch.where(inside, distance, torch.zeros_like(distance))[..., None],
            "accumulation": inside[..., None].to(rgb.dtype),
        }

    def plane_hits(
        self, camera: Cameras, obb_box: Optional[OrientedBox]
    ) -> Tuple[Float[Tensor, "h w 3"], Bool[Tensor, "h w"], Float[Tensor, "h w"]]:
        """plane_coordinates of the rays of every pixel of the camera's image."""
        rays = camera.generate_rays(camera_indices=0, keep_shape=True, obb_box=obb_box).to(self.device)
        xyt, inside, distance = self.plane_coordinates(rays)
        height, width = rays.shape
        return xyt.view(height, width, 3), inside.view(height, width), distance.view(height, width)

    def source_pixels_per_image_pixel(self, xyt: Float[Tensor, "h w 3"], inside: Bool[Tensor, "h w"]) -> Tuple[float, float]:
        """Least and greatest distance, in source pixels, between the plane points of neighbouring image pixels.

        Above 1 the image has fewer pixels than the video over that part of the frame. (1, 1) with fewer than two
        neighbouring pixels on the frame.
        """
        shape = self.video_shape
        pixels = xyt[..., :2] * torch.tensor([shape.width, shape.height], device=xyt.device)
        steps = torch.cat(
            [
                (pixels[:, 1:] - pixels[:, :-1]).norm(dim=-1)[inside[:, 1:] & inside[:, :-1]],
                (pixels[1:] - pixels[:-1]).norm(dim=-1)[inside[1:] & inside[:-1]],
            ]
        )
        if steps.numel() == 0:
            return 1.0, 1.0
        return steps.min().item(), steps.max().item()

    def sample_frame(
        self, xyt: Float[Tensor, "n 3"], detail: float
    ) -> Tuple[Float[Tensor, "n 3"], Float[Tensor, "n 3"], Float[Tensor, "n 1"]]:
        """Reconstruction, source and error at points of one frame time, from the frame at its pixel centres (at
        `detail` times its resolution), evaluated over the part the points cover.

        Reconstruction and source are interpolated bilinearly; the error is taken per pixel (nearest), so the largest
        error in view, by which the viewer scales its colours, is that of a pixel.
        """
        shape = self.video_shape
        grid_width, grid_height = max(1, round(shape.width * detail)), max(1, round(shape.height * detail))
        # Pixel-centre units of the grid, and the window of grid pixels (with their bilinear neighbours) in use.
        grid_x, grid_y = xyt[:, 0] * grid_width - 0.5, xyt[:, 1] * grid_height - 0.5
        first_column, last_column = pixels_read(grid_x, grid_width)
        first_row, last_row = pixels_read(grid_y, grid_height)
        rows, columns = torch.meshgrid(
            torch.arange(first_row, last_row + 1, device=xyt.device),
            torch.arange(first_column, last_column + 1, device=xyt.device),
            indexing="ij",
        )
        points = pixel_coordinates(rows, columns, xyt[0, 2], grid_height, grid_width).reshape(-1, 3)
        chunk = self.config.eval_num_rays_per_chunk
        rgb = torch.cat([uninterrupted(self.field, points[start : start + chunk]) for start in range(0, len(points), chunk)])
        rgb = rgb.clamp(0.0, 1.0)
        truth = self.ground_truth(points, torch.ones(len(points), dtype=torch.bool, device=points.device))
        error = (rgb - truth).abs().mean(-1, keepdim=True)
        window = torch.cat([rgb, truth, error], dim=-1).view(*rows.shape, 7).permute(2, 0, 1)[None]
        # grid_sample's [-1, 1] spans the window's outer pixel edges (align_corners=False).
        where = torch.stack(
            [(grid_x + 0.5 - first_column) / rows.shape[1], (grid_y + 0.5 - first_row) / rows.shape[0]], dim=-1
        ) * 2 - 1
        where = where.view(1, 1, -1, 2)
        smooth = F.grid_sample(window[:, :6], where, mode="bilinear", padding_mode="border", align_corners=False)
        per_pixel = F.grid_sample(window[:, 6:], where, mode="nearest", padding_mode="border", align_corners=False)
        smooth, per_pixel = smooth[0, :, 0].T, per_pixel[0, :, 0].T
        return smooth[:, :3], smooth[:, 3:], per_pixel

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
        # Under rate control, the file's estimated size and lmbda as the last training step left them.
        rate = rate_metrics(self.field) if self.training else {}
        return {"psnr": torch.tensor(psnr(outputs["rgb"].detach().clamp(0, 1), image)), **{name: torch.tensor(value) for name, value in rate.items()}}

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
