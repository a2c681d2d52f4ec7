"""Checkpoints and other outputs are never half-written, and a resume passes over one that is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_command, train_tiny_run

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
