"""Training processes keep freed memory for reuse: a step's table-sized gradients do not fault in fresh pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
for step in range(24):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    grid(points).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[4:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_training_steps_reuse_freed_gradient_memory_without_page_faults() -> None:
    # Each step frees and reallocates a table-sized gradient: above glibc's mmap threshold (32 MB at most)
    # that is a fresh mapping faulted in page by page (~9100 faults a step here) unless the heap keeps it.
    def faults_in_twenty_steps(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", GRID_TRAINING_LOOP, mode], capture_output=True, text=True, check=True)
        return int(result.stdout)

    plain = faults_in_twenty_steps("plain")
    assert plain > 100_000
    # Mostly none: now and then a step's gradient does not fit the freed block and takes fresh pages.
    assert faults_in_twenty_steps("reuse") < plain / 4


COMMAND_FREEING_MEMORY = """
import sys, torch
from nvp_nerfstudio.cli import command
def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
@command(memory=sys.argv[1])
def main(config):
    before = rss_mib()
    torch.ones(1 << 26)  # 256 MiB, freed at once
    return rss_mib() - before
print(main(None))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("memory", ["reuse", "return"])
def test_a_command_sets_the_allocator_it_asks_for(memory: str) -> None:
    result = subprocess.run([sys.executable, "-c", COMMAND_FREEING_MEMORY, memory], capture_output=True, text=True, check=True)
    retained = float(result.stdout)
    assert retained > 200 if memory == "reuse" else retained < 50


RETAIN_AND_RELEASE = """
import torch
from nvp_nerfstudio.memory import release_freed_memory, reuse_freed_memory
def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
reuse_freed_memory()
before = rss_mib()
torch.ones(1 << 26)  # 256 MiB, freed at once
retained = rss_mib()
release_freed_memory()
print(retained - before, rss_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_stays_for_reuse_until_released() -> None:
    result = subprocess.run([sys.executable, "-c", RETAIN_AND_RELEASE], capture_output=True, text=True, check=True)
    retained, after_release = map(float, result.stdout.split())
    assert retained > 200  # kept in the heap for the next step's allocations
    assert after_release < 50  # benchmark runs start from the memory they use


RETURN_AFTER_A_FIELD = """
import torch
from nvp_nerfstudio.fields.base import VideoField, VideoFieldConfig, VideoShape
from nvp_nerfstudio.memory import return_freed_memory
def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
return_freed_memory()  # nvp-long's choice, before it builds its segments' fields
VideoField(VideoFieldConfig(), VideoShape(2, 4, 4))  # a field asks for reuse: it must not undo the choice
before = rss_mib()
torch.ones(1 << 26)  # 256 MiB, freed at once
print(rss_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_process_that_returns_freed_memory_keeps_doing_so_after_building_fields() -> None:
    # nvp-long's peak must not grow with the clip: freed segment tensors go back to the system.
    result = subprocess.run([sys.executable, "-c", RETURN_AFTER_A_FIELD], capture_output=True, text=True, check=True)
    assert float(result.stdout) < 50
