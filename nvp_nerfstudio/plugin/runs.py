"""Loading a run that `ns-train` wrote: its field, what a decoder needs about its video, its frames."""

from __future__ import annotations

from pathlib import Path

from nvp_nerfstudio.compression.field_codec import VideoInfo
from nvp_nerfstudio.data.video import FrameSelection, VideoFrames
from nvp_nerfstudio.fields.base import VideoField


def check_run(load_config: Path) -> None:
    if not load_config.is_file():
        raise SystemExit(f"error: {load_config} does not exist: pass the config.yml of a trained run")


def load_run(load_config: Path) -> tuple[VideoField, VideoInfo, VideoFrames, Path]:
    """A trained run's field (eval mode), what the decoder needs about its video, the frames it trained on
    (its frame selection of the source) and its checkpoint."""
    from nerfstudio.utils.eval_utils import eval_setup

    trainer_config, pipeline, checkpoint, _ = eval_setup(load_config, test_mode="test")
    parser = pipeline.datamanager.dataparser.config
    video = pipeline.datamanager.eval_dataset.video
    info = VideoInfo(
        trainer_config.method_name,
        video.fps,
        FrameSelection(parser.start_frame, parser.end_frame, parser.stride, parser.max_frames, parser.downscale),
        pipeline.model.source_fingerprint,
    )
    return pipeline.model.field.eval(), info, video, checkpoint
