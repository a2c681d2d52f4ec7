"""The registered nerfstudio methods: one per row of `nvp_nerfstudio.methods.METHODS`, identical but for the field.

NVP-S and NVP-L follow the paper (Kim et al., NeurIPS 2022): latent keyframes of 16 dense levels
from resolution 16 with 2 (S) or 4 (L) features, a modulated SIREN of 3 layers x 128, AdamW at 1e-2
with weight decay 1e-3 and cosine decay to 1e-5 (Adam's beta2 and eps are instant-ngp's: see
nvp_nerfstudio/methods.py). The reference code's coarse per-frame 3D feature grid is a multi-resolution hash grid
over (x, y, t) here (see the README). `nvp-fast` is NVP-S sized for CPUs: a 32-wide MLP, 8 keyframe
levels and a 3D hash grid with 4x the entries whose finest level has a vertex per pixel and per frame.
"""

from __future__ import annotations

from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from nvp_nerfstudio.methods import METHODS
from nvp_nerfstudio.plugin.datamanager import VideoDataManagerConfig
from nvp_nerfstudio.plugin.model import VideoModelConfig
from nvp_nerfstudio.plugin.training import VideoTrainerConfig, paper_optimizers


def video_method(name: str, steps: int = 20000) -> MethodSpecification:
    """A trainer for one video field; everything but the field (and its learning rate) is shared."""
    method = METHODS[name]
    config = VideoTrainerConfig(
        method_name=name,
        max_num_iterations=steps,
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_eval_all_images=100000,
        steps_per_save=2000,
        save_only_latest_checkpoint=True,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=VideoDataManagerConfig(whole_frames=method.field._target.trains_on_whole_frames),
            model=VideoModelConfig(field=method.field),
        ),
        optimizers=paper_optimizers(lr=method.lr, rate=method.field.rate is not None),
        vis="viewer",
    )
    return MethodSpecification(config=config, description=method.description)


nvp = video_method("nvp")
nvp_large = video_method("nvp-large")
nvp_fast = video_method("nvp-fast")
nvp_c = video_method("nvp-c")
nvp_paper = video_method("nvp-paper")
siren_video = video_method("siren-video")
ffn_video = video_method("ffn-video")
ngp_video = video_method("ngp-video")
kplanes_video = video_method("kplanes-video")
nerv_video = video_method("nerv-video")
