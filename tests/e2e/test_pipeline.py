"""The whole lineage for one cohort partition on an ephemeral Dagster instance, a real DuckDB file and real tiny
HF/PEFT models; then the leakage check catching a leaking table."""

from __future__ import annotations

import dagster as dg
import duckdb
import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from ehr_assets.definitions import PIPELINE_JOB, REPORT_JOB, build_definitions
from ehr_assets.specs import load_project
from ehr_assets.warehouse import replace_partition

from ..conftest import REPO, run_checks

PARTITION = "inspect"
TRAINED = {"sft", "jepa", "sft_seed1"}  # sft and jepa, and a training-seed replicate of sft
RECIPES = TRAINED | {"count_baseline", "oracle", "oracle_no_rate"}


# The graph runs every declared task; to stay fast the test project keeps a few task families with two horizons
# each (binary, survival, an incident task, a blanked task). The full suite is checked per cohort in test_benchmark.
TEST_PROBES = {
    "mortality": [90, 730],
    "readmission": [30, 365],
    "pulmonary_hypertension": [365, 730],
    "recurrent_pe": [180, 730],
    "progression": [365, 730],
    "survival": None,
}


def binary_pairs(root, cohort: str) -> set[tuple[str, int]]:
    """(task, horizon) of every binary task the project at ``root`` declares for ``cohort``."""
    return {(t.name, h) for t in load_project(root).tasks_for(cohort) if t.kind == "binary" for h in t.horizons_days}


def make_pipeline_project(root):
    """The shipped project, shrunk (tiny models, sft + jepa and one seed replicate of sft, 60 msk / 160 inspect
    subjects) to the TEST_PROBES."""
    from ..conftest import keep_probes, make_tiny_project

    root = make_tiny_project(root, {"msk": 60, "inspect": 160})
    p = root / "models" / "sft.yaml"  # (a replicated curriculum, jepa_seed1 from sft_seed1: tests/eval/test_replicates)
    p.write_text(yaml.safe_dump({**yaml.safe_load(p.read_text()), "replicate_seeds": [1]}))
    keep_probes(root, TEST_PROBES)
    (root / "study.yaml").write_text(yaml.safe_dump(TEST_STUDY))  # the report job then answers it too
    return root


# A study over the test project (ehr_assets.specs.study): one question of each kind
TEST_STUDY = {
    "name": "study",
    "n_bootstrap": 200,
    "settings": {"cohorts": "the test project's"},
    "questions": [
        {"id": "q1", "question": "jepa vs sft?", "comparisons": [{"recipe": "jepa", "reference": "sft"}]},
        {
            "id": "q3",
            "question": "latent?",
            "kind": "latent",
            "cohorts": ["inspect", "msk"],
            "variables": ["burden", "growth_rate"],
            "comparisons": [{"recipe": "jepa", "reference": "count_baseline", "expect": "either"}],
        },
        {
            "id": "q4",
            "question": "transfer?",
            "kind": "transfer",
            "member": "inspect",
            "union": "combined",
            "comparisons": [{"recipe": "jepa", "reference": "sft"}],
        },
    ],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    root = make_pipeline_project(tmp / "project")
    db = tmp / "warehouse.duckdb"
    defs = build_definitions(root, warehouse_path=db, artifact_root=tmp / "artifacts")
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def(PIPELINE_JOB)
        result = job.execute_in_process(partition_key=PARTITION, instance=instance, raise_on_error=False)
        yield defs, result, db, tmp, instance


@pytest.fixture(scope="module")
def cross_disease(built):
    """The other two partitions and the unpartitioned cross-disease report, on the same instance and warehouse."""
    defs, _, db, _, instance = built
    job = defs.resolve_job_def(PIPELINE_JOB)
    results = {
        k: job.execute_in_process(partition_key=k, instance=instance, raise_on_error=False).success
        for k in ("msk", "combined")
    }
    report = defs.resolve_job_def(REPORT_JOB).execute_in_process(instance=instance, raise_on_error=False)
    return results, report, db, built[3] / "project"


def q(db, sql, params=None):
    with duckdb.connect(str(db), read_only=True) as c:
        return c.execute(sql, params or []).df()


def test_every_asset_and_check_succeeds(built):
    defs, result, *_ = built
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    expected = {
        "cohort_events",
        "cohort_table",
        "subjects",
        "decision_nodes",
        "task_labels",
        "tokenizer",
        "token_sequences",
        "node_contexts",
        *(f"{r}_{kind}" for r in TRAINED for kind in ("checkpoint", "embeddings", "probe_metrics")),
        "count_baseline_probe_metrics",
        "cohort_latent",
        "oracle_probe_metrics",
        "oracle_no_rate_probe_metrics",
        "label_files",
        "prediction_files",
        "paired_differences",
        "latent_dynamics",
        "benchmark_summary",
    }
    assert expected <= materialized
    evaluations = result.get_asset_check_evaluations()
    names = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    assert {
        ("cohort_events", "meds_schema"),
        ("subjects", "split_disjointness"),
        ("node_contexts", "no_future_in_context"),
        ("task_labels", "labels_after_prediction_time"),
        ("sft_embeddings", "not_collapsed"),
        ("jepa_embeddings", "not_collapsed"),
        ("paired_differences", "recipes_beat_chance"),
        ("jepa_embeddings", "effective_rank_floor"),
        ("jepa_checkpoint", "jepa_beats_mean_predictor"),
    } <= names
    # every check passes, but the training-health ones may warn after the tiny project's 6 steps
    errors = [e for e in evaluations if not e.passed and e.severity != dg.AssetCheckSeverity.WARN]
    assert not errors, [(e.check_name, e.metadata) for e in errors]


def test_tables_have_rows_and_schemas(built):
    _, _, db, *_ = built
    events = q(db, "SELECT * FROM cohort_table WHERE cohort = ?", [PARTITION])
    assert events["subject_id"].nunique() == 160
    table = pa.Table.from_pandas(
        events[["subject_id", "time", "code", "numeric_value", "text_value"]], preserve_index=False
    )
    meds.DataSchema.validate(meds.DataSchema.align(table))
    subj = q(db, "SELECT * FROM subjects WHERE cohort = ?", [PARTITION])
    assert subj["split"].value_counts().to_dict() == {"train": 80, "held_out": 48, "tuning": 32}
    labels = q(db, "SELECT * FROM task_labels WHERE cohort = ?", [PARTITION])
    label_cols = ["subject_id", "prediction_time", "boolean_value"]
    meds.LabelSchema.validate(meds.LabelSchema.align(pa.Table.from_pandas(labels[label_cols], preserve_index=False)))
    assert set(labels["task"]) == {"mortality", "readmission", "pulmonary_hypertension", "recurrent_pe", "survival"}
    assert "progression" not in set(labels["task"])  # declared for msk only
    nodes = q(db, "SELECT * FROM decision_nodes WHERE cohort = ?", [PARTITION])
    assert (nodes["node_code"] == "CPT4/71275").all() and len(nodes) >= 160
    seq = q(db, "SELECT subject_id, n_tokens, input_ids FROM token_sequences WHERE cohort = ?", [PARTITION])
    assert len(seq) == 160 and (seq["n_tokens"] == seq["input_ids"].map(len)).all()


def test_metrics_in_range_for_every_task_and_recipe(built):
    _, _, db, tmp, _ = built
    m = q(db, "SELECT * FROM probe_metrics WHERE cohort = ?", [PARTITION])
    assert set(m["recipe"]) == RECIPES
    auroc = m[m["metric"] == "auroc"]
    expected = binary_pairs(tmp / "project", PARTITION)  # every binary task x horizon declared for inspect
    assert len(expected) == 8
    for recipe, g in auroc.groupby("recipe"):
        assert set(zip(g["task"], g["horizon_days"])) == expected, recipe
    assert len(auroc) == len(RECIPES) * len(expected)
    finite = m["value"].dropna()
    assert len(finite) > 0.8 * len(m)
    scored = m[m["metric"].isin(["auroc", "auprc", "c_index", "brier"])]["value"].dropna()
    assert ((scored >= 0) & (scored <= 1)).all()
    c = m[(m["metric"] == "c_index") & (m["task"] == "survival")]
    assert len(c) == len(RECIPES) and c["value"].notna().all()
    # a NaN metric always says why
    assert (m.loc[m["value"].isna(), "note"].str.len() > 0).all()
    preds = q(db, "SELECT * FROM probe_predictions WHERE cohort = ? AND recipe = 'sft'", [PARTITION])
    held = q(db, "SELECT subject_id FROM subjects WHERE cohort = ? AND split = 'held_out'", [PARTITION])
    assert set(preds["subject_id"]) <= set(held["subject_id"])  # scored on held_out only


def test_checkpoints_are_peft_safetensors_and_curriculum_links(built):
    _, _, _, tmp, _ = built
    for recipe in ("sft", "jepa"):
        ck = tmp / "artifacts" / f"{recipe}_checkpoint" / PARTITION
        assert (ck / "model" / "config.json").exists()  # the shipped recipes train the tiny backbone fully
        assert (ck / "model" / "model.safetensors").exists()
        assert not list(ck.rglob("*.bin")) and not list(ck.rglob("*.pt"))
    assert (tmp / "artifacts" / "jepa_checkpoint" / PARTITION / "predictor.safetensors").exists()


def test_leaking_table_fails_the_leakage_check(built):
    defs, _, db, _, instance = built
    with duckdb.connect(str(db)) as c:
        ctx = c.execute("SELECT * FROM node_contexts WHERE cohort = ?", [PARTITION]).df()
        leaky = ctx.copy()
        leaky.loc[leaky.index[:5], "context_end"] = leaky.loc[leaky.index[:5], "n_tokens"]  # read the whole future
        replace_partition(c, "node_contexts", leaky, {"cohort": PARTITION})
    try:
        # a check-only run for the partition (the checks are partitioned like their assets)
        res = run_checks(defs, instance, "node_contexts", PARTITION)
        ev = {e.check_name: e for e in res.get_asset_check_evaluations()}
        assert ev["no_future_in_context"].passed is False
        text = ev["no_future_in_context"].metadata["problems"].value
        assert f"5 of {len(ctx)} decision nodes read events after their prediction time" in text
        assert ev["no_future_in_context"].partition == PARTITION
        assert ev["no_future_in_context"].metadata["partition"].value == PARTITION
    finally:
        with duckdb.connect(str(db)) as c:
            replace_partition(c, "node_contexts", ctx, {"cohort": PARTITION})


def test_reports_over_partitions_name_what_they_lack(built):
    """Before msk and combined are built, the reports over every partition fail with a message naming the missing
    partitions and recipes and the command to build them, never a raw catalog error."""
    defs, _, db, _, instance = built
    res = defs.resolve_job_def(REPORT_JOB).execute_in_process(instance=instance, raise_on_error=False)
    assert not res.success
    failures = [e for e in res.all_events if e.is_step_failure]
    assert {e.step_key for e in failures} == {"cross_disease_report", "study_report"}
    for e in failures:
        msg = e.event_specific_data.error.message
        assert "Catalog Error" not in msg and "python -m ehr_assets.build" in msg, msg
        missing = msg.split("missing: ")[1].split(". Build")[0]
        assert {m.split(" (")[0] for m in missing.split("), ")} == {"combined", "msk"}, msg
        assert "inspect" not in missing and "(all)" in missing, msg


def test_cross_disease_report_compares_member_and_union_encoders(cross_disease):
    results, report, db, root = cross_disease
    assert results == {"msk": True, "combined": True} and report.success
    r = q(db, "SELECT * FROM cross_disease_report")
    assert set(r["member"]) == {"msk", "inspect"} and set(r["union"]) == {"combined"}
    assert set(r["recipe"]) == RECIPES
    # every binary task of a member appears once per recipe, scored on that member's held-out subjects both ways
    ins = r[(r["member"] == "inspect") & (r["recipe"] == "sft")]
    assert set(zip(ins["task"], ins["horizon_days"])) == binary_pairs(root, "inspect")
    both = r.dropna(subset=["auroc_member", "auroc_union"])
    assert len(both) > 0
    assert both["auroc_member"].between(0, 1).all() and both["auroc_union"].between(0, 1).all()
    assert np.allclose(both["delta"], both["auroc_union"] - both["auroc_member"])
    # the union partition's held-out predictions for a member are exactly that member's held-out rows
    p = q(
        db,
        "SELECT cohort, source_cohort, subject_id, prediction_time FROM probe_predictions "
        "WHERE recipe = 'sft' AND task = 'mortality' AND horizon_days = 365",
    )
    alone = p[p["cohort"] == "inspect"][["subject_id", "prediction_time"]]
    pooled = p[(p["cohort"] == "combined") & (p["source_cohort"] == "inspect")][["subject_id", "prediction_time"]]
    key = ["subject_id", "prediction_time"]
    pd.testing.assert_frame_equal(
        alone.sort_values(key).reset_index(drop=True), pooled.sort_values(key).reset_index(drop=True)
    )


def test_training_in_a_pipes_subprocess(built):
    """The same checkpoint asset with the trainer launched as a subprocess through Dagster Pipes (the route to a GPU
    node): logs stream into the run, the checkpoint is published, and it matches in-process training bit for bit."""
    from safetensors.torch import load_file

    from ehr_assets.defs.resources import Trainer

    defs, _, db, tmp, instance = built
    ck = tmp / "artifacts" / "sft_checkpoint" / PARTITION
    before = load_file(str(ck / "model" / "model.safetensors"))
    sub = build_definitions(
        tmp / "project", warehouse_path=db, artifact_root=tmp / "artifacts", trainer=Trainer(launcher="subprocess")
    )
    job = sub.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("sft_checkpoint")})
    res = job.execute_in_process(partition_key=PARTITION, instance=instance, raise_on_error=False)
    assert res.success
    mat = res.asset_materializations_for_node("sft_checkpoint")[0]
    assert mat.metadata["launcher"].value == "subprocess" and mat.metadata["steps"].value == 6
    logs = [e.user_message for e in instance.all_logs(res.run_id)]
    assert any("sft step 6/6" in m for m in logs), "training logs did not stream back through Pipes"
    after = load_file(str(ck / "model" / "model.safetensors"))
    assert before.keys() == after.keys()
    import torch

    for k in before:  # same recipe, data and seed: the subprocess trains the same weights
        torch.testing.assert_close(before[k], after[k], rtol=0, atol=1e-6)
    assert not (tmp / "artifacts" / ".resume" / "sft_checkpoint" / PARTITION).exists()


@pytest.mark.parametrize("folder", [".", "study"])  # the demo's recipes; the study's seeds and ablations
def test_every_shipped_recipe_yields_its_assets_and_check(tmp_path, folder):
    from ehr_assets.specs import load_project

    project = load_project(REPO / folder)
    defs = build_definitions(project, warehouse_path=tmp_path / "w.duckdb", artifact_root=tmp_path / "a")
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for r in project.recipes.values():
        assert {f"{r.name}_checkpoint", f"{r.name}_embeddings", f"{r.name}_probe_metrics"} <= keys
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(f"{r.name}_checkpoint")).parent_keys}
        assert (f"{r.init_from}_checkpoint" in parents) == (r.init_from is not None)
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {(f"{r}_embeddings", "not_collapsed") for r in project.recipes} <= checks
    # every check is partitioned like the asset it checks: each result is recorded for the partition it checked
    unpartitioned = [k for k in graph.asset_check_keys if graph.get(k).partitions_def is None]
    assert not unpartitioned
    assert all(graph.get(k).partitions_def == graph.get(k.asset_key).partitions_def for k in graph.asset_check_keys)
    report_parents = {k.to_user_string() for k in graph.get(dg.AssetKey("cross_disease_report")).parent_keys}
    assert report_parents == {f"{r}_probe_metrics" for r in project.recipes} | {
        "count_baseline_probe_metrics",
        "oracle_probe_metrics",
        "oracle_no_rate_probe_metrics",
    }


def test_interrupted_checkpoint_asset_resumes_on_the_next_materialization(built, monkeypatch):
    """The sft_checkpoint asset dies right after its first step checkpoint; materializing it again resumes from
    that step (logged) and publishes exactly the weights of the uninterrupted run (the fixture's)."""
    import torch
    from safetensors.torch import load_file

    from ehr_assets.train import loop

    defs, _, db, tmp, instance = built
    ck = tmp / "artifacts" / "sft_checkpoint" / PARTITION
    reference = load_file(str(ck / "model" / "model.safetensors"))
    real_prune = loop.prune_steps

    def die_after_first_step_checkpoint(folder, keep):
        real_prune(folder, keep)
        raise KeyboardInterrupt("simulated kill after the first step checkpoint")

    monkeypatch.setattr(loop, "prune_steps", die_after_first_step_checkpoint)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("sft_checkpoint")})
    with pytest.raises(KeyboardInterrupt):
        job.execute_in_process(partition_key=PARTITION, instance=instance)
    rdir = tmp / "artifacts" / ".resume" / "sft_checkpoint" / PARTITION
    assert [p.name for p in rdir.glob("step_*")] == ["step_000002"]
    assert torch.equal(
        load_file(str(ck / "model" / "model.safetensors"))[next(iter(reference))],
        reference[next(iter(reference))],
    )  # the published checkpoint is still the last good one

    monkeypatch.setattr(loop, "prune_steps", real_prune)
    res = job.execute_in_process(partition_key=PARTITION, instance=instance, raise_on_error=False)
    assert res.success
    logs = [e.user_message for e in instance.all_logs(res.run_id)]
    assert any("resuming from" in m and "step_000002" in m for m in logs)
    after = load_file(str(ck / "model" / "model.safetensors"))
    assert after.keys() == reference.keys() and all(torch.equal(after[k], reference[k]) for k in reference)
    assert not rdir.exists()


def test_same_seeds_same_metrics(built, tmp_path):
    """Materializing the same project again into a new warehouse gives the same probe metrics, to the last bit."""
    _, _, db, _, _ = built
    root = make_pipeline_project(tmp_path / "project")
    db2 = tmp_path / "warehouse.duckdb"
    defs2 = build_definitions(root, warehouse_path=db2, artifact_root=tmp_path / "artifacts")
    with dg.instance_for_test() as instance:
        res = defs2.resolve_job_def(PIPELINE_JOB).execute_in_process(partition_key=PARTITION, instance=instance)
    assert res.success
    cols = "recipe, task, horizon_days, metric, value, ci_low, ci_high, n"
    a = q(
        db,
        f"SELECT {cols} FROM probe_metrics WHERE cohort = ? ORDER BY recipe, task, horizon_days, metric",
        [PARTITION],
    )
    b = q(
        db2,
        f"SELECT {cols} FROM probe_metrics WHERE cohort = ? ORDER BY recipe, task, horizon_days, metric",
        [PARTITION],
    )
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    cols = "scope, task, horizon_days, statistic, recipe, reference, estimate, ci_low, ci_high, p_value"
    sql = f"SELECT {cols} FROM paired_differences WHERE cohort = ? ORDER BY {cols}"
    pd.testing.assert_frame_equal(q(db, sql, [PARTITION]), q(db2, sql, [PARTITION]), check_exact=True)


def test_predictions_outside_held_out_fail_the_blocking_check(built):
    defs, _, db, _, instance = built
    with duckdb.connect(str(db)) as c:
        preds = c.execute("SELECT * FROM probe_predictions WHERE cohort = ? AND recipe = 'sft'", [PARTITION]).df()
        train_id = c.execute(
            "SELECT subject_id FROM subjects WHERE cohort = ? AND split = 'train' LIMIT 1", [PARTITION]
        ).fetchone()[0]
        bad = preds.copy()
        bad.loc[bad.index[:3], "subject_id"] = train_id
        replace_partition(c, "probe_predictions", bad, {"cohort": PARTITION, "recipe": "sft"})
    try:
        res = run_checks(defs, instance, ["sft_probe_metrics", "jepa_probe_metrics"], PARTITION)
        ev = {(e.asset_key.to_user_string(), e.check_name): e for e in res.get_asset_check_evaluations()}
        assert ("sft_probe_metrics", "scored_on_held_out_only") in ev, (list(ev), res.success)
        sft = ev[("sft_probe_metrics", "scored_on_held_out_only")]
        assert sft.passed is False
        assert f"3 of {len(preds)} predictions are for subjects outside held_out" in sft.metadata["problems"].value
        assert ev[("jepa_probe_metrics", "scored_on_held_out_only")].passed is True
    finally:
        with duckdb.connect(str(db)) as c:
            replace_partition(c, "probe_predictions", preds, {"cohort": PARTITION, "recipe": "sft"})


# ------------------------------------------------------------------------------------------- benchmark assets
def test_latent_table_is_read_by_oracle_and_evaluation_assets_only(built):
    """The hidden state feeds the oracles and the latent-dynamics probe, and nothing that trains or embeds: no
    checkpoint, embeddings or tokens asset is downstream of cohort_latent."""
    from ehr_assets import keys

    defs, _, db, *_ = built
    graph = defs.resolve_asset_graph()
    readers = {k.to_user_string() for k in graph.get(dg.AssetKey("cohort_latent")).child_keys}
    assert readers == {"oracle_probe_metrics", "oracle_no_rate_probe_metrics", "latent_dynamics"}
    frontier, below = [dg.AssetKey("cohort_latent")], set()
    while frontier:
        for child in graph.get(frontier.pop()).child_keys:
            if child.to_user_string() not in below:
                below.add(child.to_user_string())
                frontier.append(child)
    assert {"latent_dynamics", "benchmark_summary"} <= below
    model_kinds = tuple(f"_{k}" for k in (keys.CHECKPOINT, keys.EMBEDDINGS, keys.TOKENS))
    assert not [name for name in below if name.endswith(model_kinds)]
    lat = q(db, "SELECT * FROM cohort_latent WHERE cohort = ?", [PARTITION])
    events = q(db, "SELECT DISTINCT subject_id FROM cohort_table WHERE cohort = ?", [PARTITION])
    assert set(lat["subject_id"]) == set(events["subject_id"]) and len(lat) > 3 * len(events)
    assert {"burden", "growth_rate", "reserve", "clot_load"} <= set(lat.columns)


def test_exported_files_let_an_independent_scorer_recompute_our_auroc(built):
    """Read only the files under the artifact root; sklearn's AUROC equals the warehouse's probe_metrics value."""
    import json

    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    _, _, db, tmp, _ = built
    metrics = q(
        db,
        "SELECT recipe, task, horizon_days, value FROM probe_metrics WHERE cohort = ? AND metric = 'auroc'",
        [PARTITION],
    ).set_index(["recipe", "task", "horizon_days"])["value"]
    root = tmp / "artifacts" / "prediction_files" / PARTITION
    files = sorted(root.glob("*/*.parquet"))
    assert {p.parent.name for p in files} == RECIPES
    checked = 0
    for path in files:
        table = pq.read_table(path)
        assert table.column_names == [
            "subject_id",
            "prediction_time",
            "boolean_value",
            "predicted_boolean_value",
            "predicted_boolean_probability",
        ]
        meds.LabelSchema.validate(table.drop(["predicted_boolean_value", "predicted_boolean_probability"]))
        df = table.to_pandas()
        task, horizon = path.stem.rsplit("_", 1)
        ours = metrics[(path.parent.name, task, int(horizon.rstrip("d")))]
        if df["boolean_value"].nunique() < 2:
            assert np.isnan(ours)
            continue
        assert roc_auc_score(df["boolean_value"], df["predicted_boolean_probability"]) == pytest.approx(ours, abs=1e-9)
        checked += 1
    assert checked >= 0.8 * len(files) and checked >= 30

    labels_dir = tmp / "artifacts" / "label_files" / PARTITION
    manifest = json.loads((labels_dir / "manifest.json").read_text())["labels"]
    table_labels = q(
        db, "SELECT task, horizon_days, count(*) AS n FROM task_labels WHERE cohort = ? GROUP BY ALL", [PARTITION]
    )
    assert len(manifest) == len(table_labels) == len(binary_pairs(tmp / "project", PARTITION)) + 1  # + survival
    for entry in manifest:
        t = pq.read_table(labels_dir / entry["file"])
        meds.LabelSchema.validate(t)
        assert t.num_rows == entry["rows"]
        if entry["kind"] == "survival":
            assert t.column_names == ["subject_id", "prediction_time", "boolean_value", "float_value"]
            assert (t.column("float_value").to_numpy() > 0).all() and "days" in entry["encoding"]
        else:
            assert t.column_names == ["subject_id", "prediction_time", "boolean_value"]
    splits = pq.read_table(labels_dir / "subject_splits.parquet")
    meds.SubjectSplitSchema.validate(splits)


def test_benchmark_summary_measures_recipes_against_the_baseline_floor_and_the_oracle_ceiling(built):
    """Each recipe's row carries the count baseline's and the oracle's values of the same task (from their own
    probe_metrics rows), its gap closed is (recipe - baseline) / (oracle - baseline), and the ceiling lies above the
    floor: the oracle's pooled long-horizon AUROC minus the baseline's has a paired CI above 0."""
    import base64

    _, result, db, *_ = built
    s = q(db, "SELECT * FROM benchmark_summary WHERE cohort = ?", [PARTITION])
    assert set(s["recipe"]) == TRAINED | {"oracle_no_rate"}
    m = q(db, "SELECT * FROM probe_metrics WHERE cohort = ? AND metric IN ('auroc', 'c_index')", [PARTITION])
    ref = m.set_index(["recipe", "task", "horizon_days"])["value"]
    for r in s.itertuples():
        assert r.baseline == ref[("count_baseline", r.task, r.horizon_days)]
        assert (
            r.oracle == ref[("oracle", r.task, r.horizon_days)] and r.value == ref[(r.recipe, r.task, r.horizon_days)]
        )
    ok = s.dropna(subset=["gap_closed"])
    assert len(ok) > 0
    np.testing.assert_allclose(ok["gap_closed"], (ok["value"] - ok["baseline"]) / (ok["oracle"] - ok["baseline"]))
    d = q(db, "SELECT * FROM paired_differences WHERE cohort = ? AND scope = 'pooled_long'", [PARTITION])
    ceiling = d[(d["recipe"] == "oracle") & (d["reference"] == "count_baseline") & (d["statistic"] == "delta")]
    assert len(ceiling) == 1 and ceiling["ci_low"].iloc[0] > 0
    md = result.asset_materializations_for_node("benchmark_summary")[0].metadata
    img = md["auroc_by_horizon"].value
    assert img.startswith("![inspect: AUROC by horizon](data:image/png;base64,")
    assert base64.b64decode(img.split(",", 1)[1].rstrip(")")).startswith(b"\x89PNG")
    table = md["table"].value
    for col in ("count_baseline", "sft", "jepa", "oracle", "closed:sft", "closed:jepa"):
        assert col in table.splitlines()[0]
    assert md["oracle"].value == "available"
    # the evidence: pooled paired differences, the spread across seeds, the latent probe, the probe fallbacks
    assert "| delta | pooled_long | sft | jepa |" in md["paired_pooled"].value
    assert "| sft | pooled_long | delta | count_baseline | 2 |" in md["seeds"].value
    assert md["latent_dynamics"].value.splitlines()[0].startswith("| variable | offset_days | count_baseline |")
    assert md["latent_dynamics_plot"].value.startswith("![inspect: latent dynamics](data:image/png;base64,")
    # training health beside the results: the JEPA runs of a few steps did not learn their objective
    health = md["training_health"].value.splitlines()
    assert health[0].startswith("| cohort | recipe | jepa_loss_norm_end | jepa_learned |")
    jepa_rows = [ln.split(" | ") for ln in health[2:] if ln.startswith(f"| {PARTITION} | jepa |")]
    assert len(jepa_rows) == 1 and jepa_rows[0][3] == "no"
    notes = m["note"].fillna("")
    assert md["probe_fallbacks_total"].value == len(
        m.loc[notes.str.contains("fallback"), ["recipe", "task", "horizon_days"]].drop_duplicates()
    )


def test_paired_differences_match_the_probe_metrics_and_trained_recipes_beat_chance(built):
    """The paired table scores the same held-out rows as probe_metrics (its values are theirs, its deltas their
    differences), and the check that guards the embedding path passed for every trained recipe."""
    from ehr_assets.eval import report

    _, result, db, *_ = built
    d = q(db, "SELECT * FROM paired_differences WHERE cohort = ? AND scope = 'task'", [PARTITION])
    m = q(db, "SELECT * FROM probe_metrics WHERE cohort = ? AND metric IN ('auroc', 'c_index')", [PARTITION])
    value = m.set_index(["recipe", "task", "horizon_days"])["value"]
    delta = d[d["statistic"] == "delta"]
    assert set(delta["reference"]) == {"count_baseline", "sft"}
    for r in delta.itertuples():
        assert r.recipe_value == pytest.approx(value[(r.recipe, r.task, r.horizon_days)], abs=1e-9)
        expected = value[(r.recipe, r.task, r.horizon_days)] - value[(r.reference, r.task, r.horizon_days)]
        assert r.estimate == pytest.approx(expected, abs=1e-9)
        assert r.ci_low <= r.estimate <= r.ci_high and r.n_boot >= 900
    assert set(delta.loc[delta["reference"] == "sft", "recipe"]) == {"jepa"}  # not the seed replicate of sft
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["recipes_beat_chance"]
    assert check.passed
    table = check.metadata["recipes"].value
    for r in TRAINED:
        assert f"| {r} |" in table
    assert check.metadata["tasks"].value.count("@") >= 2
    assert report.main(["--format", "delta", "--warehouse", str(db), "--cohort", PARTITION]) == 0


def test_latent_dynamics_reads_every_recipe_and_the_oracle_reads_its_own_state(built):
    _, result, db, *_ = built
    lat = q(db, "SELECT * FROM latent_dynamics WHERE cohort = ?", [PARTITION])
    assert set(lat["recipe"]) == RECIPES and set(lat["offset_days"]) == {0, 180, 365}
    assert len(lat) == len(RECIPES) * 3 * 6  # every recipe x offset x latent variable
    now = lat[(lat["recipe"] == "oracle") & (lat["offset_days"] == 0)].set_index("variable")["r2"]
    assert now[["burden", "reserve", "clot_load"]].to_numpy() == pytest.approx(1.0, abs=1e-3)
    later = lat[lat["offset_days"] == 365].set_index(["recipe", "variable"])["r2"]
    assert later[("oracle", "burden")] > later[("count_baseline", "burden")]
    md = result.asset_materializations_for_node("latent_dynamics")[0].metadata
    assert md["nodes_with_state_at_+0d"].value > md["nodes_with_state_at_+365d"].value > 0


def test_tampered_labels_fail_both_label_checks(built):
    """A label set by an outcome before its prediction time, and labels carrying another split than their subject,
    each fail their blocking check (and name how many rows)."""
    defs, _, db, _, instance = built
    with duckdb.connect(str(db)) as c:
        lab = c.execute("SELECT * FROM task_labels WHERE cohort = ?", [PARTITION]).df()
        bad = lab.copy()
        pos = bad.index[bad["boolean_value"] & bad["outcome_time"].notna()][:2]
        bad.loc[pos, "outcome_time"] = bad.loc[pos, "prediction_time"] - pd.Timedelta(days=1)
        other = bad.index[bad["split"] == "train"][:3]
        bad.loc[other, "split"] = "held_out"
        replace_partition(c, "task_labels", bad, {"cohort": PARTITION})
    try:
        res = run_checks(defs, instance, "task_labels", PARTITION)
        ev = {e.check_name: e for e in res.get_asset_check_evaluations()}
        assert ev["labels_after_prediction_time"].passed is False
        assert (
            "2 labels set by an outcome at or before the prediction time"
            in ev["labels_after_prediction_time"].metadata["problems"].value
        )
        assert ev["label_splits_match_subjects"].passed is False
        assert (
            "3 label rows whose split differs from their subject's split"
            in ev["label_splits_match_subjects"].metadata["problems"].value
        )
    finally:
        with duckdb.connect(str(db)) as c:
            replace_partition(c, "task_labels", lab, {"cohort": PARTITION})


def test_collapsed_embeddings_fail_the_collapse_check():
    from ehr_assets.defs.checks import collapse_problems

    rng = np.random.default_rng(0)
    ok = rng.normal(size=(50, 8))
    assert collapse_problems(ok)[0] == []
    flat = ok.copy()
    flat[:, 3] = 0.7  # one dimension constant across nodes
    problems, md = collapse_problems(flat)
    assert problems == ["1 of 8 dimensions have std <= 0.0001"]
    same = np.tile(ok[:1], (50, 1))  # every node the same vector
    problems, md = collapse_problems(same)
    assert problems == ["8 of 8 dimensions have std <= 0.0001"] and md["effective_rank"] <= 1.0
    nan = ok.copy()
    nan[0, 0] = np.nan
    assert "embeddings contain NaN or inf" in collapse_problems(nan)[0]


def test_no_asset_metadata_names_a_subject_or_prints_a_timeline(built):
    """Every materialization of the whole graph: no subject_id, no serialized timeline text in its metadata."""
    import re

    _, result, db, *_ = built
    ids = {
        str(i) for i in q(db, "SELECT DISTINCT subject_id FROM subjects WHERE cohort = ?", [PARTITION])["subject_id"]
    }
    blob = []
    for ev in result.get_asset_materialization_events():
        for v in ev.materialization.metadata.values():
            text = str(getattr(v, "value", v))
            blob.append(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text))  # pictures are pixels
    blob = "\n".join(blob)
    assert len(result.get_asset_materialization_events()) > 15
    numbers = set(re.findall(r"\d{5,}", blob))
    assert not numbers & ids
    assert "<demographics>" not in blob and "Birth:" not in blob and "<dt:" not in blob


def test_the_demo_ends_with_forty_short_lines_whose_verdicts_follow_the_paired_ci(cross_disease):
    """The demo's ending on this three-partition warehouse: at most 40 lines of at most 100 characters; per cohort
    the jepa - sft row shows the paired_differences estimate and the verdict its CI and its training health give
    (a 6-step JEPA run does not learn its objective: withheld); every table and plot written to results/."""
    from ehr_assets.defs.demo import ending
    from ehr_assets.eval.health import training_health
    from ehr_assets.eval.summary import verdict
    from ehr_assets.specs import load_project

    _, _, db, root = cross_disease
    project = load_project(root)
    text = ending(db, built_artifacts(root), project)
    lines = text.splitlines()
    assert len(lines) <= 40 and max(map(len, lines)) <= 100
    health = training_health(project, built_artifacts(root)).set_index(["cohort", "recipe"])
    sql = "SELECT * FROM paired_differences WHERE scope = 'pooled_long' AND statistic = 'delta' AND reference = 'sft'"
    rows = q(db, sql)
    assert set(rows["cohort"]) == {"msk", "inspect", "combined"} and set(rows["recipe"]) == {"jepa"}
    for r in rows.itertuples():
        h = health.loc[(r.cohort, "jepa")]
        line = next(ln for ln in lines if ln.split()[:2] == [r.cohort, "jepa"])
        assert f"{r.estimate:+.3f} [{r.ci_low:.2f}, {r.ci_high:.2f}]" in line
        assert line.endswith(verdict(r.estimate, r.ci_low, r.ci_high, h.jepa_learned, h.jepa_loss_norm_end))
        assert h.jepa_learned == "no" and "no verdict: JEPA not learned" in line
    assert "sft_seed1" not in text  # the seed replicate: --format seeds
    files = {f.name for f in (db.parent / "results").iterdir()}
    assert {"summary.txt", "report.md", "wide.txt", "delta.txt", "probe_metrics.csv", "README.txt"} <= files
    assert {f"auroc_by_horizon_{c}.png" for c in ("msk", "inspect", "combined")} <= files
    saved = (db.parent / "results" / "summary.txt").read_text().splitlines()
    assert saved[:-1] == lines[:-1] and lines[-1].endswith("results/")  # but for its path


def test_the_report_job_answers_the_declared_study(cross_disease):
    """study_report over the three partitions: a row per question, cohort and comparison in study_answers (the
    delta recomputed here with sklearn from probe_predictions), study.md with every question and its plots, and
    the answers in the asset's metadata."""
    from sklearn.metrics import roc_auc_score

    _, report, db, root = cross_disease
    assert report.success
    a = q(db, "SELECT * FROM study_answers")
    assert sorted(zip(a["question"], a["cohort"])) == sorted(
        [("q1", c) for c in ("combined", "inspect", "msk")] + [("q3", "inspect"), ("q3", "msk"), ("q4", "inspect")]
    )
    p = q(db, "SELECT * FROM probe_predictions WHERE cohort = 'inspect' AND horizon_days >= 365")
    p = p[p["predicted_boolean_probability"].notna()]

    def long(recipe):
        g = p[p["recipe"] == recipe].groupby(["task", "horizon_days"])
        return [roc_auc_score(d["boolean_value"], d["predicted_boolean_probability"]) for _, d in g]

    # jepa has no replicate here: one seed, jepa - sft
    q1 = a[(a["question"] == "q1") & (a["cohort"] == "inspect")].iloc[0]
    assert q1["seeds"] == 1 and q1["estimate"] == pytest.approx(np.mean(long("jepa")) - np.mean(long("sft")), abs=1e-9)
    assert q1["n_terms"] == len(long("jepa")) > 0
    q3 = a[a["question"] == "q3"]
    assert q3["estimate"].notna().all() and (q3["n_terms"] >= 1).all()
    md = (built_artifacts(root) / "study_report" / "study" / "study.md").read_text()
    assert all(f"## {k}:" in md for k in ("q1", "q3", "q4")) and "## The SFT loss" in md
    # training health travels with the answers: a 6-step JEPA run does not learn its objective, so no verdict
    assert "## Training health of every run" in md and "jepa_beats_mean_predictor" in md
    assert q1["jepa_health"] == "not learned: jepa@inspect"
    assert q1["verdict"] == "withheld: JEPA objective not learned (jepa@inspect)"
    pngs = {f.name for f in (built_artifacts(root) / "study_report" / "study").glob("*.png")}
    assert {"study_sft_loss.png", "study_auroc_by_horizon_msk.png", "study_latent_r2_inspect.png"} <= pngs
    mat = [e for e in report.get_asset_materialization_events() if e.asset_key.path == ["study_report"]]
    meta = mat[0].materialization.metadata
    assert {"answers", "q1", "q3", "q4", "recipes", "sft_loss", "training_health"} <= set(meta)
    assert "**q1**" in meta["answers"].value


def built_artifacts(project_root):
    """The artifact root of the module's instance (beside the project folder)."""
    return project_root.parent / "artifacts"
