"""Checkpoints and other outputs are never half-written, and a resume passes over one that is."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
import torch
from conftest import TINY_RUN_ARGS, run_command, train_tiny_run

from nvp_nerfstudio.data.output import written_atomically
from nvp_nerfstudio.plugin.training import VideoTrainerConfig, newest_readable_step


def test_an_interrupted_write_leaves_the_older_file_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "step-000000010.ckpt"
    torch.save({"step": 10}, target)
    older = target.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with written_atomically(target) as temporary:
            torch.save({"step": 20, "weights": torch.zeros(1000)}, temporary)
            raise KeyboardInterrupt  # a kill between the write and the rename
    assert target.read_bytes() == older and [p.name for p in tmp_path.iterdir()] == [target.name]
    with written_atomically(target) as temporary:
        torch.save({"step": 20}, temporary)
    assert torch.load(target)["step"] == 20 and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_resume_passes_over_a_half_written_newest_checkpoint(tmp_path: Path, capsys) -> None:
    for step in (100, 200, 300):
        torch.save({"step": step, "weights": torch.arange(10_000.0)}, tmp_path / f"step-{step:09d}.ckpt")
    whole = (tmp_path / "step-000000300.ckpt").read_bytes()
    (tmp_path / "step-000000300.ckpt").write_bytes(whole[: len(whole) // 3])  # as a kill during torch.save left it
    (tmp_path / ".step-000000400.ckpt.abc.tmp").write_bytes(b"")  # a temporary name a kill left behind
    assert newest_readable_step(tmp_path) == 200
    assert "step-000000300.ckpt cannot be read" in capsys.readouterr().out
    for path in tmp_path.glob("step-*.ckpt"):
        path.write_bytes(b"")
    with pytest.raises(SystemExit, match="holds no readable checkpoint"):
        newest_readable_step(tmp_path)


def test_zero_iterations_is_refused_in_one_line() -> None:
    with pytest.raises(SystemExit, match="--max-num-iterations must be at least 1, got 0"):
        VideoTrainerConfig(max_num_iterations=0)


@pytest.fixture(scope="module")
def run_with_checkpoints(tmp_path_factory) -> Path:
    """A tiny run that kept its checkpoints of steps 5 and 9; returns its config.yml."""
    root = tmp_path_factory.mktemp("run")
    return train_tiny_run(root / "outputs", "sample:carphone", "--max-num-iterations", "10", "--steps-per-save", "5",
                          "--save-only-latest-checkpoint", "False")


def half_written_newest(config: Path) -> Path:
    """A newest checkpoint cut short beside the run's good ones, as a kill during nerfstudio's own save leaves it."""
    models = config.parent / "nerfstudio_models"
    newest = models / "step-000000099.ckpt"
    newest.write_bytes((models / "step-000000009.ckpt").read_bytes()[:5000])
    return newest


def test_loading_a_run_passes_over_a_half_written_newest_checkpoint(run_with_checkpoints: Path, capsys) -> None:
    from nvp_nerfstudio.plugin.runs import load_run

    newest = half_written_newest(run_with_checkpoints)
    try:
        *_, checkpoint = load_run(run_with_checkpoints)
    finally:
        newest.unlink()
    output = capsys.readouterr().out
    assert checkpoint == run_with_checkpoints.parent / "nerfstudio_models" / "step-000000009.ckpt"
    assert output.count("cannot be read") == 1 and f"{newest} cannot be read" in output


def test_ns_eval_passes_over_a_half_written_newest_checkpoint(run_with_checkpoints: Path) -> None:
    newest = half_written_newest(run_with_checkpoints)
    try:
        output = run_with_checkpoints.parent / "eval.json"
        result = run_command("ns-eval", "--load-config", str(run_with_checkpoints), "--output-path", str(output), cwd=output.parent)
    finally:
        newest.unlink()
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("cannot be read") == 1 and f"{newest} cannot be read" in result.stdout
    assert json.loads(output.read_text())["checkpoint"].endswith("step-000000009.ckpt")


@pytest.mark.parametrize("method", ["nvp", "nvp-c"])
def test_a_resumed_run_ends_with_the_field_of_a_run_straight_through(tmp_path: Path, method: str) -> None:
    """Stopped after step 10 of 20 and resumed for the 9 steps left, a run ends bit for bit where one run of 20 steps
    does: same pixels drawn (train and eval samplers), same schedule (the interrupted run's), same optimiser state;
    for a field trained for rate, the same switch from noise to rounding (at 85 % of the interrupted run's steps)."""
    schedule = ["--steps-per-eval-batch", "4", "--save-only-latest-checkpoint", "False", "--steps-per-save", "10"]
    straight = train_tiny_run(tmp_path / "straight", "sample:carphone", *schedule, "--max-num-iterations", "20", method=method).parent
    interrupted = tmp_path / "interrupted" / "nerfstudio_models"
    interrupted.mkdir(parents=True)
    # What a run killed after its save at step 10 leaves: the straight run's own checkpoint of that step.
    (interrupted / "step-000000010.ckpt").write_bytes((straight / "nerfstudio_models" / "step-000000010.ckpt").read_bytes())
    resumed = train_tiny_run(
        tmp_path / "resumed", "sample:carphone", *schedule, "--max-num-iterations", "9", "--load-dir", str(interrupted), method=method
    ).parent
    ends = [torch.load(run / "nerfstudio_models" / "step-000000019.ckpt", map_location="cpu") for run in (straight, resumed)]
    fields = [{key: value for key, value in end["pipeline"].items() if key.startswith("_model.field.")} for end in ends]
    assert sorted(fields[0]) == sorted(fields[1]) and fields[0]
    for key, value in fields[0].items():
        assert torch.equal(value, fields[1][key]), key
    assert ends[0]["random_state"]["samplers"]["train"].equal(ends[1]["random_state"]["samplers"]["train"])


def test_ns_train_refuses_zero_iterations_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    result = run_command("ns-train", "nvp", "--data", "sample:carphone", "--max-num-iterations", "0", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr and "KeyError" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: --max-num-iterations must be at least 1, got 0"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("failure", ["truncated video", "no readable checkpoint"])
def test_a_failed_start_leaves_no_run_folder(tmp_path: Path, failure: str) -> None:
    """ns-train writes config.yml only once the data and the checkpoint to resume from have loaded; before, every
    failed start left a run folder holding only config.yml."""
    from nvp_nerfstudio.data.video import FrameSelection, load_video

    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w", options={"movflags": "faststart"}) as output:  # index first: cut short, it still opens
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        for frame in load_video("sample:carphone", FrameSelection(max_frames=20)).frames.numpy():
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    if failure == "truncated video":
        clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    models = tmp_path / "models"
    models.mkdir()
    (models / "step-000000100.ckpt").write_bytes(b"")  # a save a kill cut short
    resume = ["--load-dir", str(models)] if failure == "no readable checkpoint" else []
    output = tmp_path / "out"
    result = run_command("ns-train", "nvp", "--data", str(clip), *TINY_RUN_ARGS, *resume, "--output-dir", str(output), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and ("truncated or damaged" in last if failure == "truncated video" else "holds no readable checkpoint" in last)
    assert list(output.rglob("*")) == []
