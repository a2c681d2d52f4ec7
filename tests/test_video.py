from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import moving_gradient, write_clip
from PIL import Image

from nvp_nerfstudio.data.video import FrameSelection, VideoInputError, load_video, natural_key


def test_lossless_odd_sized_video_decodes_exactly(tmp_path: Path, random_frames: np.ndarray) -> None:
    path = write_clip(tmp_path / "odd.mkv", random_frames, codec="ffv1", pix_fmt="bgr0")
    video = load_video(path)
    assert video.frames.dtype == torch.uint8
    assert tuple(video.frames.shape) == (7, 23, 37, 3)
    assert torch.equal(video.frames, torch.from_numpy(random_frames))
    assert video.fps == pytest.approx(10.0)
    assert video.source_indices == list(range(7))


@pytest.mark.parametrize(
    "suffix,codec", [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mjpeg"), (".y4m", "rawvideo"), (".mkv", "libx264")]
)
def test_lossy_containers_decode_close_to_source(tmp_path: Path, suffix: str, codec: str) -> None:
    frames = moving_gradient(6, 32, 48)
    pix_fmt = "yuvj444p" if codec == "mjpeg" else "yuv444p"
    path = write_clip(tmp_path / f"clip{suffix}", frames, codec=codec, pix_fmt=pix_fmt)
    video = load_video(path)
    assert tuple(video.frames.shape) == (6, 32, 48, 3)
    error = (video.frames.float() - torch.from_numpy(frames).float()).abs().mean()
    assert error < 6.0


def test_frame_selection_range_stride_max_and_downscale(tmp_path: Path) -> None:
    frames = moving_gradient(20, 16, 24)
    path = write_clip(tmp_path / "clip.mkv", frames, codec="ffv1", pix_fmt="bgr0")
    video = load_video(path, FrameSelection(start=3, end=17, stride=4, max_frames=3, downscale=2))
    assert video.source_indices == [3, 7, 11]
    assert tuple(video.frames.shape) == (3, 8, 12, 3)
    expected = torch.from_numpy(frames[3]).float().reshape(8, 2, 12, 2, 3).mean(dim=(1, 3))
    assert (video.frames[0].float() - expected).abs().max() <= 2.0


def test_frame_folder_sorts_naturally_and_matches_pixels(tmp_path: Path, random_frames: np.ndarray) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(random_frames):
        Image.fromarray(frame).save(folder / f"frame{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    video = load_video(folder, FrameSelection(stride=2))
    assert video.source_indices == [0, 2, 4, 6]
    for slot, index in enumerate(video.source_indices):
        assert torch.equal(video.frames[slot], torch.from_numpy(random_frames[index]))
    assert sorted([Path("frame10.png"), Path("frame2.png"), Path("frame1.png")], key=natural_key) == [
        Path("frame1.png"),
        Path("frame2.png"),
        Path("frame10.png"),
    ]


def test_bundled_sample_clip_is_real_video() -> None:
    video = load_video("sample:carphone", FrameSelection(max_frames=5))
    assert tuple(video.frames.shape) == (5, 144, 176, 3)
    assert video.frames.float().std() > 20  # real content, not a blank frame


@pytest.mark.parametrize(
    "make_input,message",
    [
        (lambda root: root / "missing.mp4", "does not exist"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "holds no frames"),
        (lambda root: (root / "junk.mp4").write_bytes(b"\x00garbage" * 64) and root / "junk.mp4", "cannot open"),
        (lambda root: Path("sample:nosuchclip"), "unknown sample clip"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path: Path, make_input, message: str) -> None:
    with pytest.raises(VideoInputError, match=message):
        load_video(make_input(tmp_path))


def test_folder_with_mixed_frame_sizes_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a1.png")
    Image.new("RGB", (9, 8)).save(tmp_path / "a2.png")
    with pytest.raises(VideoInputError, match="one size"):
        load_video(tmp_path)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"stride": 0}, "stride"), ({"start": 5, "end": 5}, "end frame"), ({"downscale": 0}, "downscale"), ({"max_frames": 0}, "max frames")],
)
def test_bad_selection_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(VideoInputError, match=message):
        FrameSelection(**kwargs)


def test_selection_past_the_end_is_refused(tmp_path: Path, random_frames: np.ndarray) -> None:
    path = write_clip(tmp_path / "odd.mkv", random_frames, codec="ffv1", pix_fmt="bgr0")
    with pytest.raises(VideoInputError, match="keeps none"):
        load_video(path, FrameSelection(start=50))


def test_frame_folder_reads_every_image_format_pillow_decodes(tmp_path: Path, random_frames: np.ndarray) -> None:
    # Lossless formats only, so that every pixel must come back; PGM/PPM were once "no frames".
    formats = [("png", {}), ("ppm", {}), ("bmp", {}), ("tif", {}), ("webp", {"lossless": True}), ("tga", {}), ("png", {})]
    for i, (frame, (suffix, options)) in enumerate(zip(random_frames, formats)):
        Image.fromarray(frame).save(tmp_path / f"frame{i}.{suffix}", **options)
    Image.fromarray(random_frames[0, ..., 0]).save(tmp_path / "gray.pgm")  # sorts last
    video = load_video(tmp_path)
    assert torch.equal(video.frames[:-1], torch.from_numpy(random_frames))
    assert torch.equal(video.frames[-1], torch.from_numpy(random_frames[0, ..., :1]).expand(-1, -1, 3))


def test_a_container_that_under_declares_its_frames_still_loads_them_all(tmp_path: Path) -> None:
    """WebM declares no frame count (64 is assumed): 100 frames must all come back, in order."""
    import av

    path = tmp_path / "long.webm"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        for level in range(100):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((16, 32, 3), level * 2 + 20, np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    video = load_video(path)
    assert video.num_frames == 100
    means = video.frames.float().mean(dim=(1, 2, 3))
    assert torch.all(means[1:] > means[:-1])  # every frame in its place, none left as uninitialised memory
