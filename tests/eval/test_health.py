"""Training health beside the results (ehr_assets.eval.health): the same rules as the WARN checks
jepa_beats_mean_predictor and effective_rank_floor, read from the artifacts every result comes from, and shown by the
report command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from ehr_assets.eval import report
from ehr_assets.eval.health import health_report, not_learned, training_health
from ehr_assets.specs import load_project

from ..conftest import make_tiny_project


def _log(root, recipe, cohort, ends: float | None):
    d = root / f"{recipe}_checkpoint" / cohort
    d.mkdir(parents=True)
    curve = [{"step": s, "sft_loss": 1.0} for s in range(10, 101, 10)]
    if ends is not None:  # the normalized JEPA loss falls linearly from 1.1 to `ends`
        for r in curve:
            r["jepa_loss_norm"] = 1.1 - (1.1 - ends) * r["step"] / 100
    (d / "train_log.json").write_text(json.dumps({"loss_curve": curve}))


def _emb(root, recipe, cohort, emb):
    d = root / f"{recipe}_embeddings" / cohort
    d.mkdir(parents=True)
    save_file({"embeddings": emb.astype(np.float32)}, str(d / "embeddings.safetensors"))


@pytest.fixture
def runs(tmp_path):
    root = make_tiny_project(tmp_path / "project", {"msk": 20, "inspect": 20}, recipes=("sft", "jepa", "hybrid"))
    art = tmp_path / "home" / "artifacts"
    rng = np.random.default_rng(0)
    _log(art, "sft", "msk", None)
    _log(art, "jepa", "msk", 0.5)  # tail mean of the last 2 of 10 records: 0.5 + 0.6 * 0.05 = 0.53
    _log(art, "hybrid", "msk", 0.95)  # 0.95 + 0.15 * 0.05 = 0.9575
    _log(art, "jepa", "inspect", 0.7)
    _emb(art, "sft", "msk", rng.normal(size=(50, 32)))
    _emb(art, "jepa", "msk", np.outer(rng.normal(size=50), rng.normal(size=32)))  # rank 1: collapsed
    return root, art


def test_health_follows_the_check_rules(runs):
    root, art = runs
    project = load_project(root)
    h = training_health(project, art).set_index(["cohort", "recipe"])
    assert sorted(h.index) == [("inspect", "jepa"), ("msk", "hybrid"), ("msk", "jepa"), ("msk", "sft")]
    assert h.loc[("msk", "jepa"), "jepa_loss_norm_end"] == pytest.approx(0.53, abs=1e-4)
    assert h.loc[("msk", "hybrid"), "jepa_loss_norm_end"] == pytest.approx(0.9575, abs=1e-4)
    assert h["jepa_learned"].to_dict() == {
        ("msk", "sft"): "n/a",
        ("msk", "jepa"): "yes",
        ("msk", "hybrid"): "no",
        ("inspect", "jepa"): "yes",
    }
    assert h.loc[("msk", "sft"), "rank_ok"] == "yes" and h.loc[("msk", "sft"), "health"] == "ok"
    assert h.loc[("msk", "jepa"), "rank_ok"] == "no" and h.loc[("msk", "jepa"), "effective_rank"] < 1.5
    assert h.loc[("msk", "jepa"), "health"].startswith("rank 1.")
    assert h.loc[("msk", "hybrid"), "health"] == "JEPA not learned (0.958 >= 0.9)"
    assert h.loc[("inspect", "jepa"), "rank_ok"] == "unknown"  # no embeddings: not measured
    health = training_health(project, art)
    # a run with no row (hybrid on inspect: never trained) is not shown to have learned
    assert not_learned(project, health, ["msk", "inspect"], ["jepa", "hybrid", "sft", "count_baseline"]) == [
        "hybrid@msk",
        "hybrid@inspect",
    ]
    text = health_report(health)
    assert "WARNING: the JEPA objective was not learned (or not shown to be) in 1 of 3 JEPA runs" in text
    assert "(hybrid@msk)" in text and max(map(len, text.splitlines())) <= 100  # fits a terminal


def test_the_report_command_shows_the_health(runs, capsys, monkeypatch):
    root, art = runs
    monkeypatch.setenv("EHR_PROJECT_DIR", str(root))
    wh = art.parent / "warehouse.duckdb"  # artifacts/ beside it: found without --artifacts
    assert report.main(["--format", "health", "--warehouse", str(wh), "--cohort", "msk"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {ln.split()[1]: ln.split()[2:4] for ln in out[4:7]}
    assert rows == {"sft": ["n/a", "28.9"], "jepa": ["0.530", "yes"], "hybrid": ["0.958", "no"]}
    assert any(ln.startswith("WARNING") and "hybrid@msk" in ln for ln in out)
