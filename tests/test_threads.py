"""ehr_assets.threads: the policy's arithmetic and precedence, the cgroup quota, and that apply() reaches the real
libraries (OpenBLAS through threadpoolctl, torch, and libraries or processes started afterwards), then restores them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import threadpoolctl
import torch

from ehr_assets import threads
from ehr_assets.threads import ENV_CONCURRENT, ENV_THREADS, apply, cgroup_cpu_limit, limited, resolve

from .conftest import REPO


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.delenv(ENV_THREADS, raising=False)
    monkeypatch.delenv(ENV_CONCURRENT, raising=False)


def test_cores_are_divided_among_the_steps_that_may_run_at_once(eight_cores):
    assert resolve(default_concurrent=1).threads == 8
    p = resolve(default_concurrent=3)
    assert (p.threads, p.cores, p.concurrent, p.source) == (2, 8, 3, "cores / steps")
    assert resolve(default_concurrent=16).threads == 1  # never below one
    assert p.describe() == "2 threads per step (8 usable cores / 3 steps at once)"


def test_the_most_specific_setting_wins(eight_cores, monkeypatch):
    monkeypatch.setenv(ENV_CONCURRENT, "4")
    assert resolve(default_concurrent=1).threads == 2  # EHR_CONCURRENT_STEPS beats the caller's default
    assert resolve(concurrent=2, default_concurrent=1).threads == 4  # an explicit figure beats EHR_CONCURRENT_STEPS
    monkeypatch.setenv(ENV_THREADS, "3")
    p = resolve(concurrent=2)
    assert (p.threads, p.source) == (3, ENV_THREADS)  # EHR_THREADS beats the division
    p = resolve(5, concurrent=2)
    assert (p.threads, p.source) == (5, "explicit")  # an explicit thread count beats EHR_THREADS


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_bad_environment_value_is_an_error_naming_the_variable(eight_cores, monkeypatch, value):
    monkeypatch.setenv(ENV_THREADS, value)
    with pytest.raises(ValueError, match=f"{ENV_THREADS}={value!r}"):
        resolve()
    monkeypatch.delenv(ENV_THREADS)
    monkeypatch.setenv(ENV_CONCURRENT, value)
    with pytest.raises(ValueError, match=ENV_CONCURRENT):
        resolve()
    with pytest.raises(ValueError, match="positive"):
        resolve(0)


def test_cgroup_quota(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(tmp_path) == 3.0  # cgroup v1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_limit(tmp_path) is None
    # the quota caps the affinity mask, rounded up
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    assert threads.usable_cores() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cores() == 64


def blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}


def test_apply_limits_blas_and_torch_and_restores_them(monkeypatch):
    monkeypatch.delenv(ENV_THREADS, raising=False)
    before_torch, before_blas = torch.get_num_threads(), blas_threads()
    before_env = os.environ.get("OMP_NUM_THREADS")
    target = 1 if before_torch != 1 else 2  # a value that differs from the process's own
    with limited(target):
        assert torch.get_num_threads() == target
        assert blas_threads() == {target}
        assert os.environ["OMP_NUM_THREADS"] == os.environ[ENV_THREADS] == str(target)
    assert torch.get_num_threads() == before_torch
    assert blas_threads() == before_blas
    assert os.environ.get("OMP_NUM_THREADS") == before_env and ENV_THREADS not in os.environ
    with limited(None):  # None leaves the process as it is
        assert torch.get_num_threads() == before_torch


def test_libraries_loaded_and_processes_started_after_apply_follow_it():
    """In a fresh interpreter: numpy loaded, apply(1), then torch imported and a child process started."""
    code = f"""
import json, os, subprocess, sys
sys.path.insert(0, {str(REPO)!r})
import numpy
from ehr_assets.threads import apply, resolve
apply(1)
import torch, threadpoolctl
child = subprocess.run([sys.executable, "-c",
    "import sys; sys.path.insert(0, {str(REPO)!r}); from ehr_assets.threads import resolve; p = resolve(); "
    "print(p.threads, p.source)"], capture_output=True, text=True, check=True).stdout.split()
print(json.dumps({{"torch": torch.get_num_threads(),
    "libs": {{i["internal_api"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}}, "child": child}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_THREADS, "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=REPO)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] == 1  # torch imported after apply() starts with one thread
    assert set(got["libs"].values()) == {1}, got["libs"]  # OpenBLAS (loaded before) and torch's OpenMP
    assert got["child"] == ["1", ENV_THREADS]  # a child process gets the step's share


def test_apply_refuses_a_bad_count():
    with pytest.raises(ValueError, match="positive"):
        apply(0)
