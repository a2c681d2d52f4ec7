"""Checkpoints and other outputs are never half-written, and a resume passes over one that is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
