"""`python -m ehr_assets.training` without Dagster: data bundles, errors, and a killed run that resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from ehr_assets.train import TrainData

from .test_training import BOS, EOS, MASK, PAD, TINY, V, make_data

REPO = Path(__file__).resolve().parents[2]


def test_bundle_roundtrip(tmp_path):
    d = make_data(n=5, seed=2)
    d.jepa_examples.append((np.array([BOS, 7, 8, 9, EOS]), 2))  # an example outside the sft sequences
    d.save(tmp_path / "b")
    e = TrainData.load(tmp_path / "b")
    assert len(e.sft_sequences) == 5 and len(e.jepa_examples) == 6
    for a, b in zip(d.sft_sequences, e.sft_sequences):
        np.testing.assert_array_equal(a, b)
    for (a, i), (b, j) in zip(d.jepa_examples, e.jepa_examples):
        np.testing.assert_array_equal(a, b)
        assert i == j
    assert (e.vocab_size, e.pad_id, e.mask_id, e.bos_id, e.eos_id) == (V, PAD, MASK, BOS, EOS)
    with pytest.raises(FileNotFoundError, match="not a training-data bundle"):
        TrainData.load(tmp_path)


def _recipe_file(tmp_path: Path, steps: int, every: int) -> Path:
    spec = {
        "name": "hyb",
        "backbone": TINY,
        "objective": "hybrid",
        "lora": {"rank": 4, "alpha": 8},
        "optimizer": {"lr": 5e-3, "schedule": "cosine", "warmup_steps": 5},
        "jepa": {"ema_tau": 0.99, "ema_tau_end": 1.0},
        "training": {
            "steps": steps,
            "batch_size": 4,
            "seq_len": 32,
            "log_every": 50,
            "seed": 3,
            "checkpoint_every": every,
            "keep_checkpoints": 2,
        },
    }
    p = tmp_path / "hyb.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _cmd(recipe: Path, data: Path, out: Path, rdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ehr_assets.training",
        "--recipe",
        str(recipe),
        "--data",
        str(data),
        "--out",
        str(out),
        "--resume-dir",
        str(rdir),
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_cli_errors_are_clear(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "ehr_assets.training", "--recipe", "nope", "--cohort", "msk"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
    )
    assert r.returncode == 2 and "no recipe 'nope'" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ehr_assets.training",
            "--recipe",
            "sft",
            "--cohort",
            "msk",
            "--warehouse",
            str(tmp_path / "none.duckdb"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
    )
    assert r.returncode == 2 and "no warehouse" in r.stderr


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a training process after its first step checkpoint; the next run resumes there and ends with the
    same adapter, EMA and predictor bits as a run that was never interrupted."""
    make_data(n=16, seed=5).save(tmp_path / "data")
    recipe = _recipe_file(tmp_path, steps=300, every=25)

    ref = subprocess.run(
        _cmd(recipe, tmp_path / "data", tmp_path / "ref", tmp_path / "ref_resume"),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
    )
    assert ref.returncode == 0, ref.stderr
    assert not (tmp_path / "ref_resume").exists()  # cleaned after success

    out, rdir = tmp_path / "out", tmp_path / "resume"
    proc = subprocess.Popen(
        _cmd(recipe, tmp_path / "data", out, rdir),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(rdir.glob("step_*/trainer_state.json")):
        if proc.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_done = sorted(p.name for p in rdir.glob("step_*"))
    assert steps_done and not out.exists()  # killed mid-run: no checkpoint published

    again = subprocess.run(
        _cmd(recipe, tmp_path / "data", out, rdir), capture_output=True, text=True, cwd=REPO, env=ENV
    )
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stdout and "(resumed at step" in again.stdout
    for f in ("adapter/adapter_model.safetensors", "ema_adapter.safetensors", "predictor.safetensors"):
        a, b = load_file(str(tmp_path / "ref" / f)), load_file(str(out / f))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (f, k)
    import json

    ca = json.loads((tmp_path / "ref" / "train_log.json").read_text())["loss_curve"]
    cb = json.loads((out / "train_log.json").read_text())["loss_curve"]
    assert json.dumps(ca) == json.dumps(cb)  # the curve is continued, not restarted


def test_step_checkpoint_of_another_recipe_is_not_resumed(tmp_path):
    from ehr_assets.specs import RecipeSpec, load_spec
    from ehr_assets.train import train

    data = make_data(n=8, seed=1)
    r = load_spec(_recipe_file(tmp_path, steps=6, every=3), RecipeSpec)
    logs: list[str] = []
    train(r, data, tmp_path / "a", resume_dir=tmp_path / "rs", log=logs.append)
    assert (tmp_path / "rs" / "step_000003" / "trainer_state.safetensors").is_file()
    import shutil

    shutil.copytree(tmp_path / "rs", tmp_path / "rs2")
    other = RecipeSpec.model_validate({**r.model_dump(), "optimizer": {**r.optimizer.model_dump(), "lr": 1e-3}})
    logs.clear()
    train(other, data, tmp_path / "b", resume_dir=tmp_path / "rs", log=logs.append)
    assert not any("resuming" in m for m in logs)
    assert any("ignoring step checkpoint" in m for m in logs)
    # the same recipe resumes from it
    logs.clear()
    train(r, data, tmp_path / "c", resume_dir=tmp_path / "rs2", log=logs.append)
    assert any("resuming from" in m and "step_000003" in m for m in logs)


def test_data_parallel_processes_train_the_same_model_as_one(tmp_path):
    """torchrun with 2 CPU processes (gloo) x batch 2 reads the same global batches as 1 process x batch 4 and,
    with equal-length timelines (so per-process token means average to the global one), ends with the same weights."""
    import json

    d = make_data(n=12, seed=7, min_len=20, max_len=21)  # every timeline 22 tokens < seq_len: no random windows
    d.save(tmp_path / "data")
    spec = {
        "name": "dp",
        "backbone": TINY,
        "objective": "sft",
        "lora": {"rank": 4, "alpha": 8},
        "optimizer": {"lr": 5e-3, "schedule": "constant", "warmup_steps": 0, "grad_clip": None},
        "training": {"steps": 6, "batch_size": 4, "seq_len": 32, "log_every": 1, "seed": 3},
    }
    one = tmp_path / "dp.yaml"
    one.write_text(yaml.safe_dump(spec))
    spec["training"]["batch_size"] = 2
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump({**spec, "name": "two"}))
    r1 = subprocess.run(
        _cmd(one, tmp_path / "data", tmp_path / "o1", tmp_path / "r1"),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
    )
    assert r1.returncode == 0, r1.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    r2 = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "ehr_assets.training",
            "--recipe",
            str(two),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "o2"),
            "--resume-dir",
            str(tmp_path / "r2"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
    )
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "x 2 processes" in r2.stdout and r2.stdout.count("wrote ") == 1  # only process 0 writes
    a = load_file(str(tmp_path / "o1" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "o2" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ca = json.loads((tmp_path / "o1" / "train_log.json").read_text())["loss_curve"]
    cb = json.loads((tmp_path / "o2" / "train_log.json").read_text())["loss_curve"]
    np.testing.assert_allclose([c["loss"] for c in ca], [c["loss"] for c in cb], rtol=1e-5)
