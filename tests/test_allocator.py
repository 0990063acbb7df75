"""The malloc setting keeps a batched forward's buffers in the process: counted in real page faults.

Each case runs in its own interpreter (malloc's thresholds are process-wide and cannot be put
back), with one torch thread so that every allocation is the main thread's, as on a one-core
server whose forwards run on the event loop.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from predictors.allocator import keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts faults in /proc")

FORWARDS = """
import json, sys, torch
from predictors.allocator import keep_freed_memory
torch.set_num_threads(1)
kept = keep_freed_memory(int(sys.argv[1]))

def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])

torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1),
    torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32 * 16, 10),
).eval().to(memory_format=torch.channels_last)
x = torch.rand(256, 1, 8, 8).contiguous(memory_format=torch.channels_last)
with torch.inference_mode():
    for _ in range(20):
        net(x)
    before = faults()
    for _ in range(100):
        net(x)
print(json.dumps({"kept": kept, "faults_per_forward": (faults() - before) / 100}))
"""


def forward_faults(cache_mb: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", FORWARDS, str(cache_mb)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_kept_memory_serves_every_forward_without_faulting_it_in() -> None:
    kept = forward_faults(256)
    default = forward_faults(0)
    assert kept["kept"] and not default["kept"]
    # one activation of this batch is 256 x 16 x 8 x 8 floats (256 pages): glibc's defaults fault
    # some of them in again on every forward; kept memory is reused
    assert kept["faults_per_forward"] < 8, (kept, default)
    assert default["faults_per_forward"] > 2 * kept["faults_per_forward"], (kept, default)


def test_zero_leaves_malloc_alone() -> None:
    assert keep_freed_memory(0) is False
