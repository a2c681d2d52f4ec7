"""`ns-train nvp` end to end on a real clip, then `ns-eval` and a resume on its output; ns-train and the
benchmark build the same optimizer; every method of the table is registered with nerfstudio."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import run_command as run

from method_configs import methods
from nvp_nerfstudio.data.video import FrameSelection, load_video
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fit import FitConfig, optimizer_for, psnr_against_time
from nvp_nerfstudio.methods import METHODS

BIN = Path(sys.executable).parent
# Measured: 31.0 dB after 300 steps of 4096 pixels on these 24 frames (2-core CPU); a mean colour scores ~12 dB.
PSNR_FLOOR = 28.0
TRAIN_ARGS = [
    "--data", "sample:carphone",
    "--vis", "tensorboard",
    "--pipeline.datamanager.dataparser.max-frames", "24",
    "--pipeline.datamanager.train-num-rays-per-batch", "4096",
    "--steps-per-eval-image", "10000",
    "--steps-per-save", "300",
]


def evaluate(config: Path, output: Path, cwd: Path) -> dict:
    result = run("ns-eval", "--load-config", str(config), "--output-path", str(output), cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())["results"]


def mean_psnr_against_source(frames_dir: Path) -> float:
    """Mean per-frame PSNR of a PNG folder against the 24 source frames the run trained on."""
    from nvp_nerfstudio.data.video import FrameSelection, load_video
    from nvp_nerfstudio.metrics import psnr

    source = load_video("sample:carphone", FrameSelection(max_frames=24)).frames.float() / 255
    frames = load_video(frames_dir).frames.float() / 255
    assert frames.shape == source.shape
    return sum(psnr(f, s) for f, s in zip(frames, source)) / len(source)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    result = run("ns-train", "nvp", *TRAIN_ARGS, "--max-num-iterations", "300", "--output-dir", str(root / "outputs"), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (config,) = root.glob("outputs/carphone/nvp/*/config.yml")
    return config


@dataclass
class CompressedRun:
    file: Path
    frames_dir: Path
    compress_stdout: str
    decompress_stdout: str


@pytest.fixture(scope="module")
def compressed_run(trained_run: Path) -> CompressedRun:
    """The run through nvp-compress (default codecs) and nvp-decompress to PNG frames, scored against the source."""
    run_dir = trained_run.parent
    compressed, frames_dir = run_dir / "clip.nvp", run_dir / "decompressed"
    compressing = run("nvp-compress", "--load-config", str(trained_run), "-o", str(compressed), cwd=run_dir)
    assert compressing.returncode == 0, compressing.stderr[-3000:]
    decompressing = run("nvp-decompress", str(compressed), "-o", str(frames_dir), "--reference", "sample:carphone", cwd=run_dir)
    assert decompressing.returncode == 0, decompressing.stderr[-3000:]
    return CompressedRun(compressed, frames_dir, " ".join(compressing.stdout.split()), " ".join(decompressing.stdout.split()))


def test_train_then_eval_reaches_psnr_floor(trained_run: Path) -> None:
    metrics = evaluate(trained_run, trained_run.parent / "eval.json", trained_run.parent)
    assert metrics["psnr"] > PSNR_FLOOR
    assert 0.5 < metrics["ssim"] <= 1.0
    # FLIP and LPIPS of every 10th frame on a CPU; carphone's 144 px are too few for MS-SSIM.
    assert 0 < metrics["flip"] < 0.3 and 0 < metrics["lpips"] < 0.3 and "ms_ssim" not in metrics
    assert metrics["perceptual_metrics_every"] == 10
    assert (trained_run.parent / "nerfstudio_models" / "step-000000299.ckpt").is_file()


def test_resume_continues_from_checkpoint(trained_run: Path) -> None:
    run_dir = trained_run.parent
    before = evaluate(trained_run, run_dir / "before.json", run_dir)["psnr"]
    resumed_root = run_dir / "resumed"
    result = run(
        "ns-train", "nvp", *TRAIN_ARGS, "--max-num-iterations", "100",  # nerfstudio: 100 steps more
        "--load-dir", str(run_dir / "nerfstudio_models"), "--output-dir", str(resumed_root), cwd=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done loading Nerfstudio checkpoint" in result.stdout + result.stderr
    (config,) = resumed_root.glob("carphone/nvp/*/config.yml")
    assert (config.parent / "nerfstudio_models" / "step-000000399.ckpt").is_file()
    after = evaluate(config, config.parent / "eval.json", run_dir)["psnr"]
    assert after > before - 0.5  # resumed from the trained weights, not from scratch


def killed_run(tmp_path: Path, steps_per_save: int, kill_when: Callable[[Path], bool], poll: float) -> tuple[list[str], Path]:
    """(its arguments, its checkpoint folder) of an endless `ns-train` run saving every `steps_per_save` steps, killed
    with SIGKILL as soon as `kill_when(checkpoint folder)` holds."""
    args = [*TRAIN_ARGS, "--steps-per-save", str(steps_per_save), "--save-only-latest-checkpoint", "False", "--output-dir", str(tmp_path / "outputs")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([str(BIN / "ns-train"), "nvp", *args, "--max-num-iterations", "100000"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pattern = "outputs/carphone/nvp/*/nerfstudio_models"
    try:
        deadline = time.monotonic() + 300
        while not any(kill_when(models) for models in tmp_path.glob(pattern)):
            assert process.poll() is None and time.monotonic() < deadline, "ns-train stopped before the moment to kill it came"
            time.sleep(poll)
    finally:
        process.kill()
        process.wait()
    return args, next(tmp_path.glob(pattern))


def checkpoints(models: Path) -> list[Path]:
    return sorted(models.glob("step-*.ckpt"))


def test_a_run_killed_midway_resumes_past_a_half_written_checkpoint(tmp_path: Path) -> None:
    """SIGKILL during training, a newest checkpoint cut short as a kill during its save would leave it (the
    saves themselves are atomic now), then --load-dir: the run goes on from the last good checkpoint."""
    args, models = killed_run(tmp_path, 10, lambda models: len(checkpoints(models)) >= 2, poll=0.5)
    good = max(int(path.stem.split("-")[1]) for path in checkpoints(models) if torch.load(path, mmap=True))
    newest = models / "step-999999990.ckpt"
    newest.write_bytes(checkpoints(models)[0].read_bytes()[:1000])
    result = run("ns-train", "nvp", *args, "--max-num-iterations", "5", "--load-dir", str(models), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout.replace("\n", "")  # nerfstudio's console wraps at 120 columns, inside paths too
    assert f"{newest} cannot be read" in output
    assert f"Done loading Nerfstudio checkpoint from {models / f'step-{good:09d}.ckpt'}" in output


def test_a_kill_during_a_checkpoint_save_leaves_every_checkpoint_whole(tmp_path: Path) -> None:
    """SIGKILL while a checkpoint is being written (its temporary file is there): no step-*.ckpt is cut short, and
    a resume takes the newest one."""
    from nvp_nerfstudio.plugin.training import newest_readable_step

    _, models = killed_run(tmp_path, 5, lambda models: any(models.glob(".step-*.tmp")) and len(checkpoints(models)) >= 2, poll=0.002)
    for path in checkpoints(models):
        assert "pipeline" in torch.load(path, map_location="cpu")
    assert newest_readable_step(models) == int(checkpoints(models)[-1].stem.split("-")[1])


@pytest.mark.parametrize(
    "data,message",
    [("missing.mp4", "does not exist"), ("empty_folder", "holds no frames"), ("junk.mp4", "cannot open")],
)
def test_bad_data_gives_one_clear_line(tmp_path: Path, data: str, message: str) -> None:
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 50)
    result = run("ns-train", "nvp", "--data", data, "--vis", "tensorboard", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_render_png_matches_eval_psnr(trained_run: Path) -> None:
    run_dir = trained_run.parent
    evaluated = evaluate(trained_run, run_dir / "render_eval.json", run_dir)["psnr"]
    frames_dir = run_dir / "render_png"
    result = run("nvp-render", "--load-config", str(trained_run), "--output", str(frames_dir), cwd=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Decode speed" in result.stdout
    assert abs(mean_psnr_against_source(frames_dir) - evaluated) < 0.1


def test_render_refuses_a_scale_whose_frames_do_not_fit_in_memory_before_rendering(trained_run: Path) -> None:
    run_dir = trained_run.parent
    output = run_dir / "huge.mp4"
    result = run("nvp-render", "--load-config", str(trained_run), "--output", str(output), "--scale", "100000", cwd=run_dir)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --scale 100000 makes frames of 17600000x14400000")
    assert not output.exists() and not list(run_dir.glob(".huge.mp4*"))


def test_ns_render_dataset_writes_one_image_per_frame(trained_run: Path) -> None:
    """nerfstudio's own render verb on a video run: every source frame its own image, in order."""
    run_dir = trained_run.parent
    out = run_dir / "ns_render"
    result = run(
        "ns-render", "dataset", "--load-config", str(trained_run), "--output-path", str(out), "--split", "train",
        "--rendered-output-names", "rgb", "--image-format", "png", cwd=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert mean_psnr_against_source(out / "train" / "rgb") > PSNR_FLOOR  # 24 frames, each the right one


def test_render_mp4_interpolated_and_resized(trained_run: Path) -> None:
    import av

    output = trained_run.parent / "render" / "x2.mp4"
    result = run(
        "nvp-render", "--load-config", str(trained_run), "--output", str(output),
        "--rate", "2", "--scale", "0.5", "--start-frame", "2", "--end-frame", "10", cwd=trained_run.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(2 * 29.97, rel=1e-3)
    assert len(frames) == (10 - 2) * 2 + 1
    assert frames[0].shape == (72, 88, 3)
    assert all(frame.std() > 10 for frame in frames)  # real pictures, not blank or NaN-black


def test_render_side_by_side_refuses_interpolated_frames(trained_run: Path) -> None:
    result = run(
        "nvp-render", "--load-config", str(trained_run), "--output", str(trained_run.parent / "sbs.mp4"),
        "--side-by-side", "--rate", "2", cwd=trained_run.parent,
    )
    assert result.returncode != 0 and "side-by-side needs" in result.stderr.strip().splitlines()[-1]


def test_compress_then_decompress_scores_close_to_eval(trained_run: Path, compressed_run: CompressedRun) -> None:
    import re

    run_dir = trained_run.parent
    evaluated = evaluate(trained_run, run_dir / "compress_eval.json", run_dir)["psnr"]
    assert f"{compressed_run.file.stat().st_size:,} bytes" in compressed_run.compress_stdout  # the reported size is the file's
    assert len(list(compressed_run.frames_dir.glob("*.png"))) == 24  # the stored frame selection: 24 frames, as trained
    decoded_psnr = float(re.search(r"PSNR ([\d.]+) dB", compressed_run.decompress_stdout).group(1))
    assert evaluated - 1.5 < decoded_psnr < evaluated + 0.1
    damaged = run_dir / "damaged.nvp"
    damaged.write_bytes(compressed_run.file.read_bytes()[:-100])
    result = run("nvp-decompress", str(damaged), "-o", str(run_dir / "damaged.mp4"), cwd=run_dir)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "is corrupt: section 'other tensors' is truncated" in result.stderr.strip().splitlines()[-1]


def test_rd_point_is_what_decompress_gives(trained_run: Path, compressed_run: CompressedRun) -> None:
    import csv

    run_dir = trained_run.parent
    out = run_dir / "rd"
    crfs = ["18", "23", "28", "33"]  # four: as few as a BD figure takes
    result = run(
        "nvp-rd", "--load-config", str(trained_run), "--output-dir", str(out), "--image-qualities", "--hash-bits", "8", "--mlp-bits",
        "--no-paper-codecs", "--no-lossless", "--codecs", "x264", "x265", "--pix-fmts", "yuv420p", "--crfs", *crfs, cwd=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert all((out / name).stat().st_size > 0 for name in ("rd.csv", "rd_bd.csv", "rd.md", "rd.png"))
    rows = list(csv.DictReader((out / "rd.csv").open()))
    assert [(r["series"], r["setting"]) for r in rows] == [
        ("nvp", "base"), ("nvp", "hash bits 8"), *((f"{codec} medium yuv420p", f"crf {crf}") for codec in ("x264", "x265") for crf in crfs),
    ]
    # The base point is nvp-compress's default file, scored as nvp-decompress's PNG frames.
    assert int(rows[0]["bytes"]) == compressed_run.file.stat().st_size
    assert abs(float(rows[0]["psnr_db"]) - mean_psnr_against_source(compressed_run.frames_dir)) < 0.01
    # BD figures of x264 against x265 over the PSNR and bpp they share; none for the run's two points.
    report = (out / "rd.md").read_text()
    assert re.search(r"\| x264 medium yuv420p \| 4 \(4\) \| [+-]\d+\.\d % \| [\d.]+-[\d.]+ dB \(.+\) \| [+-]\d+\.\d\d dB \| [\d.]+-[\d.]+ bpp", report)
    assert re.search(r"\| nvp \| 2 \((\d)\) \| - \| the series' front has \1 of the 4 points BD needs \|", report)
    (bd_row,) = (r for r in csv.DictReader((out / "rd_bd.csv").open()) if r["series"] == "x264 medium yuv420p")
    assert bd_row["anchor"] == "x265 medium yuv420p" and math.isfinite(float(bd_row["bd_rate_percent"])) and math.isfinite(float(bd_row["bd_psnr_db"]))


@pytest.mark.parametrize("method", ["nvp", "ngp-video", "siren-video"])
def test_ns_train_and_the_benchmark_build_the_same_optimizer(method: str) -> None:
    # nvp-bench and nvp-compare claim to train as ns-train does: same AdamW, same hyperparameters.
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    registered = getattr(methods, method.replace("-", "_")).config.optimizers["fields"]["optimizer"].setup(parameters)
    benchmark = optimizer_for(torch.nn.Linear(1, 1), FitConfig(method=method))
    assert type(registered) is type(benchmark)
    keys = ("lr", "betas", "eps", "weight_decay", "fused")
    assert {k: registered.param_groups[0][k] for k in keys} == {k: benchmark.param_groups[0][k] for k in keys}


def test_ns_train_and_the_core_loop_give_the_same_field(tmp_path: Path) -> None:
    # One training loop: ns-train wraps the core's batch draw, loss, AdamW and schedule, so the same steps from
    # the same seed give the same field. Rays meet the plane at the pixel centres up to float rounding.
    steps, batch, seed = 30, 2048, 42
    result = run(
        "ns-train", "nvp", "--data", "sample:carphone", "--vis", "tensorboard", "--machine.seed", str(seed),
        "--pipeline.datamanager.seed", str(seed), "--pipeline.datamanager.dataparser.max-frames", "8",
        "--pipeline.datamanager.train-num-rays-per-batch", str(batch), "--max-num-iterations", str(steps),
        "--steps-per-eval-batch", "100000", "--steps-per-eval-image", "100000", "--output-dir", str(tmp_path), cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (checkpoint,) = tmp_path.glob("carphone/nvp/*/nerfstudio_models/*.ckpt")
    prefix = "_model.field."
    trained = {
        key[len(prefix) :]: value for key, value in torch.load(checkpoint, map_location="cpu")["pipeline"].items() if key.startswith(prefix)
    }
    video = load_video("sample:carphone", FrameSelection(max_frames=8))
    config = FitConfig(method="nvp", device="cpu", steps=steps, train_batch=batch, seed=seed, eval_every=float("inf"))
    _, core = psnr_against_time(config, video, VideoShape(video.num_frames, video.height, video.width))
    initial = METHODS["nvp"].field.setup(shape=core.shape).state_dict()
    core_state = core.state_dict()
    assert sorted(trained) == sorted(core_state)
    for key, value in core_state.items():
        moved = (value - initial[key]).abs().max()
        assert moved > 0, key  # training changed it
        assert (trained[key] - value).abs().max() <= 1e-5 * moved, key


def test_every_row_of_the_method_table_is_registered_with_nerfstudio() -> None:
    # What `ns-train` lists: the installed package's entry points (a row without one would be silently missing).
    group = entry_points(group="nerfstudio.method_configs")
    ours = {entry.name: entry.load() for entry in group if entry.value.startswith("method_configs.")}
    assert sorted(ours) == sorted(METHODS)
    for name, specification in ours.items():
        assert specification.config.method_name == name
        assert specification.config.pipeline.model.field == METHODS[name].field
