"""Nothing silent, nothing lost: damaged videos are refused in one line (or their decoded prefix kept when asked),
frames of every Pillow mode load as 8-bit RGB, and nvp-render / nvp-decompress check their output path before
rendering, write the container the extension names, and never leave a half-written output under its name."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import moving_gradient
from PIL import Image
from test_compression import INFO, SHAPE, TINY_CONFIG, perturbed

from nvp_nerfstudio.compression import container
from nvp_nerfstudio.compression.field_codec import CodecOptions, compress
from nvp_nerfstudio.data.output import VIDEO_FORMATS, FrameWriter, OutputPathError, check_output
from nvp_nerfstudio.data.video import FrameSelection, VideoInputError, iter_segments, load_video, open_frames, resolve_source
from nvp_nerfstudio.scripts import compress as compress_command
from nvp_nerfstudio.scripts import decompress, render

FRAMES = 60


def one_line_error(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    """An H.264 mp4 whose index comes first (as streaming-ready files have it): cut short, it still opens and
    declares its full frame count."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in moving_gradient(FRAMES, 48, 64):
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return path.read_bytes()


@pytest.mark.parametrize("kept", [0.3, 0.6])  # 0.3: not one frame decodes; 0.6: the first third does
def test_truncated_video_is_refused_with_the_frame_counts(tmp_path: Path, clip_bytes: bytes, kept: float) -> None:
    path = _write(tmp_path / "cut.mp4", clip_bytes[: int(len(clip_bytes) * kept)])
    for selection in [FrameSelection(), FrameSelection(keep_decoded_prefix=kept < 0.5)]:  # no frame: no prefix
        with pytest.raises(VideoInputError) as error:
            load_video(path, selection)
        message = one_line_error(error)
        assert f"{path} is truncated or damaged" in message and f"of the {FRAMES} frames its container declares" in message
    for rank in (0, 1):  # the segmented decode of nvp-long too, and each torchrun rank's, which skips the others'
        with pytest.raises(VideoInputError, match="truncated"):
            list(iter_segments(path, 8, wanted=lambda number: number % 2 == rank))


def test_truncated_video_keeps_its_prefix_only_when_asked(tmp_path: Path, clip_bytes: bytes) -> None:
    path = _write(tmp_path / "cut.mp4", clip_bytes[: int(len(clip_bytes) * 0.6)])
    video = load_video(path, FrameSelection(keep_decoded_prefix=True))
    assert 0 < video.num_frames < FRAMES and video.source_indices == list(range(video.num_frames))
    whole = load_video(_write(tmp_path / "whole.mp4", clip_bytes))
    assert torch.equal(video.frames, whole.frames[: video.num_frames])


def test_ns_train_flag_keeps_the_decoded_prefix(tmp_path: Path, clip_bytes: bytes) -> None:
    from nvp_nerfstudio.plugin.dataparser import VideoDataParserConfig

    path = _write(tmp_path / "cut.mp4", clip_bytes[: int(len(clip_bytes) * 0.6)])
    with pytest.raises(SystemExit, match="truncated or damaged"):
        VideoDataParserConfig(data=path).setup().get_dataparser_outputs("train")
    parser = VideoDataParserConfig(data=path, keep_decoded_prefix=True).setup()
    assert 0 < parser.get_dataparser_outputs("train").metadata["video"].num_frames < FRAMES


def test_a_run_on_a_kept_prefix_compresses_and_renders(tmp_path: Path, clip_bytes: bytes) -> None:
    """nvp-compress and nvp-render read the source as the run did: a truncated video's decoded prefix, when kept."""
    from conftest import train_tiny_run

    path = _write(tmp_path / "cut.mp4", clip_bytes[: int(len(clip_bytes) * 0.6)])
    config = train_tiny_run(tmp_path / "outputs", str(path), "--max-num-iterations", "5", "--pipeline.datamanager.dataparser.max-frames", "1000",
                             "--pipeline.datamanager.dataparser.keep-decoded-prefix", "True")
    compress_command.main(compress_command.CompressConfig(config, tmp_path / "cut.nvp"))
    render.main(render.RenderConfig(config, tmp_path / "cut_frames"))
    assert 0 < len(list((tmp_path / "cut_frames").glob("*.png"))) < FRAMES


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_damaged_middle_is_refused(tmp_path: Path, clip_bytes: bytes) -> None:
    damaged = bytearray(clip_bytes)
    middle = len(damaged) // 2
    damaged[middle : middle + 2048] = bytes(2048)  # a run of zeroed bytes inside the frame data
    with pytest.raises(VideoInputError, match=f"of the {FRAMES} frames its container declares") as error:
        load_video(_write(tmp_path / "damaged.mp4", bytes(damaged)))
    one_line_error(error)


def test_whole_video_and_a_selection_ending_before_the_cut_still_load(tmp_path: Path, clip_bytes: bytes) -> None:
    assert load_video(_write(tmp_path / "whole.mp4", clip_bytes)).num_frames == FRAMES
    cut = _write(tmp_path / "cut.mp4", clip_bytes[: int(len(clip_bytes) * 0.6)])
    assert load_video(cut, FrameSelection(end=3)).num_frames == 3


GRADIENT = np.linspace(0, 1, 48 * 64).reshape(48, 64)
G16 = np.rint(GRADIENT * 65535).astype(np.uint16)


def saved(image: Image.Image, name: str, folder: Path, **options) -> Path:
    folder.mkdir(exist_ok=True)
    image.save(folder / name, **options)
    return folder


@pytest.mark.parametrize(
    "name,image,expected",
    [
        # 16-bit gray: the nearest 8-bit value, not Pillow's clip at 255 (an almost white video).
        ("g16.png", Image.fromarray(G16), np.rint(G16 / 257)),
        ("g16.tif", Image.fromarray(G16), np.rint(G16 / 257)),
        ("g16.pgm", Image.fromarray(G16), np.rint(G16 / 257)),  # Pillow opens it as I
        ("i32.tif", Image.fromarray(G16.astype(np.int32)), np.rint(G16 / 257)),
        ("f32.tif", Image.fromarray(GRADIENT.astype(np.float32)), np.rint(GRADIENT.astype(np.float32) * 255.0)),
        ("g8.pgm", Image.fromarray((GRADIENT * 255).astype(np.uint8)), np.floor(GRADIENT * 255)),
        ("g8a.png", Image.fromarray((GRADIENT * 255).astype(np.uint8)).convert("LA"), np.floor(GRADIENT * 255)),
        ("p.png", Image.fromarray((GRADIENT * 255).astype(np.uint8)).convert("P"), np.floor(GRADIENT * 255)),
        ("bw.pbm", Image.fromarray(GRADIENT > 0.5), 255.0 * (GRADIENT > 0.5)),
    ],
)
def test_frames_of_every_mode_become_8_bit_rgb(tmp_path: Path, name: str, image: Image.Image, expected: np.ndarray) -> None:
    folder = saved(image, name, tmp_path / "frames")
    video = load_video(folder)
    assert video.frames.dtype == torch.uint8 and tuple(video.frames.shape) == (1, 48, 64, 3)
    gray = torch.from_numpy(expected.astype(np.uint8))
    for channel in range(3):
        assert torch.equal(video.frames[0, ..., channel], gray)


@pytest.mark.parametrize("name", ["rgba.png", "rgba.webp", "rgb.ppm", "rgb.bmp", "rgb.tif"])
def test_colour_frames_keep_their_colours_and_drop_alpha(tmp_path: Path, name: str) -> None:
    rgb = moving_gradient(1, 48, 64)[0]
    image = Image.fromarray(rgb)
    if name.startswith("rgba"):
        image.putalpha(Image.fromarray((GRADIENT * 255).astype(np.uint8)))
    video = load_video(saved(image, name, tmp_path / "frames", **({"lossless": True, "exact": True} if name.endswith("webp") else {})))
    assert torch.equal(video.frames[0], torch.from_numpy(rgb))


def test_float_frames_outside_0_to_1_are_refused(tmp_path: Path) -> None:
    folder = saved(Image.fromarray((GRADIENT * 4).astype(np.float32)), "hdr.tif", tmp_path / "frames")
    with pytest.raises(VideoInputError, match="outside 0..1") as error:
        load_video(folder)
    assert "hdr.tif" in one_line_error(error)


@pytest.fixture
def nvp_file(tmp_path: Path) -> Path:
    path = tmp_path / "clip.nvp"
    container.write(path, container.to_bytes(compress(perturbed(TINY_CONFIG), INFO, CodecOptions(mlp_bits=16))))
    return path


def decompress_to(nvp_file: Path, output: Path) -> None:
    decompress.main(decompress.DecompressConfig(nvp_file, output))


# What each extension's file starts with, and the codec a decoder reads in it.
CONTAINERS = {
    ".mp4": (b"ftypisom", "h264"),
    ".mkv": (b"matroska", "h264"),
    ".mov": (b"ftypqt", "h264"),
    ".webm": (b"webm", "vp9"),
    ".avi": (b"AVI LIST", "mjpeg"),
    ".y4m": (b"YUV4MPEG2", "rawvideo"),
}


def test_every_video_format_is_tested() -> None:
    assert set(CONTAINERS) == set(VIDEO_FORMATS)


@pytest.mark.parametrize("suffix", list(CONTAINERS))
def test_the_container_follows_the_extension(tmp_path: Path, nvp_file: Path, suffix: str) -> None:
    output = tmp_path / "out" / f"video{suffix}"
    decompress_to(nvp_file, output)
    magic, codec = CONTAINERS[suffix]
    assert magic in output.read_bytes()[:64]
    with av.open(str(output)) as written:
        assert written.streams.video[0].codec_context.name == codec
    assert load_video(output).num_frames == SHAPE.num_frames
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no partial file beside it


def test_png_folder_only_for_folders_and_names_without_extension(tmp_path: Path, nvp_file: Path) -> None:
    (tmp_path / "frames").mkdir()
    for name in ["frames", "new_frames"]:
        decompress_to(nvp_file, tmp_path / name)
        assert len(list((tmp_path / name).glob("frame_*.png"))) == SHAPE.num_frames
    with pytest.raises(SystemExit, match=r"error: cannot write .*out\.avi2: \.avi2 is not a video format") as error:
        decompress_to(nvp_file, tmp_path / "out.avi2")
    assert "\n" not in str(error.value) and not (tmp_path / "out.avi2").exists()


@pytest.mark.parametrize("command", ["render", "decompress"])
@pytest.mark.parametrize(
    "target,message",
    [
        (lambda root: root / "clip.mp4" / "out.mp4", "clip.mp4 is a file, not a folder"),
        (lambda root: root / "clip.mp4" / "deeper" / "frames", "clip.mp4 is a file, not a folder"),
        (lambda root: root / "clip.mp4.d" / "out.gif", ".gif is not a video format"),
        (lambda root: root / "clip", "clip: it is a file"),
    ],
)
def test_unwritable_outputs_are_refused_before_any_rendering(tmp_path: Path, command: str, target, message: str) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"an older file")
    (tmp_path / "clip").write_bytes(b"a file, not a folder")
    config = _write(tmp_path / "config.yml", b"")  # never read: the output is checked first
    output = target(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as error:
        if command == "render":
            render.main(render.RenderConfig(load_config=config, output=output))
        else:
            decompress.main(decompress.DecompressConfig(tmp_path / "not_read.nvp", output))
    assert str(error.value).startswith("error: cannot write") and message in str(error.value)
    assert "\n" not in str(error.value)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o555)
    with pytest.raises(OutputPathError, match=f"cannot write {folder / 'out.mp4'}: Permission denied in {folder}"):
        check_output(folder / "out.mp4")


@pytest.mark.parametrize("name", ["out.mp4", "out.webm", "frames"])
def test_interrupted_writes_leave_the_older_output_and_nothing_else(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    if target.suffix:
        target.write_bytes(b"an older video")
    else:
        target.mkdir()
        for index in range(3):
            (target / f"frame_{index:05d}.png").write_bytes(b"an older frame")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with pytest.raises(KeyboardInterrupt):
        with FrameWriter(target, 33, 17, 25.0, 18) as writer:
            for frame in moving_gradient(2, 17, 33):
                writer.write(frame)
            raise KeyboardInterrupt
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_a_complete_png_render_replaces_the_older_frames_only(tmp_path: Path) -> None:
    target = tmp_path / "frames"
    target.mkdir()
    for index in range(5):
        (target / f"frame_{index:05d}.png").write_bytes(b"an older frame")
    (target / "notes.txt").write_text("kept")
    with FrameWriter(target, 33, 17, 25.0, 18) as writer:
        for frame in moving_gradient(2, 17, 33):
            writer.write(frame)
    assert sorted(p.name for p in target.iterdir()) == ["frame_00000.png", "frame_00001.png", "notes.txt"]
    assert torch.equal(load_video(target).frames, torch.from_numpy(moving_gradient(2, 17, 33)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    return load_video("sample:carphone", FrameSelection(max_frames=4)).frames.numpy()


@pytest.mark.parametrize(
    "source,downscale,shown,fix",
    [
        ("20x6.mp4", 1, "are 20x6: too small", "use a larger video"),
        ("5x9 frames", 1, "are 5x9: too small", "use a larger video"),
        ("sample:carphone", 24, "are 176x144 (7x6 after downscale 24): too small", "use a smaller downscale"),
    ],
)
def test_frames_under_7_pixels_a_side_are_refused_up_front(
    tmp_path: Path, carphone: np.ndarray, source: str, downscale: int, shown: str, fix: str
) -> None:
    from conftest import write_clip

    if source.endswith(".mp4"):
        source = str(write_clip(tmp_path / source, np.ascontiguousarray(carphone[:, 50:56, 60:80])))
    elif source.endswith("frames"):
        for index, frame in enumerate(carphone[:, 50:59, 60:65]):
            saved(Image.fromarray(frame), f"frame_{index}.png", tmp_path / "frames")
        source = str(tmp_path / "frames")
    for opened in (load_video, open_frames, lambda data, selection: next(iter_segments(data, 2, selection))):
        with pytest.raises(VideoInputError) as error:
            opened(source, FrameSelection(downscale=downscale))
        message = one_line_error(error)
        assert message.startswith(f"the frames of {resolve_source(source)} {shown}, SSIM") and message.endswith(fix)


def test_frames_of_7_pixels_a_side_load(tmp_path: Path, carphone: np.ndarray) -> None:
    for index, frame in enumerate(carphone[:, 50:57, 60:67]):
        saved(Image.fromarray(frame), f"frame_{index}.png", tmp_path / "frames")
    assert tuple(load_video(tmp_path / "frames").frames.shape) == (4, 7, 7, 3)


def test_ns_train_refuses_frames_under_7_pixels_in_one_line(tmp_path: Path) -> None:
    from conftest import run_command

    result = run_command("ns-train", "nvp", "--data", "sample:carphone", "--vis", "tensorboard", "--pipeline.datamanager.dataparser.downscale",
                         "21", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the frames of ") and "(8x6 after downscale 21): too small" in result.stderr
    assert list((tmp_path / "out").rglob("*")) == []


@pytest.mark.parametrize("source", ["missing.mp4", "notes.mp4"])
def test_ns_train_names_a_bad_source_in_one_line_before_printing_its_configuration(tmp_path: Path, source: str) -> None:
    from conftest import run_command

    (tmp_path / "notes.mp4").write_text("not a video\n")
    result = run_command("ns-train", "nvp", "--data", str(tmp_path / source), "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(tmp_path / source) in last
    assert "VideoTrainerConfig(" not in result.stdout + result.stderr  # nerfstudio's configuration dump never came
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a machine with a GPU, CUDA is what the flag asks for")
def test_asking_for_cuda_without_a_gpu_is_an_error_and_the_default_is_the_cpu() -> None:
    from nerfstudio.configs.base_config import MachineConfig

    from nvp_nerfstudio.plugin.training import VideoTrainerConfig

    assert VideoTrainerConfig().machine.device_type == "cpu"
    with pytest.raises(SystemExit, match="--machine.device-type cuda asks for a GPU, and torch sees none"):
        VideoTrainerConfig(machine=MachineConfig(device_type="cuda"))


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_video_with_a_display_rotation_is_read_upright(tmp_path: Path, rotation: int) -> None:
    """A phone's portrait video is stored landscape with a display matrix: read as it is shown, at any downscale."""
    from conftest import write_clip

    frames = moving_gradient(4, 24, 40)
    clip = write_clip(tmp_path / "phone.mp4", frames, pix_fmt="yuv444p", rotation=rotation, crf="0")
    upright = np.rot90(frames, rotation // 90, axes=(1, 2))
    video = load_video(clip)
    assert tuple(video.frames.shape) == upright.shape
    assert np.abs(video.frames.numpy().astype(int) - upright).mean() < 2
    assert tuple(load_video(clip, FrameSelection(downscale=2)).frames.shape) == (4, upright.shape[1] // 2, upright.shape[2] // 2, 3)
