"""Usable cores from real cgroup files (v2 ``cpu.max``, v1 CFS quota) and the affinity mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from predictors.cpus import available_cores, cpu_quota, default_threads


def cgroup_v2(tmp_path: Path, cpu_max: str) -> Path:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def cgroup_v1(tmp_path: Path, quota: int, period: int) -> Path:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


@pytest.mark.parametrize(("cpu_max", "quota"), [("max 100000", None), ("150000 100000", 1.5), ("50000 100000", 0.5)])
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, quota: float | None) -> None:
    assert cpu_quota(cgroup_v2(tmp_path, cpu_max)) == quota


@pytest.mark.parametrize(("quota", "period", "cores"), [(-1, 100000, None), (200000, 100000, 2.0)])
def test_cgroup_v1_quota(tmp_path: Path, quota: int, period: int, cores: float | None) -> None:
    assert cpu_quota(cgroup_v1(tmp_path, quota, period)) == cores


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path) is None
    assert available_cores(tmp_path) == len(os.sched_getaffinity(0))


def test_the_quota_caps_the_affinity_and_threads_round_down(tmp_path: Path) -> None:
    limited = cgroup_v2(tmp_path, "150000 100000")  # resources.limits.cpu: 1500m
    assert available_cores(limited) == min(1.5, len(os.sched_getaffinity(0)))
    assert default_threads(limited) == 1
    assert default_threads(cgroup_v2(tmp_path, "10000 100000")) == 1  # 100m still gets one thread
