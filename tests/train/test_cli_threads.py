"""`python -m ehr_assets.training --threads N`: the training CLI applies the thread policy (ehr_assets.threads) before
it trains, and says so; without the flag the usable cores are shared by the local training processes."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ehr_assets import threads
from ehr_assets.train.cli import thread_policy

from .test_training import TINY, make_data

REPO = Path(__file__).resolve().parents[2]


def test_local_processes_share_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 6)
    for k in (threads.ENV_THREADS, threads.ENV_CONCURRENT):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun / accelerate: 2 processes on this machine
    assert thread_policy(argparse.Namespace(threads=None)).threads == 3
    assert thread_policy(argparse.Namespace(threads=5)).threads == 5
    monkeypatch.setenv(threads.ENV_THREADS, "4")
    assert thread_policy(argparse.Namespace(threads=None)).threads == 4


def test_threads_flag_beats_the_environment_and_reaches_the_loop(tmp_path):
    make_data(n=6, seed=1).save(tmp_path / "data")
    spec = {
        "name": "thr",
        "backbone": TINY,
        "objective": "sft",
        "training": {"steps": 2, "batch_size": 2, "seq_len": 32, "log_every": 1, "monitor_nodes": 0},
    }
    recipe = tmp_path / "thr.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "ehr_assets.training", "--recipe", str(recipe), "--data", str(tmp_path / "data")]
    cmd += ["--out", str(tmp_path / "out"), "--resume-dir", str(tmp_path / "r"), "--threads", "1"]
    env = {**os.environ, threads.ENV_THREADS: "2", "OMP_NUM_THREADS": "2"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    assert "threads: 1 thread (explicit;" in r.stdout
    assert "thr: sft on cpu (1 thread)" in r.stdout  # what torch runs the loop with
