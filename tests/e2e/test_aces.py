"""ACES tasks against ACES itself: ACES's own sample MEDS data and two of its sample task configs
(``tests/fixtures/aces``), declared as a MEDS cohort and two ``kind: aces`` probes, materialized into a DuckDB
warehouse on a Dagster instance; the ``aces_labels`` rows must equal what ACES's command line (``aces-cli``) writes
for the same data and configs, and the blocking checks must pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from ehr_assets.data.aces_tasks import aces_python
from ehr_assets.definitions import build_definitions

from ..conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "aces"
TASKS = ("inhospital_mortality", "readmission_risk")
SHARDS = ("train/0", "train/1", "tuning/0", "held_out/0")


def aces_project(root: Path) -> Path:
    """A project over ACES's sample data: one MEDS cohort, the two ACES sample tasks as probes, and one frozen recipe
    (a tiny local Llama reading the SMB-v1 text: a tokenization of its own, ``frozen_tokens``)."""
    from ..real_data import save_tiny_llama

    for d in ("cohorts", "models", "probes"):
        (root / d).mkdir(parents=True)
    save_tiny_llama(root / "backbones" / "tiny")
    frozen = {
        "objective": "frozen",
        "format": "smb_v1",
        "backbone": {"architecture": "llama", "path": "backbones/tiny"},
    }
    (root / "models" / "frozen.yaml").write_text(yaml.safe_dump({**frozen, "embedding": {"max_tokens": 256}}))
    cohort = {
        "source": {"kind": "meds", "path": str(FIXTURES / "meds_sample")},
        "decision_nodes": {"codes": ["ADMISSION//.*"], "max_per_subject": 2, "min_context_events": 1},
        "splits": {"train": 0.6, "tuning": 0.2, "held_out": 0.2, "seed": 0},
    }
    (root / "cohorts" / "sample.yaml").write_text(yaml.safe_dump(cohort))
    for t in TASKS:
        probe = {"kind": "aces", "config": str(FIXTURES / "configs" / f"{t}.yaml"), "cohorts": ["sample"]}
        (root / "probes" / f"{t}.yaml").write_text(yaml.safe_dump(probe))
    return root


def aces_cli_labels(task: str, out: Path) -> pd.DataFrame:
    """ACES's command line on every shard of the sample (one run per shard, as ACES's docs run sharded MEDS data)."""
    cfg_dir = out / "cfg"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "configs" / f"{task}.yaml", cfg_dir / f"{task}.yaml")
    cli = aces_python().parent / "aces-cli"  # ACES's own environment (make aces)
    cmd = [str(cli), f"cohort_name={task}", f"cohort_dir={cfg_dir}", "data.standard=meds", "data=sharded"]
    cmd += [f"data.root={FIXTURES / 'meds_sample' / 'data'}", f"data.shard={','.join(SHARDS)}", "-m"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=out)
    frames = [pd.read_parquet(cfg_dir / task / f"{s}.parquet") for s in SHARDS]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aces")
    root = aces_project(tmp / "project")
    db = tmp / "warehouse.duckdb"
    defs = build_definitions(root, warehouse_path=db, artifact_root=tmp / "artifacts")
    keys = dg.AssetSelection.assets("frozen_embeddings").upstream().resolve(defs.resolve_asset_graph())
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    with dg.instance_for_test() as instance:
        res = job.execute_in_process(partition_key="sample", instance=instance, raise_on_error=False)
    return res, db, tmp


def test_labels_equal_those_aces_cli_writes(materialized):
    res, db, tmp = materialized
    assert res.success
    with duckdb.connect(str(db), read_only=True) as conn:
        ours = conn.execute("SELECT * FROM aces_labels").df()
    cols = ["subject_id", "prediction_time", "boolean_value"]
    for task in TASKS:
        theirs = aces_cli_labels(task, tmp / "cli")
        mine = ours[ours["task"] == task][cols].astype({"prediction_time": "datetime64[us]"})
        key = ["subject_id", "prediction_time"]
        pd.testing.assert_frame_equal(
            mine.sort_values(key).reset_index(drop=True),
            theirs[cols].astype({"prediction_time": "datetime64[us]"}).sort_values(key).reset_index(drop=True),
        )
        assert len(theirs) > 50
    assert ours.loc[ours["task"] == "readmission_risk", "boolean_value"].sum() > 5  # both classes present


def test_checks_pass_and_contexts_cover_every_prediction_time(materialized):
    res, db, _ = materialized
    evals = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in res.get_asset_check_evaluations()}
    assert evals[("aces_labels", "label_window_after_prediction_time")]
    assert evals[("aces_labels", "aces_label_splits_match_subjects")]
    assert evals[("aces_node_contexts", "no_future_in_context")]
    with duckdb.connect(str(db), read_only=True) as conn:
        times = conn.execute("SELECT DISTINCT subject_id, prediction_time FROM aces_labels").df()
        ctx = conn.execute("SELECT subject_id, prediction_time, context_last_time FROM aces_node_contexts").df()
        splits = conn.execute(
            "SELECT DISTINCT a.split = s.split AS same FROM aces_labels a JOIN subjects s USING (subject_id)"
        ).df()
    assert len(ctx) == len(times) and (ctx["context_last_time"] <= ctx["prediction_time"]).all()
    assert splits["same"].tolist() == [True]


def test_a_recipe_with_its_own_tokenization_embeds_the_aces_times(materialized):
    """The frozen recipe's tokens: each ACES time's context is the SMB-v1 text up to it, tokenized on its own, never
    past the time; its embeddings cover the decision nodes and the ACES times."""
    from ehr_assets.defs.io import load_embeddings

    res, db, tmp = materialized
    with duckdb.connect(str(db), read_only=True) as conn:
        times = conn.execute("SELECT DISTINCT subject_id, prediction_time FROM aces_labels").df()
        rctx = conn.execute("SELECT * FROM aces_recipe_node_contexts WHERE tokens_asset = 'frozen_tokens'").df()
        nodes = conn.execute("SELECT subject_id, prediction_time FROM decision_nodes").df()
    assert len(rctx) == len(times) and (rctx["context_last_time"] <= rctx["prediction_time"]).all()
    assert (rctx["n_context_tokens"] == rctx["context_ids"].map(len)).all() and (rctx["n_context_tokens"] > 0).all()
    _, index = load_embeddings(tmp / "artifacts" / "frozen_embeddings" / "sample")
    key = ["subject_id", "prediction_time"]
    have = {tuple(r) for r in index[key].astype({"prediction_time": "datetime64[us]"}).to_numpy().tolist()}
    want = {
        tuple(r)
        for r in pd.concat([times, nodes])[key].astype({"prediction_time": "datetime64[us]"}).to_numpy().tolist()
    }
    assert have == want
