"""Bad input, one table: every command handed a damaged or missing video, a bad frame folder, a bad option, a
damaged .nvp file, an unwritable output path or a broken run ends with exactly one `error: ...` line naming the
problem, no traceback, and nothing written or changed on disk.

Each command runs in this process through its console entry point, as a user's shell would call it: an exception
other than the one-line exit fails the case. The damaged inputs are made here from real frames (carphone) with
PyAV: truncations, zeroed bytes, re-encodes.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from conftest import train_tiny_run, write_clip
from PIL import Image

from nvp_nerfstudio.data.video import FrameSelection, load_video

COMMANDS = {
    "nvp-bench": "bench",
    "nvp-compare": "compare",
    "nvp-suite": "suite",
    "nvp-long": "long",
    "nvp-render": "render",
    "nvp-compress": "compress",
    "nvp-decompress": "decompress",
    "nvp-rd": "rate_distortion",
}


@dataclass(frozen=True)
class Case:
    command: str
    args: str
    """The command's arguments; {name} stands for a file or folder of the inputs below."""
    says: str
    """What the error line names."""


TRAIN_FLAGS = "--steps 2 --train-batch 64 --output-dir {root}/never"
CASES = {
    # Video files.
    "missing video": Case("nvp-bench", f"--data {{root}}/missing.mp4 {TRAIN_FLAGS}", "missing.mp4 does not exist"),
    "empty video file": Case("nvp-bench", f"--data {{empty_mp4}} {TRAIN_FLAGS}", "empty.mp4"),
    "text named .mp4": Case("nvp-compare", "--data {notes_mp4} --steps 2 --output-dir {root}/never", "notes.mp4"),
    "video cut short": Case("nvp-bench", f"--data {{cut_mp4}} {TRAIN_FLAGS}", "is truncated or damaged"),
    "video cut before its index": Case("nvp-bench", f"--data {{cut_index_mp4}} {TRAIN_FLAGS}", "cannot open"),
    "video with zeroed bytes": Case("nvp-suite", "--suite {zeroed_suite} --clips-dir {root} --steps 2 --output-dir {root}/never", "truncated or damaged"),
    "video cut short, segmented": Case("nvp-long", "fit --data {cut_mp4} --segment-frames 4 --steps-per-segment 2 --output-dir {root}/never", "truncated or damaged"),
    "frames of 6x6 pixels": Case("nvp-bench", f"--data {{small_mp4}} {TRAIN_FLAGS}", "too small"),
    "downscale past 7 pixels": Case("nvp-bench", f"--data {{clip_mp4}} --downscale 13 {TRAIN_FLAGS}", "use a smaller downscale"),
    "selection of no frames": Case("nvp-bench", f"--data {{clip_mp4}} --max-frames 0 {TRAIN_FLAGS}", "max frames must be >= 1"),
    # Frame folders.
    "empty folder": Case("nvp-bench", f"--data {{empty_dir}} {TRAIN_FLAGS}", "holds no frames"),
    "folder of text files": Case("nvp-bench", f"--data {{text_dir}} {TRAIN_FLAGS}", "holds no frames"),
    "truncated PNG frame": Case("nvp-bench", f"--data {{broken_png_dir}} {TRAIN_FLAGS}", "frame_00001.png"),
    "frames of two sizes": Case("nvp-compare", "--data {mixed_dir} --steps 2 --output-dir {root}/never", "frame_00001.png"),
    "float frames above 1": Case("nvp-bench", f"--data {{hdr_dir}} {TRAIN_FLAGS}", "outside 0..1"),
    # Options.
    "unknown flag": Case("nvp-bench", f"--no-such-flag {TRAIN_FLAGS}", "unrecognized option --no-such-flag"),
    "a word for a number": Case("nvp-compare", "--data {clip_mp4} --steps ten --output-dir {root}/never", "--steps: invalid literal for int()"),
    "a choice not offered": Case("nvp-bench", f"--grid-backends cuda {TRAIN_FLAGS}", "--grid-backends 'cuda' is not one of"),
    "required option missing": Case("nvp-render", "--load-config {root}/missing.yml", "missing -o/--output"),
    "no subcommand": Case("nvp-long", "", "expected a command, one of fit"),
    "unknown method": Case("nvp-bench", f"--methods no-such {TRAIN_FLAGS}", "no-such"),
    "rate flag for no rate method": Case("nvp-bench", f"--methods nvp --target-bpp 0.1 {TRAIN_FLAGS}", "--target-bpp"),
    "CUDA graph on a CPU": Case("nvp-bench", f"--data {{clip_mp4}} --device cpu --cuda-graph {TRAIN_FLAGS}", "--cuda-graph"),
    "no time budget": Case("nvp-compare", "--data {clip_mp4} --time-budget 0 --output-dir {root}/never", "--time-budget must be positive"),
    "unknown metric": Case("nvp-compare", "--data {clip_mp4} --metrics psnr sharpness --steps 2 --output-dir {root}/never", "sharpness"),
    "suite file missing": Case("nvp-suite", "--suite {root}/missing.toml --output-dir {root}/never", "missing.toml does not exist"),
    "suite file not TOML": Case("nvp-suite", "--suite {notes_mp4} --output-dir {root}/never", "is not a suite"),
    "suite baseline not run": Case("nvp-suite", "--suite {suite} --clips-dir {root} --methods nvp --output-dir {root}/never", "--baseline ngp-video"),
    "suite clip not listed": Case("nvp-suite", "--suite {suite} --clips-dir {root} --only nowhere --output-dir {root}/never", "--only nowhere"),
    "unknown method for nvp-long": Case("nvp-long", "fit --data {clip_mp4} --method no-such --output-dir {root}/never", "no-such"),
    "render rate of 0": Case("nvp-render", "--load-config {config} --output {root}/never.mp4 --rate 0", "--rate and --scale must be positive"),
    "render frames past the end": Case("nvp-render", "--load-config {config} --output {root}/never.mp4 --start-frame 50", "outside the video"),
    "side by side, scaled": Case("nvp-render", "--load-config {config} --output {root}/never.mp4 --side-by-side --scale 2", "--side-by-side"),
    "render scale past memory": Case("nvp-render", "--load-config {config} --output {root}/never.mp4 --scale 100000", "--scale"),
    "SVT-AV1 preset out of range": Case("nvp-rd", "--load-config {config} --svt-av1-preset 20 --output-dir {root}/never", "--svt-av1-preset"),
    "rd run missing": Case("nvp-rd", "--load-config {root}/missing.yml --output-dir {root}/never", "missing.yml"),
    # .nvp files.
    "missing .nvp": Case("nvp-decompress", "{root}/missing.nvp -o {root}/never.mp4", "missing.nvp"),
    "empty .nvp": Case("nvp-decompress", "{empty_nvp} -o {root}/never.mp4", "empty.nvp"),
    "text named .nvp": Case("nvp-decompress", "{notes_nvp} -o {root}/never.mp4", "notes.nvp"),
    ".nvp cut short": Case("nvp-decompress", "{cut_nvp} -o {root}/never.mp4", "cut.nvp"),
    ".nvp with a flipped byte": Case("nvp-decompress", "{flipped_nvp} -o {root}/never.mp4", "flipped.nvp"),
    "reference of another video": Case("nvp-decompress", "{clip_nvp} -o {root}/never.mp4 --reference {other_mp4}", "other.mp4"),
    "reference missing": Case("nvp-decompress", "{clip_nvp} -o {root}/never.mp4 --reference {root}/missing.mp4", "missing.mp4"),
    # Outputs in folders yet to be made: nothing made stays behind.
    "damaged .nvp to a new folder": Case("nvp-decompress", "{flipped_nvp} -o {root}/new/deeper/clip.mp4", "flipped.nvp"),
    "damaged .nvp to new PNG frames": Case("nvp-decompress", "{cut_nvp} -o {root}/new/frames", "cut.nvp"),
    "render past the end to a new folder": Case("nvp-render", "--load-config {config} --output {root}/new/clip.mp4 --start-frame 50", "outside the video"),
    "segments of a cut video to a new folder": Case("nvp-long", "fit --data {cut_mp4} --segment-frames 4 --steps-per-segment 2 --output-dir {root}/new/segments", "truncated or damaged"),
    # Output paths.
    "output under a file": Case("nvp-decompress", "{clip_nvp} -o {clip_mp4}/out.mp4", "is a file, not a folder"),
    "output of no video format": Case("nvp-decompress", "{clip_nvp} -o {root}/never.gif", ".gif is not a video format"),
    "render output under a file": Case("nvp-render", "--load-config {config} --output {clip_mp4}/out.mp4", "is a file, not a folder"),
    ".nvp output is a folder": Case("nvp-compress", "--load-config {config} -o {empty_dir}", "cannot write"),
    ".nvp output in a missing folder": Case("nvp-compress", "--load-config {config} -o {root}/nowhere/clip.nvp", "cannot write"),
    "suite output is a file": Case("nvp-suite", "--suite {suite} --clips-dir {root} --output-dir {clip_mp4}", "is a file"),
    "rd output is a file": Case("nvp-rd", "--load-config {config} --output-dir {clip_mp4}", "is a file"),
    "segments output under a file": Case("nvp-long", "fit --data {clip_mp4} --segment-frames 4 --steps-per-segment 2 --output-dir {clip_mp4}/segments", "clip.mp4"),
    # Runs and checkpoints.
    "config missing": Case("nvp-render", "--load-config {root}/missing.yml --output {root}/never.mp4", "missing.yml does not exist"),
    "config not a run": Case("nvp-compress", "--load-config {notes_mp4} -o {root}/never.nvp", "is not the config.yml of an ns-train run"),
    "every checkpoint damaged": Case("nvp-compress", "--load-config {damaged_config} -o {root}/never.nvp", "checkpoint"),
    "run without checkpoints": Case("nvp-render", "--load-config {bare_config} --output {root}/never.mp4", "saved no checkpoint"),
    "run's source replaced": Case("nvp-compress", "--load-config {moved_config} -o {root}/never.nvp", "is not the video the run"),
}


def _clone_run(config: Path, root: Path, name: str, **changes) -> Path:
    """A copy of the trained run (its config.yml and checkpoints) under root/name, with `changes` to its data
    path (`data`)."""
    import yaml

    run = config.parent
    outputs = config.parents[3]
    copy = root / name / run.relative_to(outputs)
    shutil.copytree(run, copy)
    settings = yaml.load(config.read_text(), Loader=yaml.Loader)
    settings.output_dir = root / name
    if "data" in changes:
        settings.data = settings.pipeline.datamanager.data = settings.pipeline.datamanager.dataparser.data = changes["data"]
    (copy / "config.yml").write_text(yaml.dump(settings))
    return copy / "config.yml"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    from nvp_nerfstudio.scripts import compress

    carphone = load_video("sample:carphone", FrameSelection(max_frames=16, downscale=2)).frames.numpy()
    paths = {"root": root}
    paths["clip_mp4"] = write_clip(root / "clip.mp4", carphone[:8], crf="0")
    paths["other_mp4"] = write_clip(root / "other.mp4", carphone[8:], crf="0")
    paths["small_mp4"] = write_clip(root / "small.mp4", carphone[:4, 20:26, 20:26].copy())
    whole = write_clip(root / "long.mp4", carphone, crf="0").read_bytes()
    paths["cut_index_mp4"] = root / "cut_index.mp4"  # an mp4 whose index comes last: cut short, it does not open
    paths["cut_index_mp4"].write_bytes(whole[: int(len(whole) * 0.6)])
    streaming = root / "streaming.mp4"  # its index first, as streaming-ready files have it: cut short, it opens
    with av.open(str(streaming), "w", options={"movflags": "faststart"}) as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = carphone.shape[2], carphone.shape[1], "yuv420p"
        for frame in carphone:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    paths["cut_mp4"] = root / "cut.mp4"
    paths["cut_mp4"].write_bytes(streaming.read_bytes()[: int(streaming.stat().st_size * 0.6)])
    zeroed = bytearray(whole)
    zeroed[len(zeroed) // 2 : len(zeroed) // 2 + 4096] = bytes(4096)
    (root / "zeroed.mp4").write_bytes(bytes(zeroed))
    paths["zeroed_suite"] = root / "zeroed.toml"
    paths["zeroed_suite"].write_text('[[clips]]\nname = "zeroed"\ndata = "zeroed.mp4"\n')
    paths["suite"] = root / "suite.toml"
    paths["suite"].write_text('[[clips]]\nname = "clip"\ndata = "clip.mp4"\n')
    for name, data in [("empty_mp4", b""), ("notes_mp4", b"not a video\n"), ("empty_nvp", b""), ("notes_nvp", b"not a field\n")]:
        paths[name] = root / name.replace("_", ".")
        paths[name].write_bytes(data)
    for name in ["empty_dir", "text_dir", "broken_png_dir", "mixed_dir", "hdr_dir"]:
        paths[name] = root / name
        paths[name].mkdir()
    (paths["text_dir"] / "readme.txt").write_text("no frames here\n")
    for index in range(3):
        Image.fromarray(carphone[index]).save(paths["broken_png_dir"] / f"frame_{index:05d}.png")
        frame = carphone[index] if index != 1 else carphone[index, :40]
        Image.fromarray(frame).save(paths["mixed_dir"] / f"frame_{index:05d}.png")
    png = paths["broken_png_dir"] / "frame_00001.png"
    png.write_bytes(png.read_bytes()[:200])
    Image.fromarray((carphone[0, ..., 0] / 64.0).astype("float32")).save(paths["hdr_dir"] / "frame_00000.tif")
    config = train_tiny_run(root / "outputs", str(paths["clip_mp4"]), "--max-num-iterations", "3")
    paths["config"] = config
    paths["clip_nvp"] = root / "clip.nvp"
    compress.main(compress.CompressConfig(config, paths["clip_nvp"]))
    data = paths["clip_nvp"].read_bytes()
    paths["cut_nvp"] = root / "cut.nvp"
    paths["cut_nvp"].write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(flipped) * 2 // 3] ^= 0xFF
    paths["flipped_nvp"] = root / "flipped.nvp"
    paths["flipped_nvp"].write_bytes(bytes(flipped))
    paths["damaged_config"] = _clone_run(config, root, "damaged")
    for checkpoint in paths["damaged_config"].parent.glob("nerfstudio_models/*.ckpt"):
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    paths["bare_config"] = _clone_run(config, root, "bare")
    shutil.rmtree(paths["bare_config"].parent / "nerfstudio_models")
    (root / "moved").mkdir()
    moved_source = write_clip(root / "moved" / "clip.mp4", carphone[8:], crf="0")
    paths["moved_config"] = _clone_run(config, root, "moved_run", data=moved_source)
    return paths


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")}


def test_the_matrix_has_forty_cases_over_every_kind_of_input() -> None:
    assert len(CASES) >= 40 and set(case.command for case in CASES.values()) == set(COMMANDS)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_error_line_and_writes_nothing(inputs: dict[str, Path], name: str, monkeypatch, capsys) -> None:
    case = CASES[name]
    module = importlib.import_module(f"nvp_nerfstudio.scripts.{COMMANDS[case.command]}")
    monkeypatch.setattr(sys, "argv", [case.command, *case.args.format(**inputs).split()])
    before = snapshot(inputs["root"])
    with pytest.raises(SystemExit) as exit_:
        module.entrypoint()
    message = exit_.value.code
    assert isinstance(message, str), f"exit code {message!r}: {capsys.readouterr().err[-2000:]}"
    assert message.startswith("error: ") and "\n" not in message and case.says in message, message
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and "╭" not in stderr  # no traceback, no box of tyro's
    assert snapshot(inputs["root"]) == before  # nothing written, nothing half-written, nothing changed
