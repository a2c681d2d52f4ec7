"""nerfstudio data manager that samples training pixels from the uint8 video instead of caching float images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Type

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader, RandIndicesEvalDataloader
from nerfstudio.model_components.ray_generators import RayGenerator

from nvp_nerfstudio.data.sampler import FramePixelSampler
from nvp_nerfstudio.fit import default_batch
from nvp_nerfstudio.plugin.dataparser import VideoDataParserConfig
from nvp_nerfstudio.plugin.dataset import VideoDataset


@dataclass
class VideoDataManagerConfig(VanillaDataManagerConfig):
    _target: Type = field(default_factory=lambda: VideoDataManager)
    dataparser: VideoDataParserConfig = field(default_factory=VideoDataParserConfig)
    train_num_rays_per_batch: Optional[int] = None  # type: ignore[assignment]
    """Pixels per training step; None picks 2**14 on a CPU and 2**20 on CUDA."""
    eval_num_rays_per_batch: int = 1 << 14
    whole_frames: bool = False
    """Batches of every pixel of a few random frames (fields that generate whole frames, like NeRV)."""
    seed: int = 42


class VideoDataManager(VanillaDataManager[VideoDataset]):
    config: VideoDataManagerConfig

    def setup_train(self) -> None:
        # Only training skips missing pixels: evaluation scores the inpainted ones too.
        self.train_frame_sampler = self._frame_sampler(self.train_dataset, self.config.seed, self.train_dataset.video.missing)
        self.train_ray_generator = RayGenerator(self.train_dataset.cameras.to(self.device))

    def setup_eval(self) -> None:
        self.eval_frame_sampler = self._frame_sampler(self.eval_dataset, self.config.seed + 1)
        self.eval_ray_generator = RayGenerator(self.eval_dataset.cameras.to(self.device))
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(input_dataset=self.eval_dataset, device=self.device)
        self.eval_dataloader = RandIndicesEvalDataloader(input_dataset=self.eval_dataset, device=self.device)

    def _frame_sampler(self, dataset: VideoDataset, seed: int, missing: Optional[torch.Tensor] = None) -> FramePixelSampler:
        return FramePixelSampler(
            dataset.video.frames, dataset.frame_indices, self.device, seed, self.config.whole_frames, missing
        )

    def sampler_states(self) -> Dict[str, torch.Tensor]:
        """The pixel samplers' generator states, for a checkpoint."""
        return {"train": self.train_frame_sampler.generator.get_state(), "eval": self.eval_frame_sampler.generator.get_state()}

    def set_sampler_states(self, states: Dict[str, torch.Tensor]) -> None:
        self.train_frame_sampler.generator.set_state(states["train"])
        self.eval_frame_sampler.generator.set_state(states["eval"])

    def get_train_rays_per_batch(self) -> int:
        if self.config.train_num_rays_per_batch is not None:
            return self.config.train_num_rays_per_batch
        return default_batch(self.device)

    def get_eval_rays_per_batch(self) -> int:
        return self.config.eval_num_rays_per_batch

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        return self._next(self.train_frame_sampler, self.train_ray_generator, self.get_train_rays_per_batch())

    def next_eval(self, step: int) -> Tuple[RayBundle, Dict]:
        self.eval_count += 1
        return self._next(self.eval_frame_sampler, self.eval_ray_generator, self.get_eval_rays_per_batch())

    @staticmethod
    def _next(sampler: FramePixelSampler, ray_generator: RayGenerator, num: int) -> Tuple[RayBundle, Dict]:
        indices, rgb = sampler.sample(num)
        ray_bundle = ray_generator(indices)
        # The pixel centres themselves, as the core loop trains on them: the model need not intersect these rays.
        ray_bundle.metadata["xyt"] = sampler.coordinates(indices)
        return ray_bundle, {"image": rgb, "indices": indices}
