"""The warehouse's declared schema (ehr_assets/warehouse_schema.py): column types come from the declaration, so the
order in which cohorts are written cannot matter; a warehouse poisoned by the old inferred types (a column of DuckDB
type NULL) is repaired on the next write, and a declared column of another type is refused with what to do."""

from __future__ import annotations

import dagster as dg
import duckdb
import meds
import pandas as pd
import pyarrow as pa
import pytest
from dagster_duckdb import DuckDBResource

from ehr_assets.data.decision_nodes import NODE_COLUMNS
from ehr_assets.data.labels import LABEL_COLUMNS
from ehr_assets.eval.oracle import LATENT_TABLE_COLUMNS
from ehr_assets.eval.probe_metrics import METRIC_COLUMNS, PREDICTION_COLUMNS
from ehr_assets.warehouse import WarehouseSchemaError, replace_partition
from ehr_assets.warehouse_schema import TABLES, arrow_to_duckdb, undeclared

from .meds_spec_data import INDEX, subjects, write_dataset
from .shape_project import ShapeProject, step_error

EVENTS = ("cohort_events", "cohort_table")


def test_event_types_are_the_meds_schema_and_every_writer_column_is_declared():
    for name, field in zip(meds.DataSchema.schema().names, meds.DataSchema.schema()):
        assert TABLES["cohort_table"].columns[name] == arrow_to_duckdb(field.type)
    assert TABLES["cohort_events"].columns["numeric_value"] == "FLOAT"  # MEDS float32
    assert TABLES["cohort_events"].columns["text_value"] == "VARCHAR"  # MEDS large_string
    assert (
        TABLES["task_labels"].columns["float_value"] == "FLOAT" and arrow_to_duckdb(pa.list_(pa.int32())) == "INTEGER[]"
    )
    for table, cols in (
        ("decision_nodes", NODE_COLUMNS),
        ("task_labels", LABEL_COLUMNS),
        ("probe_metrics", [c for c in METRIC_COLUMNS]),
        ("probe_predictions", PREDICTION_COLUMNS),
        ("cohort_latent", LATENT_TABLE_COLUMNS),
    ):
        assert undeclared(table, ["cohort", *cols]) == [], table
    assert undeclared("probe_metrics", ["cohort", "surprise"]) == ["surprise"]
    assert undeclared("cohort_table", ["cohort", "visit_id"]) == []  # a source's own columns are expected there


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("order")
    ids_a, ids_b = list(range(1, 7)), list(range(101, 107))
    bare = [{k: r[k] for k in ("subject_id", "time", "code")} for r in subjects(ids_a, death=True)]
    rich = [
        {**r, "table": "measurement" if r["code"].startswith("LAB/") else "observation", "unit": "mg/dL", "visit": 7}
        for r in subjects(ids_b, death=True)
    ]
    a = write_dataset(tmp / "a", {"0.parquet": bare}, optional=())  # no numeric_value, text_value, table, unit
    b = write_dataset(
        tmp / "b",
        {"0.parquet": rich},
        optional=("numeric_value", "text_value"),
        extras={"table": pa.string(), "unit": pa.string(), "visit": pa.int64()},
    )
    cohorts = {
        name: {"source": {"kind": "meds", "path": str(p)}, "decision_nodes": {"codes": [INDEX]}}
        for name, p in (("bare", a), ("rich", b))
    }
    with dg.instance_for_test() as instance:
        yield ShapeProject(tmp / "project", cohorts, {}, instance=instance), tmp


@pytest.mark.parametrize("order", [("bare", "rich"), ("rich", "bare")])
def test_two_cohorts_with_different_optional_columns_in_either_order(project, order):
    sp, tmp = project
    db = tmp / f"{order[0]}_first.duckdb"
    for cohort in order:
        res = sp.materialize(cohort, EVENTS, db=db)
        assert res.success, step_error(res)
    types = sp.types("cohort_table", db)
    assert {c: types[c] for c in ("subject_id", "time", "code", "numeric_value", "text_value", "table", "unit")} == {
        "subject_id": "BIGINT",
        "time": "TIMESTAMP",
        "code": "VARCHAR",
        "numeric_value": "FLOAT",
        "text_value": "VARCHAR",
        "table": "VARCHAR",
        "unit": "VARCHAR",
    }
    assert types["visit"] == "BIGINT" and types == sp.types("cohort_events", db)
    # declared columns exist with their types even when no cohort delivered them (no cBioPortal cohort here)
    assert types["patient_id"] == "VARCHAR" and list(types)[:6] == list(TABLES["cohort_table"].columns)[:6]
    rich, bare = sp.table("cohort_table", "rich", db), sp.table("cohort_table", "bare", db)
    assert set(rich.loc[rich["code"] == "NOTE/TRIAGE", "text_value"]) == {"short of breath"}
    assert (rich["visit"] == 7).all() and set(rich["unit"]) == {"mg/dL"}
    assert bare["text_value"].isna().all() and bare["visit"].isna().all()
    assert len(bare) == len(subjects(range(6), death=True))


def _old_write(conn, table: str, df: pd.DataFrame) -> None:
    """How the warehouse wrote before the declared schema: the table created from the first frame's own types."""
    conn.register("incoming", df)
    conn.execute(f"CREATE TABLE {table} AS SELECT * FROM incoming")
    conn.unregister("incoming")


def test_a_warehouse_poisoned_by_the_old_inferred_types_is_repaired(project):
    sp, tmp = project
    db = tmp / "poisoned.duckdb"
    assert sp.materialize("bare", EVENTS, db=tmp / "scratch.duckdb").success
    old = sp.table("cohort_events", "bare", tmp / "scratch.duckdb")
    old[["text_value", "table", "unit"]] = None  # object columns of None: DuckDB types them NULL
    with duckdb.connect(str(db)) as c:
        _old_write(c, "cohort_events", old.drop(columns=["visit", "patient_id"], errors="ignore"))
        assert (
            c.execute("DESCRIBE cohort_events").df().set_index("column_name")["column_type"]["text_value"] == '"NULL"'
        )
    res = sp.materialize("rich", ("cohort_events",), db=db)
    assert res.success, step_error(res)
    types = sp.types("cohort_events", db)
    assert types["text_value"] == types["table"] == types["unit"] == "VARCHAR"
    assert len(sp.table("cohort_events", "bare", db)) == len(old)  # the old partition is still there
    rich = sp.table("cohort_events", "rich", db)
    assert set(rich.loc[rich["code"] == "NOTE/TRIAGE", "text_value"]) == {"short of breath"}


def test_a_declared_column_of_another_type_is_refused_with_what_to_do(project):
    sp, tmp = project
    db = tmp / "wrong_type.duckdb"
    with duckdb.connect(str(db)) as c:
        _old_write(c, "cohort_events", pd.DataFrame({"cohort": ["x"], "subject_id": [1], "numeric_value": ["high"]}))
    res = sp.materialize("rich", ("cohort_events",), db=db)
    msg = step_error(res)
    assert not res.success and "warehouse table 'cohort_events': column 'numeric_value' has type VARCHAR" in msg
    assert "declares FLOAT" in msg and "DROP TABLE cohort_events" in msg and "re-materialize" in msg
    # nothing half-written: the old table is as it was (read as the failed run's resource opened it)
    with DuckDBResource(database=str(db)).get_connection() as c:
        assert c.execute("SELECT cohort, numeric_value FROM cohort_events").fetchall() == [("x", "high")]


def test_an_undeclared_extra_column_keeps_its_first_type_and_null_never_sticks(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as c:
        replace_partition(c, "cohort_events", pd.DataFrame({"cohort": ["a"], "note": [None]}), {"cohort": "a"})
        assert c.execute("DESCRIBE cohort_events").df().set_index("column_name")["column_type"]["note"] == "VARCHAR"
        replace_partition(c, "cohort_events", pd.DataFrame({"cohort": ["b"], "note": ["x"]}), {"cohort": "b"})
        replace_partition(c, "scratch", pd.DataFrame({"cohort": ["a"], "n": [1]}), {"cohort": "a"})
        with pytest.raises(duckdb.ConversionException):  # an extra column's type stays: text into BIGINT fails
            replace_partition(c, "scratch", pd.DataFrame({"cohort": ["b"], "n": ["one"]}), {"cohort": "b"})
        with pytest.raises(WarehouseSchemaError, match="column 'code' has type BIGINT"):
            c.execute("CREATE TABLE cohort_table (cohort VARCHAR, code BIGINT)")
            replace_partition(c, "cohort_table", pd.DataFrame({"cohort": ["a"], "code": ["A"]}), {"cohort": "a"})


def test_an_empty_partition_gets_the_declared_types(tmp_path):
    """A stage with nothing to write (no task declared: an empty frame of object columns) creates the table with the
    declared types, so the cohort written next cannot be refused by types guessed from nothing."""
    empty = pd.DataFrame(columns=["cohort", *LABEL_COLUMNS])
    with duckdb.connect(str(tmp_path / "w.duckdb")) as c:
        replace_partition(c, "task_labels", empty, {"cohort": "a"})
        types = {r[0]: r[1] for r in c.execute("DESCRIBE task_labels").fetchall()}
        assert types == TABLES["task_labels"].columns
        later = pd.DataFrame(
            {
                "cohort": ["b"],
                "subject_id": [1],
                "prediction_time": [pd.Timestamp("2020-01-01")],
                "boolean_value": [True],
                "float_value": [2.5],
                "task": ["t"],
                "horizon_days": [30],
                "split": ["train"],
                "source_cohort": ["b"],
                "outcome_time": [pd.NaT],
            }
        )
        replace_partition(c, "task_labels", later, {"cohort": "b"})
        assert c.execute("SELECT boolean_value, float_value FROM task_labels").fetchall() == [(True, 2.5)]
