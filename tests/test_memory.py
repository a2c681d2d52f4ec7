"""Training processes keep freed memory for reuse: a step's table-sized gradients do not fault in fresh pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nvp_nerfstudio.fields import base

GRID_TRAINING_LOOP = """
import resource, sys, torch
from nvp_nerfstudio.encodings.grid import GridEncodingConfig
from nvp_nerfstudio.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    reuse_freed_memory()
grid = GridEncodingConfig(num_levels=8, log2_hashmap_size=20).setup(finest_resolution=(512, 512, 512))  # 37 MB of table
optimizer = torch.optim.AdamW(grid.parameters(), fused=True)
points = torch.rand(4096, 3, generator=torch.Generator().manual_seed(0))
faults = []
for step in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    grid(points).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[6:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_training_steps_reuse_freed_gradient_memory_without_page_faults() -> None:
    # Each step frees and reallocates a table-sized gradient: above glibc's mmap threshold (32 MB at most)
    # that is a fresh mapping faulted in page by page (~9100 faults a step here) unless the heap keeps it.
    def faults_in_six_steps(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", GRID_TRAINING_LOOP, mode], capture_output=True, text=True, check=True)
        return int(result.stdout)

    assert faults_in_six_steps("plain") > 40_000
    assert faults_in_six_steps("reuse") < 12_000  # at most one step's worth


def test_every_field_sets_up_memory_reuse(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(base, "reuse_freed_memory", lambda: calls.append(True))
    base.VideoField(base.VideoFieldConfig(), base.VideoShape(2, 4, 4))
    assert calls == [True]
