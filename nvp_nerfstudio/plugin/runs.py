"""Loading a run that `ns-train` wrote: its field, what a decoder needs about its video, its frames."""

from __future__ import annotations

from pathlib import Path

import torch

from nvp_nerfstudio.compression.field_codec import VideoInfo
from nvp_nerfstudio.data.fingerprint import SourceFingerprint
from nvp_nerfstudio.data.video import FrameSelection, VideoFrames, VideoInputError, open_frames
from nvp_nerfstudio.fields.base import VideoField, VideoShape

FIELD_PREFIX = "_model.field."
"""The field's entries in a checkpoint's pipeline state."""


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
        parser.selection(),
        pipeline.model.source_fingerprint,
    )
    return pipeline.model.field.eval(), info, video, checkpoint


def load_field(load_config: Path, device: str = "cpu") -> tuple[VideoField, VideoInfo, Path]:
    """A trained run's field (eval mode), what the decoder needs about its video, and its checkpoint, in the
    memory of the field and one frame: the source is decoded as a stream, not held (load_run holds every frame),
    and checked against the fingerprint the checkpoint holds, as ns-eval checks it."""
    import yaml

    from nvp_nerfstudio.plugin import allow_nerfstudio_checkpoints

    allow_nerfstudio_checkpoints()
    try:
        config = yaml.load(load_config.read_text(), Loader=yaml.Loader)
    except (yaml.YAMLError, ValueError):  # ValueError: not text
        config = None
    if not hasattr(config, "get_checkpoint_dir"):
        raise SystemExit(f"error: {load_config} is not the config.yml of an ns-train run: pass RUN/config.yml")
    checkpoints = config.get_checkpoint_dir()
    if not checkpoints.is_dir():
        raise SystemExit(f"error: {checkpoints} does not exist: the run saved no checkpoint (pass another run)")
    config.load_dir = checkpoints  # VideoTrainerConfig picks the newest checkpoint that loads
    checkpoint = config.load_dir / f"step-{config.load_step:09d}.ckpt"
    state = torch.load(checkpoint, map_location="cpu")["pipeline"]
    extra = state.get("_model._extra_state", {})
    fingerprint = SourceFingerprint.from_dict(extra.get("source"))
    datamanager = config.pipeline.datamanager
    parser = datamanager.dataparser
    selection = parser.selection()  # as trained: a kept prefix of a truncated video too
    source = str(datamanager.data or parser.data)
    num_frames, width, height, fps = source_frames(source, selection, fingerprint)
    field = config.pipeline.model.field.setup(shape=VideoShape(num_frames, height, width, tuple(extra.get("shots", (0,)))))
    weights = {key[len(FIELD_PREFIX) :]: value for key, value in state.items() if key.startswith(FIELD_PREFIX)}
    missing, unexpected = field.load_state_dict(weights, strict=False)
    if missing or unexpected:
        differing = sorted(missing + unexpected)
        raise SystemExit(
            f"error: {checkpoint} does not fit this {type(field).__name__} ({len(differing)} parameter names differ, e.g. "
            f"{differing[0]}): it was written by another version of nvp-nerfstudio or for another method"
        )
    return field.to(device).eval(), VideoInfo(config.method_name, fps, selection, fingerprint), checkpoint


def source_frames(source: str, selection: FrameSelection, fingerprint: SourceFingerprint | None) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of the source's selection, decoded one frame at a time (only the fingerprinted
    frames converted to RGB); VideoInputError if it is not the fingerprinted video."""
    stream = open_frames(source, selection)
    if fingerprint is not None and (stream.width, stream.height) != (fingerprint.width, fingerprint.height):
        fingerprint.check_size(source, stream.expected_frames, stream.width, stream.height, "the run")
    count = 0
    for count, (_, rgb) in enumerate(stream.decoded, start=1):
        if fingerprint is not None and fingerprint.hashes_frame(count - 1):
            fingerprint.check_frame(source, count - 1, rgb(), "the run")
    if fingerprint is not None:
        fingerprint.check_size(source, count, stream.width, stream.height, "the run")
    if count == 0:
        raise VideoInputError(f"{source} holds no frames in the run's selection")
    return count, stream.width, stream.height, stream.fps
