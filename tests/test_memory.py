"""The process's memory settings, counted for real: page faults of a batched forward with malloc's
thresholds set, and the objects a full garbage collection walks once the loaded heap is frozen.

Each case runs in its own interpreter (malloc's thresholds are process-wide and cannot be put
back), with one torch thread so that every allocation is the main thread's, as on a one-core
server whose forwards run on the event loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from predictors.memory import keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts faults in /proc")

FORWARDS = """
import json, sys, torch
from predictors.memory import keep_freed_memory
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


def in_fresh_interpreter(code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` in its own interpreter; the JSON object it prints last."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def forward_faults(cache_mb: int) -> dict[str, Any]:
    return in_fresh_interpreter(FORWARDS, str(cache_mb))


def test_kept_memory_serves_every_forward_without_faulting_it_in() -> None:
    kept = forward_faults(256)
    assert kept["kept"]
    # one activation of this batch is 256 x 16 x 8 x 8 floats (256 pages); glibc's defaults fault
    # 30 to 1,200 pages in again per forward here, depending on where their thresholds settle
    assert kept["faults_per_forward"] < 8, kept


ROUNDS = """
import json, sys
import numpy as np
from predictors.memory import keep_freed_memory
kept = keep_freed_memory(int(sys.argv[1]))

def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])

rounds = []
for _ in range(3):
    before = faults()
    blocks = [np.ones(100_000, np.uint8) for _ in range(1000)]  # 100 MB in blocks below mmap's threshold
    del blocks
    rounds.append(faults() - before)
print(json.dumps({"kept": kept, "faults": rounds}))
"""


def allocation_rounds(cache_mb: int) -> dict[str, Any]:
    return in_fresh_interpreter(ROUNDS, str(cache_mb))


def test_freed_memory_stays_for_the_next_round_instead_of_going_back_to_the_os() -> None:
    pages = 100_000_000 // 4096
    default, kept = allocation_rounds(0), allocation_rounds(256)
    assert not default["kept"] and kept["kept"]
    first, *again = kept["faults"]
    assert first > pages // 2 and all(n < 100 for n in again), kept  # faulted in once, then reused
    assert all(n > pages // 2 for n in default["faults"]), default  # glibc trims the heap's top each time


def test_zero_leaves_malloc_alone() -> None:
    assert keep_freed_memory(0) is False


FREEZE = """
import gc, json
import fastapi, kserve, torch  # the heap a loaded server holds, give or take the model
from predictors.memory import freeze_loaded_heap
before = len(gc.get_objects())
frozen = freeze_loaded_heap()
garbage = [[i] for i in range(1000)]  # what requests create after loading is still tracked
print(json.dumps({"before": before, "frozen": frozen, "after": len(gc.get_objects())}))
"""


def test_a_frozen_heap_leaves_full_collections_only_what_came_after() -> None:
    counts = in_fresh_interpreter(FREEZE)
    assert counts["before"] > 50_000 and counts["frozen"] >= counts["before"] // 2, counts
    assert 1000 <= counts["after"] < counts["before"] // 20, counts  # a full collection walks only these
