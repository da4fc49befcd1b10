"""The training-health checks on a real Dagster instance: ``jepa_beats_mean_predictor`` (normalized JEPA loss near 1)
and ``effective_rank_floor`` (node embeddings spanning too few directions) warn, with their figures, and stop
nothing downstream; the rules themselves on curves and matrices with known answers."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ehr_assets import keys
from ehr_assets.defs.health_checks import health_checks
from ehr_assets.defs.io import save_embeddings
from ehr_assets.defs.resources import ArtifactStore
from ehr_assets.specs import load_project
from ehr_assets.stats import (
    effective_rank_floor,
    effective_rank_problems,
    jepa_mean_predictor_problems,
)
from ehr_assets.train import train

from ..conftest import make_tiny_project
from .test_training import make_data, quiet, recipe

HEALTH = ("jepa_beats_mean_predictor", "effective_rank_floor")


# ------------------------------------------------------------------------------------------------- the rules
def _curve(norms):
    return [{"step": i + 1, "jepa_loss_norm": v} for i, v in enumerate(norms)]


def test_normalized_jepa_loss_rule():
    # ends (last fifth of the logged steps) at or above 0.9: warn
    problems, md = jepa_mean_predictor_problems(_curve([1.2, 1.0, 0.6, 0.5, 0.95, 0.92, 0.9, 0.98, 0.91, 0.95]))
    assert problems and "0.930" in problems[0] and md["normalized_jepa_loss_end"] == pytest.approx(0.93)
    assert md["normalized_jepa_loss_start"] == pytest.approx(1.2)
    # a predictor that learned: no warning, whatever the start
    assert jepa_mean_predictor_problems(_curve([1.3, 1.1, 0.9, 0.7, 0.6, 0.5, 0.45, 0.42, 0.4, 0.41]))[0] == []
    # NaN entries (steps not logged) are skipped; no JEPA loss at all: nothing to judge
    assert jepa_mean_predictor_problems(_curve([1.0, float("nan"), 0.95]))[0]
    assert jepa_mean_predictor_problems([{"step": 1, "loss": 2.0}])[0] == []


def test_effective_rank_floor_rule():
    rng = np.random.default_rng(0)
    healthy = rng.normal(size=(300, 64))
    assert effective_rank_floor(64) == 2.0 and effective_rank_floor(4096) == 128.0
    assert effective_rank_problems(healthy)[0] == []
    line = np.outer(rng.normal(size=300), rng.normal(size=64)) + 1e-3 * rng.normal(size=(300, 64))
    problems, md = effective_rank_problems(line)
    assert problems and md["effective_rank"] < 2.0 and md["floor"] == 2.0
    assert effective_rank_problems(healthy, floor=100.0)[0]  # a recipe's own floor
    assert effective_rank_problems(healthy[:1])[0] == []  # one node: nothing to measure


# ----------------------------------------------------------------------------------------- in a Dagster run
@pytest.fixture(scope="module")
def health_run(tmp_path_factory):
    """A real ``jepa`` checkpoint (a 2-step run whose predictor cannot learn: lr 1e-7) in partition ``inspect``,
    one whose logged curve ends low in ``msk``; healthy embeddings in ``msk``, embeddings on one line in ``inspect``;
    a downstream asset; the project's own health checks."""
    tmp = tmp_path_factory.mktemp("health")
    project = load_project(make_tiny_project(tmp / "project", {"msk": 20, "inspect": 20}))
    parts = dg.StaticPartitionsDefinition(project.partition_keys)
    rng = np.random.default_rng(1)

    @dg.asset(name=keys.checkpoint("jepa"), partitions_def=parts)
    def ck(context, artifacts: ArtifactStore):
        dest = artifacts.path(keys.checkpoint("jepa"), context.partition_key)
        if context.partition_key == "inspect":
            r = recipe(
                "jepa",
                "hybrid",
                loss_weights={"sft": 0.0, "jepa": 1.0},
                training={"steps": 2, "monitor_nodes": 0},
                optimizer={"lr": 1e-7, "schedule": "constant", "warmup_steps": 0},
            )
            train(r, make_data(n=6), dest, log=quiet)
        else:
            dest.mkdir(parents=True)
            curve = _curve([1.1, 0.9, 0.7, 0.5, 0.4])
            (dest / "train_log.json").write_text(json.dumps({"steps": 5, "loss_curve": curve}))

    @dg.asset(name=keys.embeddings("jepa"), partitions_def=parts, deps=[ck])
    def emb(context, artifacts: ArtifactStore):
        n = 200
        e = rng.normal(size=(n, 32))
        if context.partition_key == "inspect":
            e = np.outer(rng.normal(size=n), rng.normal(size=32)) + 1e-3 * rng.normal(size=(n, 32))
        index = pd.DataFrame({"subject_id": np.arange(n), "prediction_time": pd.Timestamp("2020-01-01")})
        save_embeddings(artifacts.path(keys.embeddings("jepa"), context.partition_key), e, index)

    @dg.asset(partitions_def=parts, deps=[emb])
    def downstream():
        return None

    checks = [
        c
        for c in health_checks(project)
        if any(k.name in HEALTH and k.asset_key.path[0].startswith("jepa_") for k in c.check_keys)
    ]
    assert len(checks) == 2
    resources = {"artifacts": ArtifactStore(root=str(tmp / "artifacts"))}
    with dg.instance_for_test() as instance:
        yield {
            key: dg.materialize(
                [ck, emb, downstream, *checks], partition_key=key, resources=resources, instance=instance
            )
            for key in ("msk", "inspect")
        }


def _evals(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_health_checks_warn_and_stop_nothing(health_run):
    bad = health_run["inspect"]
    assert bad.success
    assert "downstream" in {e.asset_key.to_user_string() for e in bad.get_asset_materialization_events()}
    ev = _evals(bad)
    assert set(ev) == set(HEALTH)
    for name in HEALTH:
        assert ev[name].passed is False and ev[name].severity == dg.AssetCheckSeverity.WARN, name
    assert ev["jepa_beats_mean_predictor"].metadata["normalized_jepa_loss_end [inspect]"].value >= 0.9
    assert "explains under 10 %" in ev["jepa_beats_mean_predictor"].metadata["problems"].value
    assert ev["effective_rank_floor"].metadata["effective_rank [inspect]"].value < 2.0


def test_health_checks_pass_a_healthy_partition(health_run):
    ev = _evals(health_run["msk"])
    assert all(e.passed for e in ev.values()), {n: e.metadata for n, e in ev.items()}
    assert ev["jepa_beats_mean_predictor"].metadata["normalized_jepa_loss_end [msk]"].value == pytest.approx(0.4)
    assert ev["effective_rank_floor"].metadata["effective_rank [msk]"].value > 20


def test_check_results_are_tied_to_their_partition(health_run):
    """Partitioned checks: Dagster records each result for the cohort partition it checked (the UI's checks tab shows
    it per partition), the metadata names it, and each number's key carries it (so each plot shows one partition)."""
    for key, result in health_run.items():
        evals = result.get_asset_check_evaluations()
        assert len(evals) == len(HEALTH)
        for e in evals:
            assert e.partition == key, (e.check_name, e.partition)
            assert e.metadata["partition"].value == key
            # numbers carry the partition in their keys: the UI's plot of a key then shows one partition
            numbers = [k for k, v in e.metadata.items() if isinstance(v.value, (int, float))]
            assert numbers and all(k.endswith(f" [{key}]") for k in numbers), (e.check_name, numbers)
