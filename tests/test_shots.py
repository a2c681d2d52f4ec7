"""Per-shot keyframes: a video's scene cuts are found (PySceneDetect), NVP built with keyframes_per_shot gives each
shot an xy plane of its own that only its frames read, and the shots travel with the field: into checkpoints (a run
loads without its frames), .nvp files and nvp-long segments."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.container import CompressedFileError
from nvp_nerfstudio.compression.field_codec import CodecOptions, VideoInfo, compress, decode
from nvp_nerfstudio.data.shots import shot_starts
from nvp_nerfstudio.data.video import FrameSelection, load_video
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fields.nvp import ShotPlanes
from nvp_nerfstudio.methods import METHODS, NVP_S
from nvp_nerfstudio.rendering import render_frame


@pytest.fixture(scope="module")
def two_shots() -> torch.Tensor:
    """20 frames of carphone, then 16 of bikes cut to carphone's size: one cut, at frame 20 (the detector's
    shortest shot is 15 frames)."""
    carphone = load_video("sample:carphone", FrameSelection(max_frames=20)).frames
    bikes = load_video("sample:bikes", FrameSelection(max_frames=16)).frames[:, 60:204, 200:376]
    return torch.cat([carphone, bikes])


def test_a_cut_between_two_real_clips_is_found_and_a_single_shot_has_none(two_shots: torch.Tensor) -> None:
    assert shot_starts(two_shots) == (0, 20)
    assert shot_starts(two_shots[:20]) == (0,)
    assert shot_starts(load_video("sample:bikes", FrameSelection(downscale=2)).frames) == (0, 30, 76, 137, 187, 242)  # its five cuts


def test_each_shot_reads_its_own_xy_plane_only() -> None:
    shape = VideoShape(10, 24, 32, (0, 4, 7))
    field = replace(NVP_S, keyframes_per_shot=True).setup(shape=shape)
    planes = field.keyframes["xy"]
    assert isinstance(planes, ShotPlanes) and len(planes.planes) == 3
    assert not isinstance(NVP_S.setup(shape=shape).keyframes["xy"], ShotPlanes)  # the paper's NVP-S: one plane
    field.eval()
    before = [render_frame(field, frame / 9, 24, 32) for frame in range(10)]
    with torch.no_grad():
        planes.planes[1].params.add_(0.5)  # the second shot's plane: frames 4, 5, 6
    after = [render_frame(field, frame / 9, 24, 32) for frame in range(10)]
    changed = [frame for frame in range(10) if not torch.equal(before[frame], after[frame])]
    assert changed == [4, 5, 6]


def test_shots_travel_in_the_nvp_file_and_a_malformed_list_is_refused() -> None:
    shape = VideoShape(10, 24, 32, (0, 6))
    field = METHODS["nvp-fast"].field.setup(shape=shape).eval()
    assert field.config.keyframes_per_shot  # nvp-fast builds per shot
    stored = compress(field, VideoInfo("nvp-fast", 25.0, FrameSelection()), CodecOptions(mlp_bits=32))
    decoded, _ = decode(container.from_bytes(container.to_bytes(stored), "x"), "x")
    assert decoded.shape == shape and len(decoded.keyframes["xy"].planes) == 2
    for shots in ([6], [0, 6, 6], [0, 10], [0, 2.5]):
        stored.meta["video"]["shots"] = shots
        with pytest.raises(CompressedFileError, match="shot list is malformed"):
            decode(container.from_bytes(container.to_bytes(stored), "x"), "x")


def test_an_ns_train_run_with_shots_compresses_and_decodes_without_its_frames(tmp_path, two_shots: torch.Tensor) -> None:
    """ns-train nvp-fast on a clip with a cut: the checkpoint holds the shots, so nvp-compress (which streams the
    source without holding it) rebuilds the per-shot field, and the .nvp file decodes to it."""
    from conftest import train_tiny_run, write_clip

    from nvp_nerfstudio.compression.field_codec import decompress
    from nvp_nerfstudio.scripts import compress as compress_command

    clip = write_clip(tmp_path / "two_shots.mp4", two_shots.numpy(), crf="0")
    config = train_tiny_run(tmp_path / "outputs", str(clip), "--max-num-iterations", "3", "--pipeline.datamanager.dataparser.max-frames", "1000",
                            method="nvp-fast")
    checkpoint = torch.load(next(config.parent.glob("nerfstudio_models/*.ckpt")), map_location="cpu", weights_only=False)
    assert checkpoint["pipeline"]["_model._extra_state"]["shots"] == [0, 20]
    compress_command.main(compress_command.CompressConfig(config, tmp_path / "clip.nvp"))
    field = decompress(tmp_path / "clip.nvp")
    assert field.shape.shot_starts == (0, 20) and len(field.keyframes["xy"].planes) == 2
