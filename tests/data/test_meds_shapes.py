"""MEDS datasets shaped as real data arrive (written from the MEDS specification, ``tests/meds_spec_data.py``), each
loaded through ``dg.materialize`` into a real DuckDB warehouse: the data lineage succeeds and the rows are checked.

Shapes: no ``MEDS_DEATH`` anywhere; no ``MEDS_BIRTH`` with static rows; repeated identical rows; only the required
columns (and the SMB-v1 text of data without a ``table`` column); split sub-folders with an empty shard; unusual
codes (spaces, unicode, 2,000 characters)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import meds
import numpy as np
import pandas as pd
import pytest

from ..meds_spec_data import INDEX, LONG_CODE, OUTCOME, SPACE_CODE, UNICODE_CODE, subject_rows, subjects, write_dataset
from ..shape_project import ShapeProject, report

IDS = list(range(1, 13))
EVENTS = ("cohort_events", "cohort_table")
SPLITS = {"train": 0.5, "tuning": 0.25, "held_out": 0.25, "seed": 3}


def _cohort(path, index=INDEX):
    return {
        "source": {"kind": "meds", "path": str(path)},
        "decision_nodes": {"codes": [index], "max_per_subject": 2, "min_context_events": 3},
        "splits": SPLITS,
    }


def _datasets(data):
    repeated = subjects(IDS)
    repeated += [dict(r) for r in repeated if r["subject_id"] == 1 and r["code"] == "LAB/CREATININE"]  # 3 repeats
    repeated.append(dict(next(r for r in repeated if r["subject_id"] == 2 and r["time"] is None)))  # a static repeat
    # with deaths, so that each of these two tests isolates its own shape
    minimal = [{k: r[k] for k in ("subject_id", "time", "code")} for r in subjects(IDS, death=True)]
    unusual = [
        r for k, sid in enumerate(IDS) for r in subject_rows(sid, k=k, death=True, lab=SPACE_CODE, index=UNICODE_CODE)
    ] + [{"subject_id": 1, "time": subject_rows(1)[2]["time"], "code": LONG_CODE, "numeric_value": 2.5}]
    by_split = {"train": IDS[:6], "tuning": IDS[6:9], "held_out": IDS[9:]}
    return {
        "no_death": write_dataset(data / "no_death", {"0.parquet": subjects(IDS)}),
        "no_birth": write_dataset(data / "no_birth", {"0.parquet": subjects(IDS, birth=False)}),
        "repeated": write_dataset(data / "repeated", {"0.parquet": sorted(repeated, key=_order)}),
        "minimal": write_dataset(data / "minimal", {"0.parquet": minimal}, optional=()),
        "split_folders": write_dataset(
            data / "split_folders",
            {
                **{f"{s}/0.parquet": subjects(ids, death=True) for s, ids in by_split.items()},
                "held_out/1.parquet": [],  # an empty shard
            },
            splits={i: s for s, ids in by_split.items() for i in ids},
        ),
        "unusual_codes": write_dataset(data / "unusual_codes", {"0.parquet": sorted(unusual, key=_order)}),
    }


def _order(r):
    return (r["subject_id"], r["time"] is not None, r["time"] or pd.Timestamp.min)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meds_shapes")
    paths = _datasets(tmp / "data")
    cohorts = {name: _cohort(p, UNICODE_CODE if name == "unusual_codes" else INDEX) for name, p in paths.items()}
    probe = {"kind": "binary", "outcome_codes": [OUTCOME], "horizons_days": [90], "cohorts": list(cohorts)}
    with dg.instance_for_test() as instance:
        yield ShapeProject(tmp / "project", cohorts, {"admission": probe}, smb_v1=True, instance=instance)


def _ok(result):
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_no_death_anywhere(shapes):
    _ok(res := shapes.materialize("no_death"))
    ev = shapes.table("cohort_table", "no_death")
    assert len(ev) == sum(len(subject_rows(i, k=k)) for k, i in enumerate(IDS)) and meds.death_code not in set(
        ev["code"]
    )
    subj = shapes.table("subjects", "no_death")
    assert len(subj) == 12 and subj["death_time"].isna().all() and subj["birth_time"].notna().all()
    nodes = shapes.table("decision_nodes", "no_death")
    assert len(nodes) == 12 and set(nodes["node_code"]) == {INDEX}
    labels = shapes.table("task_labels", "no_death")
    assert len(labels) == 12 and labels["boolean_value"].sum() == 6  # an admission 30 days after every other index
    assert report(res, "no_death")["subjects_with_death"] == 0


def test_static_rows_without_birth(shapes):
    _ok(res := shapes.materialize("no_birth", EVENTS + ("subjects",)))
    ev = shapes.table("cohort_table", "no_birth").sort_values(["subject_id", "time"], kind="stable")
    gender = ev[ev["code"].str.startswith("GENDER/")]
    first = ev.groupby("subject_id")["time"].min()
    # no MEDS_BIRTH anywhere: each static gender row sits at its subject's first timed event
    assert len(gender) == 12 and (gender["time"].to_numpy() == first.loc[gender["subject_id"]].to_numpy()).all()
    assert meds.birth_code not in set(ev["code"]) and shapes.table("subjects", "no_birth")["birth_time"].isna().all()
    rep = report(res, "no_birth")
    assert rep["static_rows_placed"] == 12 and rep["subjects_without_birth"] == 12


def test_repeated_rows_are_collapsed_and_counted(shapes):
    _ok(res := shapes.materialize("repeated", EVENTS))
    ev = shapes.table("cohort_table", "repeated")
    assert len(ev) == sum(len(subject_rows(i, k=k)) for k, i in enumerate(IDS))  # 4 repeats collapsed
    assert not ev.drop(columns=["cohort"]).duplicated().any()
    one = ev[(ev["subject_id"] == 1) & (ev["code"] == "LAB/CREATININE")]
    assert len(one) == 3 and np.allclose(one["numeric_value"], 1.0)
    assert report(res, "repeated")["repeated_rows_collapsed"] == 4


def test_only_the_required_columns(shapes):
    _ok(res := shapes.materialize("minimal", (*EVENTS, "subjects", "decision_nodes", "smb_v1_text")))
    ev = shapes.table("cohort_table", "minimal")
    assert len(ev) == sum(len(subject_rows(i, k=k, death=True)) for k, i in enumerate(IDS))
    assert ev["numeric_value"].isna().all() and ev["text_value"].isna().all() and ev["table"].isna().all()
    assert shapes.types("cohort_table")["text_value"] == "VARCHAR"  # declared, not inferred from all-null values
    assert report(res, "minimal")["optional_columns"] == []
    # no table column: the SMB-v1 text is the released formatter's (every code in its day, Birth included)
    text = shapes.table("smb_v1_text", "minimal").set_index("subject_id")["text"][1]
    assert text.startswith(
        "\n[1950-01-01]\nBirth: 1950-01-01\nGENDER/F\n\n[2015-03-01]\nVISIT/OUTPATIENT\nLAB/CREATININE\nNOTE/TRIAGE\n\n"
    )


def test_split_sub_folders_and_an_empty_shard(shapes):
    _ok(res := shapes.materialize("split_folders", EVENTS + ("subjects",)))
    subj = shapes.table("subjects", "split_folders").set_index("subject_id")
    assert subj.loc[IDS[:6], "split"].eq("train").all() and subj.loc[IDS[6:9], "split"].eq("tuning").all()
    assert subj.loc[IDS[9:], "split"].eq("held_out").all() and subj["death_time"].notna().all()
    rep = report(res, "split_folders")
    assert rep["shards"] == 4 and rep["splits_from"] == "metadata/subject_splits.parquet"


def test_unusual_codes(shapes):
    _ok(shapes.materialize("unusual_codes", EVENTS + ("subjects", "decision_nodes")))
    ev = shapes.table("cohort_table", "unusual_codes")
    assert {LONG_CODE, SPACE_CODE, UNICODE_CODE} <= set(ev["code"])
    assert len(ev.loc[ev["code"] == LONG_CODE, "code"].iloc[0]) == len(LONG_CODE) == 2006
    nodes = shapes.table("decision_nodes", "unusual_codes")
    assert len(nodes) == 12 and set(nodes["node_code"]) == {UNICODE_CODE}
    t_index = ev[ev["code"] == UNICODE_CODE].set_index("subject_id")["time"]
    assert (nodes.set_index("subject_id")["prediction_time"] == t_index).all()
    assert (nodes["prediction_time"] - pd.Timestamp("2015-03-01 09:00")).min() >= timedelta(days=130)
