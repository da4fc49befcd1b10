"""ehr_assets.data.cohort on a hand-built cohort: validation rules and splits."""

import numpy as np
import pandas as pd
import pytest

from ehr_assets.data import cohort

from ..conftest import ev


def test_validate_events_accepts_good_and_types(tiny_events):
    out = cohort.validate_events(tiny_events.assign(source_cohort="msk"), "msk")
    assert len(out) == len(tiny_events)
    assert out["time"].dtype == "datetime64[us]" and out["numeric_value"].dtype == "float32"
    assert cohort.meds_violations(tiny_events) == []


def test_validate_events_reports_every_failed_rule(tiny_events):
    bad = pd.concat(
        [tiny_events, ev([(1, "2016-01-01", "Visit/OP", None, "observation")]), tiny_events.iloc[[2]]],
        ignore_index=True,
    )
    with pytest.raises(cohort.CohortDataError) as e:
        cohort.validate_events(bad.assign(source_cohort="msk"), "msk")
    msg = str(e.value)
    assert "cohort 'msk'" in msg and "no_event_after_death" in msg and "no_duplicate_rows" in msg


def test_validate_events_missing_column_and_string_numbers(tiny_events):
    with pytest.raises(cohort.CohortDataError, match=r"lack required column\(s\) \['code'\]"):
        cohort.validate_events(tiny_events.drop(columns=["code"]), "msk")
    strs = tiny_events.assign(numeric_value=tiny_events["numeric_value"].astype(str).astype(object))
    with pytest.raises(cohort.CohortDataError, match="'numeric_value' holds non-numeric"):
        cohort.validate_events(strs, "msk")
    assert cohort.meds_violations(tiny_events.drop(columns=["subject_id"]))


def test_assign_splits_deterministic_disjoint_and_sized():
    ids = np.arange(1000, 2000)
    a = cohort.assign_splits(ids, {"train": 0.7, "tuning": 0.1, "held_out": 0.2}, seed=3)
    b = cohort.assign_splits(ids[::-1], {"train": 0.7, "tuning": 0.1, "held_out": 0.2}, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert a["subject_id"].is_unique
    assert a["split"].value_counts().to_dict() == {"train": 700, "held_out": 200, "tuning": 100}
    assert cohort.split_violations(a) == []
    dup = pd.concat([a, a.iloc[:3].assign(split="held_out")])
    assert "in two splits" in cohort.split_violations(dup)[0]


def test_a_cohort_without_any_death_validates_and_failures_name_the_patient(tiny_events):
    """No MEDS_DEATH anywhere is a valid cohort (the death lookup is empty, not a crash); a cBioPortal cohort's
    failures name the PATIENT_ID a user knows, not the hashed subject_id."""
    alive = tiny_events[tiny_events["code"] != "MEDS_DEATH"].assign(source_cohort="msk")
    assert len(cohort.validate_events(alive, "msk")) == len(alive)
    assert cohort.death_times(alive).isna().all()
    bad = pd.concat([tiny_events, ev([(1, "2016-01-01", "Visit/OP", None, "observation")])], ignore_index=True)
    bad = bad.assign(source_cohort="msk", patient_id=bad["subject_id"].map({1: "P-0000001", 2: "P-0000002"}))
    bad["subject_id"] = bad["subject_id"] + 281474976710000  # hashed-looking ids
    with pytest.raises(cohort.CohortDataError) as e:
        cohort.validate_events(bad, "msk")
    assert (
        "| no_event_after_death | code, patient_id, source_cohort, subject_id, table, time | 1 | "
        "PATIENT_ID P-0000001 |\nevents after MEDS_DEATH: declare events_after_death" in str(e.value)
    )
    assert "281474976710001" not in str(e.value)


def test_repeated_rows_are_collapsed_once_and_counted(tiny_events):
    rep = pd.concat([tiny_events, tiny_events.iloc[[3, 3, 5]]], ignore_index=True).assign(extra=[[1]] * 18)
    out, n = cohort.collapse_repeated_rows(rep)
    assert n == 3 and len(out) == len(tiny_events) and not out.drop(columns="extra").duplicated().any()
    differ = pd.concat([tiny_events, tiny_events.iloc[[3]].assign(numeric_value=np.float32(9))], ignore_index=True)
    assert cohort.collapse_repeated_rows(differ)[1] == 0  # a different value is another measurement: kept
