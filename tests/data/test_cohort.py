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
