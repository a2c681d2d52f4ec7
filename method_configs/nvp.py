"""Every registered video method and its hyperparameters, in one table.

NVP-S and NVP-L follow the paper (Kim et al., NeurIPS 2022, Sec. 4 and Appendix): latent keyframes of
16 dense levels from resolution 16 with 2 (S) or 4 (L) features, a modulated SIREN of 3 layers x 128,
AdamW at 1e-2 with weight decay 1e-3 and cosine decay to 1e-5. The reference code's coarse per-frame
3D feature grid is a multi-resolution hash grid over (x, y, t) here (see the README).
"""

from __future__ import annotations

from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from method_configs.fields import NVP_L, NVP_S
from nvp_nerfstudio.data.datamanager import VideoDataManagerConfig
from nvp_nerfstudio.fields.base import VideoFieldConfig
from nvp_nerfstudio.model import VideoModelConfig
from nvp_nerfstudio.training import VideoTrainerConfig, paper_optimizers


def video_method(name: str, field: VideoFieldConfig, steps: int = 20000) -> VideoTrainerConfig:
    """A trainer for one video field; everything but the field is shared by all methods."""
    return VideoTrainerConfig(
        method_name=name,
        max_num_iterations=steps,
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_eval_all_images=100000,
        steps_per_save=2000,
        save_only_latest_checkpoint=True,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=VideoDataManagerConfig(),
            model=VideoModelConfig(field=field),
        ),
        optimizers=paper_optimizers(),
        vis="viewer",
    )


nvp = MethodSpecification(
    config=video_method("nvp", NVP_S),
    description="NVP-S: latent keyframes + 3D hash grid + modulated SIREN, a neural field of a video",
)
nvp_large = MethodSpecification(
    config=video_method("nvp-large", NVP_L),
    description="NVP-L: NVP with 4 features per level (higher quality, ~2x the parameters)",
)
