"""The synthetic benchmark: its task suite, its decision nodes, the oracle, the gap arithmetic -- and that it can
tell encoders apart (the oracle beats counting codes at long horizons; the latent rate carries that signal)."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource

from ehr_assets.data import cohort as cohort_stage
from ehr_assets.data import decision_nodes as nodes_stage
from ehr_assets.data import labels as labels_stage
from ehr_assets.eval import benchmark as bench
from ehr_assets.eval import oracle
from ehr_assets.eval.baseline import count_features, select_count_vocab
from ehr_assets.eval.probe_metrics import evaluate
from ehr_assets.specs import CohortSpec, Project, load_project

from ..conftest import REPO

LONG = 730  # days: the long horizons


def cohort_at(name: str, subjects: int):
    """The shipped cohort ``name`` at ``subjects`` subjects, through the real stages: events, subjects, nodes,
    labels of every declared task, the count-baseline features and the latent snapshot at each node."""
    project = load_project(REPO)
    spec = project.cohorts[name]
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"subjects": subjects})})
    project = project.model_copy(update={"cohorts": {**project.cohorts, name: spec}})
    ev = cohort_stage.validate_events(cohort_stage.cohort_events(project, name), name)
    subj = cohort_stage.subjects_table(project, name, ev)
    nodes = nodes_stage.decision_nodes(project, name, ev, subj)
    labels = labels_stage.cohort_labels(project, name, nodes, ev, subj)
    train = subj.loc[subj["split"] == "train", "subject_id"].to_numpy()
    counts = count_features(ev, nodes, select_count_vocab(ev, train))
    snap = oracle.latent_at_nodes(oracle.cohort_latent(project, name), nodes)
    return SimpleNamespace(
        project=project, events=ev, subjects=subj, nodes=nodes, labels=labels, counts=counts, snapshot=snap
    )


@pytest.fixture(scope="module")
def msk():
    return cohort_at("msk", 1500)


@pytest.fixture(scope="module")
def inspect_():
    return cohort_at("inspect", 1500)


def auroc(c, features, tasks) -> pd.Series:
    """Held-out AUROC of the shipped probe (no bootstrap) per (task, horizon) of ``tasks`` at horizons >= LONG."""
    kinds = {p.name: p.kind for p in c.project.probes.values()}
    lab = c.labels[c.labels["task"].isin(tasks) & (c.labels["horizon_days"] >= LONG)]
    m, _ = evaluate("t", "r", features, c.nodes, lab, kinds, n_bootstrap=0)
    return m[m["metric"] == "auroc"].set_index(["task", "horizon_days"])["value"]


# ------------------------------------------------------------------------------------------------- the task suite
@pytest.mark.parametrize("name", ["msk", "inspect"])
def test_at_least_twenty_tasks_per_cohort_over_several_horizons(name):
    tasks = load_project(REPO).tasks_for(name)
    pairs = [(t.name, h) for t in tasks for h in t.horizons()]
    assert len(pairs) >= 20
    horizons = {h for t in tasks if t.kind == "binary" for h in t.horizons_days}
    assert {90, 180, 365, 730} <= horizons
    assert sum(t.kind == "survival" for t in tasks) >= 3


@pytest.mark.parametrize("which", ["msk", "inspect_"])
def test_every_task_and_horizon_has_outcomes_in_the_generator(which, request):
    c = request.getfixturevalue(which)
    tasks = [t for t in c.project.tasks_for(which.rstrip("_")) if t.kind != "aces"]  # ACES labels: aces_labels
    declared = {(t.name, h) for t in tasks for h in t.horizons()}
    got = c.labels.groupby(["task", "horizon_days"])["boolean_value"].agg(["size", "sum"])
    assert set(got.index) == declared
    # every binary label has both classes in quantity; every survival task has observed events and censoring
    assert (got["sum"] >= 20).all() and ((got["size"] - got["sum"]) >= 20).all(), got[got["sum"] < 20]


def test_incident_and_blanked_tasks_mean_what_they_say(inspect_):
    lab, ev = inspect_.labels, inspect_.events
    hf = lab[lab["task"] == "heart_failure"]
    hf_dx = ev[ev["code"] == "ICD10/I50.9"].groupby("subject_id")["time"].min()
    first = hf["subject_id"].map(hf_dx)
    assert not (first <= hf["prediction_time"]).any()  # no node with heart failure already in its history
    rec = lab[(lab["task"] == "recurrent_pe") & lab["boolean_value"]]
    assert ((rec["outcome_time"] - rec["prediction_time"]) > pd.Timedelta(days=7)).all()
    diag = lab[lab["task"] == "pe_diagnosis"]
    assert 0.1 < diag["boolean_value"].mean() < 0.5  # the index study's own result


# ------------------------------------------------------------------------------------------------ decision nodes
def test_decision_nodes_follow_the_declared_rules(msk, inspect_):
    per = msk.nodes.groupby("subject_id").size()
    assert per.mean() > 3 and per.max() == load_project(REPO).cohorts["msk"].decision_nodes.max_per_subject
    codes = msk.nodes["node_code"]
    assert codes.str.match(r"ICD10/C(18|34|50|61|25)").any()  # diagnoses
    assert codes.str.startswith("MSK/LINE_OF_THERAPY/").sum() > len(per)  # every line of therapy
    assert (codes == "SNOMED/444391001").sum() > 0.3 * len(per)  # progressions
    assert not codes.str.match(r"ICD10/C7[7-9]").any()  # metastasis findings are outcomes, not nodes
    # a subject's nodes are its first diagnosis / line / progression events in time order
    first = msk.nodes.groupby("subject_id").head(1)["node_code"]
    assert first.str.startswith("ICD10/C").mean() > 0.95
    assert (inspect_.nodes["node_code"] == "CPT4/71275").all()
    assert inspect_.nodes.groupby("subject_id").size().mean() > 1.5


# ---------------------------------------------------------------------------------------------------- the oracle
def test_latent_snapshot_is_the_last_row_at_or_before_the_node():
    t = pd.to_datetime(["2020-01-01", "2020-02-01", "2020-03-01", "2020-01-15"]).astype("datetime64[us]")
    lat = pd.DataFrame({"subject_id": [1, 1, 1, 2], "time": t})
    for k, col in enumerate(oracle.LATENT_COLUMNS):
        lat[col] = [10.0 * k + 1, 10.0 * k + 2, 10.0 * k + 3, 10.0 * k + 4]
    nodes = pd.DataFrame(
        {"subject_id": [2, 1, 1], "prediction_time": pd.to_datetime(["2020-01-15", "2020-02-01", "2020-02-20"])}
    )
    snap = oracle.latent_at_nodes(lat, nodes)
    assert snap["burden"].tolist() == [4.0, 2.0, 2.0]  # exact time included; later rows never used
    assert snap["subject_id"].tolist() == [2, 1, 1]
    assert oracle.oracle_features(snap, "oracle").shape == (3, 6)
    no_rate = oracle.oracle_features(snap, "oracle_no_rate")
    assert no_rate.shape == (3, 5) and 11.0 not in no_rate[:, :]  # growth_rate (column 1, values 11..14) dropped
    early = nodes.assign(prediction_time=pd.to_datetime(["2020-01-15", "2019-12-31", "2020-02-20"]))
    with pytest.raises(ValueError, match="subject_id 1 at 2019-12-31"):
        oracle.latent_at_nodes(lat, early)


def test_latent_rows_belong_to_the_cohort_and_hold_the_true_state(msk):
    lat = oracle.cohort_latent(msk.project, "msk")
    assert list(lat.columns) == oracle.LATENT_TABLE_COLUMNS
    assert set(lat["subject_id"]) == set(msk.events["subject_id"])
    assert (lat["source_cohort"] == "msk").all()
    # the recorded tumour marker at a node tracks the latent burden there
    cea = msk.events[msk.events["code"] == "LOINC/2039-6"][["subject_id", "time", "numeric_value"]]
    m = pd.merge_asof(cea.sort_values("time"), lat.sort_values("time"), on="time", by="subject_id")
    assert np.corrcoef(np.log(m["numeric_value"]), m["burden"])[0, 1] > 0.7


def test_a_non_synthetic_cohort_has_no_oracle_and_its_assets_write_no_rows(tmp_path):
    """A real source (stand-in: a cohort spec whose source kind is 'meds') gets no latent rows and no oracle
    metrics; the assets succeed, record why, and clear rows an earlier materialization left behind."""
    from ehr_assets.defs.benchmark import latent_dynamics_asset
    from ehr_assets.defs.evaluation import latent_asset, oracle_asset
    from ehr_assets.defs.resources import ArtifactStore, Compute

    real = CohortSpec.model_construct(
        name="real", source=SimpleNamespace(kind="meds"), union=None, decision_nodes=None, splits=None
    )
    project = Project.model_construct(root=tmp_path, cohorts={"real": real}, recipes={}, probes={})
    reason = oracle.oracle_unavailable(project, "real")
    assert "no oracle" in reason and "'real' (source kind 'meds')" in reason
    assert oracle.cohort_latent(project, "real").empty

    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as c:  # stale rows of an earlier run
        c.execute("CREATE TABLE probe_metrics AS SELECT 'real' AS cohort, 'oracle' AS recipe, 0.9 AS value")
        c.execute("INSERT INTO probe_metrics VALUES ('real', 'sft', 0.7)")
        c.execute("CREATE TABLE latent_dynamics AS SELECT 'real' AS cohort, 'sft' AS recipe, 0.5 AS r2")
    parts = dg.StaticPartitionsDefinition(["real"])
    assets = [
        latent_asset(project, parts),
        oracle_asset(project, "oracle", parts),
        latent_dynamics_asset(project, parts),
    ]
    with dg.instance_for_test() as instance:
        res = dg.materialize(
            assets,
            partition_key="real",
            instance=instance,
            resources={
                "warehouse": DuckDBResource(database=str(db)),
                "artifacts": ArtifactStore(root=str(tmp_path / "a")),
                "compute": Compute(),
            },
            selection=["cohort_latent", "oracle_probe_metrics", "latent_dynamics"],
        )
    assert res.success
    for node, key in (("cohort_latent", "oracle"), ("oracle_probe_metrics", "oracle"), ("latent_dynamics", "latent")):
        md = res.asset_materializations_for_node(node)[0].metadata
        assert md["dagster/row_count"].value == 0 and "no oracle" in md[key].value
    with duckdb.connect(str(db), read_only=True) as c:
        assert c.execute("SELECT recipe FROM probe_metrics").fetchall() == [("sft",)]
        assert c.execute("SELECT count(*) FROM latent_dynamics").fetchone() == (0,)


# ----------------------------------------------------------------------------------- the benchmark discriminates
MSK_LONG = ["mortality", "progression", "metastasis"]
INSPECT_LONG = ["mortality", "readmission"]


def test_oracle_beats_the_count_baseline_at_long_horizons(msk, inspect_):
    for c, tasks in ((msk, MSK_LONG), (inspect_, INSPECT_LONG)):
        base = auroc(c, c.counts, tasks)
        orc = auroc(c, oracle.oracle_features(c.snapshot, "oracle"), tasks)
        assert len(base) >= 3 and base.notna().all()
        gap = orc - base
        print(pd.DataFrame({"baseline": base, "oracle": orc, "gap": gap}).round(3))
        assert gap.mean() > 0.06, gap  # a clear margin on average ...
        assert (gap > 0.02).all(), gap  # ... and on every long-horizon task


def test_the_latent_rate_carries_the_long_horizon_signal(msk, inspect_):
    """A probe on the snapshot without growth_rate is worse than one with it: the long-horizon outcome depends on
    where the patient is going, which one snapshot of the recorded state does not show."""
    for c, tasks, margin in ((msk, MSK_LONG, 0.04), (inspect_, INSPECT_LONG, 0.01)):
        full = auroc(c, oracle.oracle_features(c.snapshot, "oracle"), tasks)
        no_rate = auroc(c, oracle.oracle_features(c.snapshot, "oracle_no_rate"), tasks)
        print(pd.DataFrame({"oracle": full, "no_rate": no_rate}).round(3))
        assert (full - no_rate).mean() > margin, full - no_rate
    prog = ("progression", 730)
    assert (
        auroc(msk, oracle.oracle_features(msk.snapshot, "oracle"), ["progression"])[prog]
        - auroc(msk, oracle.oracle_features(msk.snapshot, "oracle_no_rate"), ["progression"])[prog]
    ) > 0.08


def test_latent_probe_reads_the_state_and_the_oracle_bounds_its_future(msk, inspect_):
    """On the cohorts themselves: the full oracle reads its own state at the node (R^2 = 1), one snapshot without
    the rate does not reveal the rate, and the oracle's read-out of the burden a year later beats counting codes."""
    from ehr_assets.eval.latent_probe import latent_probe, latent_targets

    for c, name in ((msk, "msk"), (inspect_, "inspect")):
        targets = latent_targets(oracle.cohort_latent(c.project, name), c.nodes)
        splits, subjects = c.nodes["split"].to_numpy(), c.nodes["subject_id"].to_numpy()
        r2 = {}
        for feats, X in (
            ("count_baseline", c.counts),
            ("oracle", oracle.oracle_features(c.snapshot, "oracle")),
            ("oracle_no_rate", oracle.oracle_features(c.snapshot, "oracle_no_rate")),
        ):
            out = latent_probe(feats, X, splits, subjects, targets, n_bootstrap=0)
            r2[feats] = out.set_index(["variable", "offset_days"])["r2"]
        print(pd.DataFrame(r2).round(3))
        for var in ("burden", "growth_rate", "reserve"):
            assert r2["oracle"][(var, 0)] == pytest.approx(1.0, abs=1e-4)
        assert r2["oracle_no_rate"][("growth_rate", 0)] < 0.5
        assert r2["oracle"][("burden", 365)] > r2["count_baseline"][("burden", 365)] + 0.3
        assert r2["oracle"][("burden", 365)] < r2["oracle"][("burden", 0)]  # the future is not the present


# -------------------------------------------------------------------------------------------- the gap arithmetic
def _metrics(rows):
    return pd.DataFrame(
        rows, columns=["cohort", "recipe", "task", "horizon_days", "metric", "value", "ci_low", "ci_high"]
    )


def test_gap_closed_and_pooled_summary_exact():
    m = _metrics(
        [
            ("msk", "count_baseline", "mortality", 365, "auroc", 0.70, 0.6, 0.8),
            ("msk", "oracle", "mortality", 365, "auroc", 0.90, 0.8, 1.0),
            ("msk", "sft", "mortality", 365, "auroc", 0.75, 0.6, 0.9),
            ("msk", "jepa", "mortality", 365, "auroc", 0.80, 0.7, 0.9),
            ("msk", "count_baseline", "mortality", 90, "auroc", 0.80, 0.7, 0.9),
            ("msk", "oracle", "mortality", 90, "auroc", 0.81, 0.7, 0.9),  # gap 0.01 < MIN_GAP: undefined
            ("msk", "sft", "mortality", 90, "auroc", 0.85, 0.7, 0.9),
            ("msk", "jepa", "mortality", 90, "auroc", 0.60, 0.5, 0.7),
            ("msk", "count_baseline", "survival", 0, "c_index", 0.60, 0.5, 0.7),
            ("msk", "oracle", "survival", 0, "c_index", 0.80, 0.7, 0.9),
            ("msk", "sft", "survival", 0, "c_index", 0.50, 0.4, 0.6),
            ("msk", "jepa", "survival", 0, "c_index", 0.70, 0.6, 0.8),
            ("msk", "jepa", "survival", 0, "ibs", 0.10, 0.0, 0.2),  # not a headline metric
        ]
    )
    g = bench.gap_table(m).set_index(["task", "horizon_days", "recipe"])
    assert g.loc[("mortality", 365, "sft"), "gap_closed"] == pytest.approx(0.25)
    assert g.loc[("mortality", 365, "jepa"), "gap_closed"] == pytest.approx(0.5)
    assert np.isnan(g.loc[("mortality", 90, "sft"), "gap_closed"])
    assert g.loc[("survival", 0, "sft"), "gap_closed"] == pytest.approx(-0.5)
    s = bench.gap_summary(bench.gap_table(m)).set_index("recipe")
    assert s.loc["jepa", "gap_closed_all"] == pytest.approx((0.10 + 0.10) / (0.20 + 0.20))
    assert s.loc["sft", "gap_closed_all"] == pytest.approx((0.05 - 0.10) / 0.40)
    assert s.loc["jepa", "gap_closed_h365plus"] == pytest.approx(0.5) and s.loc["jepa", "n_long"] == 1
    wide = bench.benchmark_wide(m)
    assert list(wide.columns) == [
        "cohort",
        "task",
        "horizon_days",
        "metric",
        "count_baseline",
        "jepa",
        "sft",
        "oracle",
        "closed:jepa",
        "closed:sft",
    ]
    assert bench.recipe_order(["oracle", "zeta", "oracle_no_rate", "count_baseline", "alpha"]) == [
        "count_baseline",
        "alpha",
        "zeta",
        "oracle_no_rate",
        "oracle",
    ]
    # without an oracle (a real cohort) the gap is undefined, the values are still listed
    no_oracle = bench.gap_table(m[m["recipe"] != "oracle"])
    assert no_oracle["gap_closed"].isna().all() and no_oracle["value"].notna().all()
    png = bench.auroc_by_horizon_png(m, "msk")
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


# ------------------------------------------------------------------------------------------------------- exports
def test_export_files_schemas_encoding_and_errors(tmp_path):
    import json

    import meds
    import pyarrow.parquet as pq

    from ehr_assets.eval import exports

    t = pd.to_datetime(["2020-01-01 10:00", "2020-05-01 00:00", "2021-01-01 00:00"]).astype("datetime64[us]")
    labels = pd.DataFrame(
        {
            "subject_id": [3, 1, 1],
            "prediction_time": t,
            "boolean_value": [True, False, True],
            "float_value": np.array([np.nan, np.nan, np.nan], dtype="float32"),
            "task": "mortality",
            "horizon_days": 365,
            "split": ["held_out", "train", "train"],
            "source_cohort": "msk",
            "outcome_time": pd.NaT,
        }
    )
    surv = labels.assign(task="survival", horizon_days=0, float_value=np.array([12.5, 300.0, 40.0], dtype="float32"))
    manifest = exports.write_label_files(
        pd.concat([labels, surv]), {"mortality": "binary", "survival": "survival"}, tmp_path / "labels"
    )
    assert manifest["file"].tolist() == ["mortality_365d.parquet", "survival.parquet"]
    s = pq.read_table(tmp_path / "labels" / "survival.parquet")
    meds.LabelSchema.validate(s)
    assert s.column("subject_id").to_pylist() == [1, 1, 3]  # sorted by subject and time
    assert s.column("float_value").to_pylist() == [300.0, 40.0, 12.5]
    assert s.column("boolean_value").to_pylist() == [False, True, True]
    info = json.loads((tmp_path / "labels" / "manifest.json").read_text())["labels"]
    assert info[1]["encoding"].startswith("boolean_value = event observed") and info[0]["positives"] == 2
    with pytest.raises(ValueError, match=r"task\(s\) \['frailty'\] that no probes/\*\.yaml declares"):
        exports.write_label_files(labels.assign(task="frailty"), {"mortality": "binary"}, tmp_path / "x")

    preds = labels.assign(recipe="sft", predicted_boolean_probability=[0.9, 0.45, 0.7])
    unfit = labels.assign(recipe="jepa", predicted_boolean_probability=np.nan)  # its probe could not be fit
    written = exports.write_prediction_files(pd.concat([preds, unfit]), tmp_path / "preds")
    assert written["file"].tolist() == ["sft/mortality_365d.parquet"]
    p = pq.read_table(tmp_path / "preds" / "sft" / "mortality_365d.parquet")
    exports.PredictionSchema.validate(p)
    assert p.schema.field("predicted_boolean_probability").type == "float"  # meds-evaluation's float32
    assert p.column("predicted_boolean_probability").to_pylist() == np.float32([0.45, 0.7, 0.9]).tolist()  # sorted
    assert p.column("predicted_boolean_value").to_pylist() == [False, True, True]  # probability > 0.5
    with pytest.raises(Exception, match="Disallowed extra columns: split"):
        exports.PredictionSchema.validate(p.append_column("split", p.column("subject_id").cast("string")))


def test_plots_take_more_recipes_than_the_colour_cycle_has_colours():
    """Seed replicates multiply the recipes (the demo's combined cohort has 13 series): every plot must still draw,
    one colour per recipe, the cycle reused past its end."""
    from ehr_assets.eval import plots

    recipes = ["count_baseline", "oracle", *(f"r{i}" for i in range(14))]
    rows = [
        {
            "cohort": "msk",
            "recipe": r,
            "task": "mortality",
            "metric": "auroc",
            "horizon_days": h,
            "value": 0.6 + i / 100,
            "ci_low": 0.5,
            "ci_high": 0.7,
        }
        for i, r in enumerate(recipes)
        for h in (90, 365)
    ]
    png = bench.auroc_by_horizon_png(pd.DataFrame(rows), "msk")
    assert png.startswith(b"\x89PNG")
    lat = pd.DataFrame(
        [
            {"recipe": r, "variable": "burden", "offset_days": d, "r2": 0.1 + i / 100, "ci_low": 0.0, "ci_high": 0.5}
            for i, r in enumerate(recipes)
            for d in (0, 180, 365)
        ]
    )
    assert plots.latent_r2_png(lat, "msk").startswith(b"\x89PNG")
