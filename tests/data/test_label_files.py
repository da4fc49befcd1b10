"""MEDS label files as tasks (``kind: meds_labels``): fixtures written with the ``meds`` package's own
``LabelSchema``, the rows that become labels, and errors that name the file and the column."""

from pathlib import Path

import meds
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from ehr_assets.data import aces_tasks, label_files
from ehr_assets.data.labels import LABEL_COLUMNS, LabelError
from ehr_assets.specs import ProbeSpec

T = pd.Timestamp


def write_labels(path: Path, rows: list[dict], columns=None) -> Path:
    """A label file in meds.LabelSchema (the package's schema, optional columns as given)."""
    schema = meds.LabelSchema.schema()
    keep = columns or ["subject_id", "prediction_time", *[c for c in rows[0] if c.endswith("_value")]]
    table = pa.Table.from_pylist(rows, schema=pa.schema([schema.field(c) for c in keep]))
    meds.LabelSchema.validate(table)  # the fixture itself conforms
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def task(path, **kw):
    return ProbeSpec(name="icu_mortality", kind="meds_labels", labels=str(path), cohorts=["m"], **kw)


SUBJECTS = pd.DataFrame(
    {
        "subject_id": [1, 2, 3],
        "split": ["train", "held_out", "tuning"],
        "source_cohort": "m",
        "first_time": [T("2020-01-01"), T("2020-01-01"), T("2020-01-01")],
        "death_time": [pd.NaT, T("2020-06-01"), pd.NaT],
    }
)


def test_a_label_folder_becomes_labels_at_its_own_prediction_times(tmp_path):
    folder = tmp_path / "labels"
    write_labels(
        folder / "a.parquet",
        [
            {"subject_id": 1, "prediction_time": T("2020-02-01 10:00"), "boolean_value": True},
            {"subject_id": 1, "prediction_time": T("2020-03-01"), "boolean_value": False},
            {"subject_id": 2, "prediction_time": T("2020-07-01"), "boolean_value": True},  # after death: left out
        ],
    )
    write_labels(
        folder / "sub" / "b.parquet",
        [
            {"subject_id": 3, "prediction_time": T("2020-04-01"), "boolean_value": False},
            {"subject_id": 3, "prediction_time": T("2020-04-01"), "boolean_value": False},  # repeated: once
            {"subject_id": 9, "prediction_time": T("2020-04-01"), "boolean_value": True},  # not in the cohort
            {"subject_id": 3, "prediction_time": T("2019-04-01"), "boolean_value": True},  # before its data
        ],
    )
    empty = pa.array([None], pa.int64())  # as the MIMIC-IV demo's file: unfilled value columns kept, all null
    mimic_like = pa.table(
        {
            "subject_id": pa.array([1], pa.int64()),
            "prediction_time": pa.array([T("2020-05-01")], pa.timestamp("us")),
            "boolean_value": [True],
            "integer_value": empty,
            "float_value": pa.array([None], pa.float64()),
            "categorical_value": pa.array([None], pa.string()),
        }
    )
    pq.write_table(mimic_like, folder / "c.parquet")
    logged = []
    lab = label_files.label_file_task_labels(task(folder), tmp_path / "p.yaml", SUBJECTS, log=logged.append)
    assert list(lab.columns) == [*LABEL_COLUMNS, "label_window_start_inclusive"]
    assert lab[["subject_id", "boolean_value", "split"]].values.tolist() == [
        [1, True, "train"],
        [1, False, "train"],
        [1, True, "train"],
        [3, False, "tuning"],
    ]
    assert (lab["outcome_time"] == lab["prediction_time"]).all() and not lab["label_window_start_inclusive"].any()
    assert aces_tasks.label_window_violations(lab).empty  # the window opens right after the prediction time
    assert "'rows_at_or_after_death': 1" in logged[0] and "'rows_of_subjects_not_in_cohort': 1" in logged[0]
    assert "'rows_before_first_event': 1" in logged[0]
    assert set(aces_tasks.aces_nodes(lab)["subject_id"]) == {1, 3}


def test_integer_categorical_and_float_labels_are_binarized_as_declared(tmp_path):
    pt = T("2020-02-01")
    rows = [
        {"subject_id": 1, "prediction_time": pt, "integer_value": 2, "float_value": 0.7, "categorical_value": "x"},
        {"subject_id": 3, "prediction_time": pt, "integer_value": 1, "float_value": 0.2, "categorical_value": "y"},
    ]
    f = write_labels(tmp_path / "l.parquet", rows)
    got = {
        v: label_files.label_file_task_labels(task(f, value=v, **kw), f, SUBJECTS)["boolean_value"].tolist()
        for v, kw in (
            ("integer", {"positive_values": [2, 3]}),
            ("float", {"threshold": 0.5}),
            ("categorical", {"positive_values": ["y"]}),
        )
    }
    assert got == {"integer": [True, False], "float": [True, False], "categorical": [False, True]}
    with pytest.raises(LabelError, match="fill .*declare value:"):  # three value columns: which one?
        label_files.label_file_task_labels(task(f), f, SUBJECTS)


def test_errors_name_the_file_and_the_column(tmp_path):
    pt = T("2020-02-01")
    no_time = tmp_path / "no_time.parquet"
    pq.write_table(pa.table({"subject_id": pa.array([1], pa.int64()), "boolean_value": [True]}), no_time)
    with pytest.raises(LabelError, match=f"{no_time}: column 'prediction_time': required by meds.LabelSchema"):
        label_files.label_file_task_labels(task(no_time), no_time, SUBJECTS)
    text_ids = tmp_path / "text_ids.parquet"
    pq.write_table(pa.table({"subject_id": ["P-1"], "prediction_time": [pt], "boolean_value": [True]}), text_ids)
    with pytest.raises(LabelError, match=f"{text_ids}: fails meds.LabelSchema"):
        label_files.label_file_task_labels(task(text_ids), text_ids, SUBJECTS)
    holes = tmp_path / "holes.parquet"  # meds.LabelSchema: an optional column, when present, has no nulls
    pq.write_table(pa.table({"subject_id": [1, 3], "prediction_time": [pt, pt], "boolean_value": [True, None]}), holes)
    with pytest.raises(LabelError, match=f"{holes}: fails meds.LabelSchema: .*nulls.*boolean_value"):
        label_files.label_file_task_labels(task(holes), holes, SUBJECTS)
    clash = write_labels(
        tmp_path / "clash.parquet",
        [
            {"subject_id": 1, "prediction_time": pt, "boolean_value": True},
            {"subject_id": 1, "prediction_time": pt, "boolean_value": False},
        ],
    )
    with pytest.raises(LabelError, match="two different labels .*subject_id 1.*'boolean_value'"):
        label_files.label_file_task_labels(task(clash), clash, SUBJECTS)
    with pytest.raises(LabelError, match="column 'float_value': not in the label file"):
        label_files.label_file_task_labels(task(clash, value="float", threshold=1.0), clash, SUBJECTS)
    with pytest.raises(LabelError, match="not found"):
        label_files.label_file_task_labels(task(tmp_path / "nowhere"), tmp_path / "p.yaml", SUBJECTS)


def test_the_task_declaration():
    assert task("x.parquet").probe_kind == "binary" and task("x.parquet").own_times
    with pytest.raises(ValidationError, match="labels: a task of kind meds_labels needs"):
        ProbeSpec(name="t", kind="meds_labels", cohorts=["m"])
    with pytest.raises(ValidationError, match="positive_values: a categorical label needs"):
        task("x.parquet", value="categorical")
    with pytest.raises(ValidationError, match="horizons_days: a meds_labels task takes"):
        task("x.parquet", horizons_days=[30])
    with pytest.raises(ValidationError, match="labels: only a task of kind meds_labels"):
        ProbeSpec(name="t", kind="binary", outcome_codes=["X"], horizons_days=[1], cohorts=["m"], labels="x")
