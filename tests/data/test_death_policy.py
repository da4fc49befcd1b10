"""Events after MEDS_DEATH (deaths recorded by day): the cohort's ``events_after_death`` policy, its counts, and
labels that never take follow-up or an outcome from after the death."""

import pandas as pd
import pytest
from pydantic import ValidationError

from ehr_assets.data import cohort, decision_nodes, labels
from ehr_assets.specs import CohortSpec, DecisionNodeRule, ProbeSpec

from ..conftest import ev

DEATH = pd.Timestamp("2015-07-01")  # subject 1's MEDS_DEATH, recorded by day (midnight)
END_OF_DAY = pd.Timestamp("2015-07-01 23:59:59.999999")


def after_death(tiny_events):
    """``tiny_events`` plus, for subject 1, a lab and an admission charted on the death's day after midnight and an
    infusion stopped early the next day (what the MIMIC-IV demo extract holds)."""
    late = ev(
        [
            (1, "2015-07-01 10:00", "LAB/late", 1.0, "measurement"),
            (1, "2015-07-01 11:00", "ADMIT/ED", None, "observation"),
            (1, "2015-07-02 03:00", "INFUSION_END/x", None, "drug_exposure"),
        ]
    )
    return pd.concat([tiny_events, late], ignore_index=True)


def test_each_policy_counts_every_row_and_the_result_validates(tiny_events):
    events = after_death(tiny_events)
    clipped, rep = cohort.apply_death_policy(events, "clip")
    assert rep == {
        "events_after_death": "clip",
        "rows_after_death": 3,
        "subjects_with_rows_after_death": 1,
        "rows_after_death_same_day_kept": 2,
        "deaths_moved_to_end_of_day": 1,
        "rows_after_death_day_dropped": 1,
    }
    s1 = clipped[clipped["subject_id"] == 1]
    assert s1.loc[s1["code"] == "MEDS_DEATH", "time"].tolist() == [END_OF_DAY]
    assert "INFUSION_END/x" not in set(s1["code"]) and {"LAB/late", "ADMIT/ED"} <= set(s1["code"])
    assert len(clipped) == len(events) - 1
    cohort.validate_events(clipped.assign(source_cohort="m"), "m")

    dropped, rep = cohort.apply_death_policy(events, "drop")
    assert rep["rows_after_death_dropped"] == 3 and len(dropped) == len(tiny_events)
    cohort.validate_events(dropped.assign(source_cohort="m"), "m")

    for policy in ("keep", "error"):
        same, rep = cohort.apply_death_policy(events, policy)
        assert same is events and rep["rows_after_death"] == 3
    cohort.validate_events(events.assign(source_cohort="m"), "m", keep_after_death=["m"])  # keep: waived
    with pytest.raises(cohort.CohortDataError, match="(?s)no_event_after_death.*declare events_after_death"):
        cohort.validate_events(events.assign(source_cohort="m"), "m")  # error (or another member's keep)

    untouched, rep = cohort.apply_death_policy(tiny_events, "clip")  # nothing after the death: nothing moves
    assert untouched is tiny_events and rep["rows_after_death"] == 0


def test_the_policy_is_declared_per_source_cohort():
    src = {"kind": "synthetic", "profile": "pe", "subjects": 5}
    rule = {"codes": ["X"]}
    assert CohortSpec(name="a", source=src, decision_nodes=rule).after_death == "clip"
    assert CohortSpec(name="a", source=src, decision_nodes=rule, events_after_death="keep").after_death == "keep"
    with pytest.raises(ValidationError, match="events_after_death"):
        CohortSpec(name="a", source=src, decision_nodes=rule, events_after_death="ignore")
    with pytest.raises(ValidationError, match="inherits decision_nodes, splits and events_after_death"):
        CohortSpec(name="u", union=["a", "b"], events_after_death="drop")


def subjects_of(events):
    g = events.groupby("subject_id")["time"]
    deaths = events.loc[events["code"] == "MEDS_DEATH"].groupby("subject_id")["time"].min()
    subj = pd.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"], "source_cohort": "m"})
    return subj.assign(last_time=subj["subject_id"].map(g.max()), death_time=subj["subject_id"].map(deaths))


def test_a_death_day_event_sets_no_followup_past_death_and_no_label_after_it(tiny_events):
    """keep: the lab charted after the recorded death can neither be an outcome nor carry follow-up past the death;
    the admission after it is no decision node. clip: the death moves after that day's events, and the next day's
    event is gone, so follow-up ends at the (moved) death."""
    events = after_death(tiny_events)  # keep leaves the rows as they are
    nodes = decision_nodes.find_nodes(events, DecisionNodeRule(codes=["ICD10/C.*", "ADMIT/.*"], min_context_events=1))
    assert not (nodes["prediction_time"] >= DEATH).any()  # no node at or after the death
    nodes = nodes.assign(split="train", source_cohort="m")
    subj = subjects_of(events)
    late_lab = ProbeSpec(
        name="late", kind="binary", outcome_codes=["LAB/late"], horizons_days=[100, 200], cohorts=["m"]
    )
    lab = labels.task_labels(late_lab, nodes, events, subj)
    s1 = lab[lab["subject_id"] == 1].set_index("horizon_days")
    # 100 d after 2015-03-01 is before the death: observed, negative; 200 d reaches past the death: censored
    assert s1["boolean_value"].to_dict() == {100: False} and s1["outcome_time"].isna().all()
    surv = ProbeSpec(name="late_s", kind="survival", outcome_codes=["LAB/late"], cohorts=["m"])
    s1 = labels.task_labels(surv, nodes, events, subj).query("subject_id == 1").iloc[0]
    assert not s1["boolean_value"] and s1["float_value"] == (DEATH - pd.Timestamp("2015-03-01")).days
    mortality = ProbeSpec(name="mort", kind="binary", outcome_codes=["MEDS_DEATH"], horizons_days=[200], cohorts=["m"])
    s1 = labels.task_labels(mortality, nodes, events, subj).query("subject_id == 1").iloc[0]
    assert s1["boolean_value"] and s1["outcome_time"] == DEATH

    clipped, _ = cohort.apply_death_policy(events, "clip")
    subj = subjects_of(clipped)
    assert subj.loc[0, "last_time"] == subj.loc[0, "death_time"] == END_OF_DAY
    s1 = labels.task_labels(surv, nodes, clipped, subj).query("subject_id == 1").iloc[0]
    assert s1["boolean_value"] and s1["outcome_time"] == pd.Timestamp("2015-07-01 10:00")
