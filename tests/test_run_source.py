"""A run records a fingerprint of the frames it trained on (count, size, a hash of first, middle and last); ns-eval,
nvp-render, nvp-compress and nvp-decompress --reference refuse another video put at the source's path, in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import run_command, train_tiny_run, write_clip

from nvp_nerfstudio.data.video import FrameSelection, load_video
from nvp_nerfstudio.scripts import compress, decompress, render


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny run on clip.mp4 (carphone's frames 0-7), its .nvp file, and another clip of the same size and length
    (carphone's frames 8-15)."""
    root = tmp_path_factory.mktemp("source")
    carphone = load_video("sample:carphone", FrameSelection(max_frames=16)).frames.numpy()
    clip = write_clip(root / "clip.mp4", carphone[:8], crf="0")
    other = write_clip(root / "other.mp4", carphone[8:], crf="0")
    config = train_tiny_run(root / "outputs", str(clip), "--max-num-iterations", "5")
    nvp_file = root / "clip.nvp"
    compress.main(compress.CompressConfig(config, nvp_file))
    shutil.copy(clip, root / "original.mp4")
    shutil.copy(other, clip)  # another video of the same size now at the run's source path
    return config, nvp_file, root


def one_error_line(error: pytest.ExceptionInfo, clip: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"error: {clip} is not the video the run")
    return message


def test_ns_eval_refuses_another_video_at_the_source_path(trained) -> None:
    config, _, root = trained
    result = run_command("ns-eval", "--load-config", str(config), "--output-path", str(root / "eval.json"), cwd=root)
    assert result.returncode != 0 and "Traceback" not in result.stderr and not (root / "eval.json").exists()
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {root / 'clip.mp4'} is not the video the run was trained on (the same size, but frame 0")


@pytest.mark.parametrize("side_by_side", [True, False])
def test_nvp_render_refuses_another_video_at_the_source_path(trained, side_by_side: bool) -> None:
    config, _, root = trained
    output = root / f"render_{side_by_side}.mp4"
    with pytest.raises(SystemExit) as error:
        render.main(render.RenderConfig(config, output, side_by_side=side_by_side))
    one_error_line(error, root / "clip.mp4")
    assert not output.exists()


def test_nvp_compress_refuses_another_video_at_the_source_path(trained) -> None:
    config, _, root = trained
    with pytest.raises(SystemExit) as error:
        compress.main(compress.CompressConfig(config, root / "again.nvp"))
    one_error_line(error, root / "clip.mp4")
    assert not (root / "again.nvp").exists()


def test_decompress_scores_only_against_the_video_the_run_trained_on(trained) -> None:
    _, nvp_file, root = trained
    decompress.main(decompress.DecompressConfig(nvp_file, root / "right.mp4", reference=str(root / "original.mp4")))
    assert load_video(root / "right.mp4").num_frames == 4
    with pytest.raises(SystemExit) as error:
        decompress.main(decompress.DecompressConfig(nvp_file, root / "wrong.mp4", reference=str(root / "clip.mp4")))
    message = str(error.value)
    assert message.startswith(f"error: {root / 'clip.mp4'} is not the video the run in {nvp_file} was trained on") and "\n" not in message
    assert not (root / "wrong.mp4").exists()


def test_a_run_written_before_fingerprints_still_loads(trained) -> None:
    """Its checkpoint has no fingerprint: nothing to check the source against, and nothing refused."""
    import torch

    from nvp_nerfstudio.plugin.runs import load_run

    config, _, root = trained
    (checkpoint,) = (config.parent / "nerfstudio_models").glob("step-*.ckpt")
    written = checkpoint.read_bytes()
    state = torch.load(checkpoint, map_location="cpu")
    del state["pipeline"]["_model._extra_state"]
    torch.save(state, checkpoint)
    try:
        *_, video, loaded = load_run(config)
    finally:
        checkpoint.write_bytes(written)
    assert loaded == checkpoint and video.source == str(root / "clip.mp4")


PEAK_OF_SOURCE_FRAMES = """
import sys
from nvp_nerfstudio.data.video import FrameSelection
from nvp_nerfstudio.memory import peak_rss_mib
from nvp_nerfstudio.plugin.runs import source_frames
before = peak_rss_mib()
frames = source_frames(sys.argv[1], FrameSelection(), None)[0]
print(frames, peak_rss_mib() - before)
"""


def test_the_field_loader_of_nvp_render_and_nvp_compress_holds_one_frame_at_a_time(tmp_path: Path) -> None:
    """nvp-render and nvp-compress read the source only for its frame rate and to check it against the run's
    fingerprint: 540 more frames of 320x180 are 89 MiB as uint8, which a loader holding the video would grow by."""
    import subprocess
    import sys

    from conftest import moving_gradient

    growth = {}
    for frames in (60, 600):
        clip = write_clip(tmp_path / f"clip{frames}.mp4", moving_gradient(frames, 180, 320))
        result = subprocess.run([sys.executable, "-c", PEAK_OF_SOURCE_FRAMES, str(clip)], capture_output=True, text=True, check=True)
        counted, growth[frames] = result.stdout.split()
        assert int(counted) == frames
    assert float(growth[600]) - float(growth[60]) < 89 / 2, growth
