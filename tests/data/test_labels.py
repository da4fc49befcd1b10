"""ehr_assets.data.labels on a hand-built cohort whose labels are known."""

import pandas as pd
import pytest

from ehr_assets.data import decision_nodes, labels
from ehr_assets.specs import DecisionNodeRule, ProbeSpec

from ..conftest import ev


def subjects_of(events):
    events = events.assign(source_cohort="msk")
    subj = pd.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"], "source_cohort": "msk"})
    g = events.groupby("subject_id")["time"]
    return subj.assign(last_time=subj["subject_id"].map(g.max()))


def cancer_nodes(tiny_events):
    rule = DecisionNodeRule(codes=[r"ICD10/C\d\d.*"], min_context_events=1)
    n = decision_nodes.find_nodes(tiny_events, rule)
    return n.assign(split=["train", "held_out"], source_cohort="msk")


def test_binary_labels_with_censoring(tiny_events):
    task = ProbeSpec(
        name="mortality", kind="binary", outcome_codes=["MEDS_DEATH"], horizons_days=[90, 180, 1000], cohorts=["msk"]
    )
    lab = labels.task_labels(task, cancer_nodes(tiny_events), tiny_events, subjects_of(tiny_events))
    got = {(r.subject_id, r.horizon_days): r.boolean_value for r in lab.itertuples()}
    # subject 1 dies 122 days after diagnosis; subject 2 is followed ~1037 days and never dies
    assert got == {(1, 90): False, (1, 180): True, (1, 1000): True, (2, 90): False, (2, 180): False, (2, 1000): False}
    assert set(labels.LABEL_COLUMNS) == set(lab.columns)
    assert (lab.loc[lab["boolean_value"], "outcome_time"] > lab.loc[lab["boolean_value"], "prediction_time"]).all()


def test_binary_label_excluded_when_followup_ends_before_horizon(tiny_events):
    task = ProbeSpec(
        name="progression", kind="binary", outcome_codes=["SNOMED/444391001"], horizons_days=[2000], cohorts=["msk"]
    )
    lab = labels.task_labels(task, cancer_nodes(tiny_events), tiny_events, subjects_of(tiny_events))
    # subject 1 progresses (event, kept); subject 2 is followed 1037 < 2000 days without it: censored, excluded
    assert list(zip(lab["subject_id"], lab["boolean_value"])) == [(1, True)]


def test_survival_labels(tiny_events):
    task = ProbeSpec(name="survival", kind="survival", outcome_codes=["MEDS_DEATH"], cohorts=["msk"])
    lab = labels.task_labels(task, cancer_nodes(tiny_events), tiny_events, subjects_of(tiny_events))
    rows = {r.subject_id: (r.boolean_value, round(float(r.float_value), 1)) for r in lab.itertuples()}
    assert rows == {1: (True, 122.0), 2: (False, 1037.0)}
    capped = labels.task_labels(
        task.model_copy(update={"max_followup_days": 100}),
        cancer_nodes(tiny_events),
        tiny_events,
        subjects_of(tiny_events),
    )
    assert {r.subject_id: (r.boolean_value, float(r.float_value)) for r in capped.itertuples()} == {
        1: (False, 100.0),
        2: (False, 100.0),
    }


def test_outcome_at_prediction_time_does_not_count():
    e = ev(
        [
            (5, "1970-01-01", "MEDS_BIRTH", None, "person"),
            (5, "2020-01-01", "X/NODE", None, "condition"),
            (5, "2020-01-01", "X/OUT", None, "condition"),
            (5, "2021-06-01", "Visit/OP", None, "observation"),
        ]
    )
    nodes = pd.DataFrame(
        {
            "subject_id": [5],
            "prediction_time": pd.to_datetime(["2020-01-01"]).astype("datetime64[us]"),
            "split": ["train"],
            "source_cohort": ["msk"],
        }
    )
    subj = pd.DataFrame({"subject_id": [5], "last_time": [pd.Timestamp("2021-06-01")]})
    task = ProbeSpec(name="t", kind="binary", outcome_codes=["X/OUT"], horizons_days=[30], cohorts=["msk"])
    lab = labels.task_labels(task, nodes, e, subj)
    assert lab["boolean_value"].tolist() == [False]


def _two_node_case():
    """Subject 7: nodes (studies) on 2020-01-01 and 2021-01-01; its diagnosis X/DX an hour after the first study
    and again on 2020-07-01; follow-up to 2023-01-01."""
    e = ev(
        [
            (7, "1960-01-01", "MEDS_BIRTH", None, "person"),
            (7, "2020-01-01 08:00", "X/STUDY", None, "procedure"),
            (7, "2020-01-01 09:00", "X/DX", None, "condition"),
            (7, "2020-07-01", "X/DX", None, "condition"),
            (7, "2021-01-01", "X/STUDY", None, "procedure"),
            (7, "2023-01-01", "Visit/OP", None, "observation"),
        ]
    )
    nodes = pd.DataFrame(
        {
            "subject_id": [7, 7],
            "prediction_time": pd.to_datetime(["2020-01-01 08:00", "2021-01-01 00:00"]).astype("datetime64[us]"),
            "split": ["train", "train"],
            "source_cohort": ["inspect", "inspect"],
        }
    )
    subj = pd.DataFrame({"subject_id": [7], "last_time": [pd.Timestamp("2023-01-01")]})
    return e, nodes, subj


def test_blanking_days_skip_the_index_episode():
    e, nodes, subj = _two_node_case()
    plain = ProbeSpec(name="t", kind="binary", outcome_codes=["X/DX"], horizons_days=[30, 365], cohorts=["inspect"])
    got = labels.task_labels(plain, nodes, e, subj)
    assert got.loc[got["prediction_time"] == nodes["prediction_time"][0], "boolean_value"].tolist() == [True, True]
    recurrent = plain.model_copy(update={"blanking_days": 7, "horizons_days": [90, 365]})
    got = labels.task_labels(recurrent, nodes, e, subj)
    first = got[got["prediction_time"] == nodes["prediction_time"][0]]
    # the diagnosis 1 hour after the study is blanked; the one ~182 days later is a recurrence
    assert dict(zip(first["horizon_days"], first["boolean_value"])) == {90: False, 365: True}
    assert (first["outcome_time"] == pd.Timestamp("2020-07-01")).all()
    surv = ProbeSpec(name="s", kind="survival", outcome_codes=["X/DX"], blanking_days=7, cohorts=["inspect"])
    got = labels.task_labels(surv, nodes, e, subj)
    assert got["boolean_value"].tolist() == [True, False]
    assert round(float(got["float_value"].iloc[0]), 2) == round(
        (pd.Timestamp("2020-07-01") - pd.Timestamp("2020-01-01 08:00")) / pd.Timedelta(days=1), 2
    )  # measured from the prediction time, not the blanking end
    with pytest.raises(ValueError, match="must exceed the blanking period"):
        ProbeSpec(name="t", kind="binary", outcome_codes=["X"], horizons_days=[7, 30], blanking_days=7, cohorts=["a"])


def test_exclude_prior_keeps_only_nodes_without_the_outcome_in_context():
    e, nodes, subj = _two_node_case()
    incident = ProbeSpec(
        name="t", kind="binary", outcome_codes=["X/DX"], horizons_days=[365], exclude_prior=True, cohorts=["inspect"]
    )
    got = labels.task_labels(incident, nodes, e, subj)
    # the second study's context holds the diagnosis: a prevalent condition, dropped
    assert got["prediction_time"].tolist() == [nodes["prediction_time"][0]] and got["boolean_value"].tolist() == [True]
    none_left = labels.task_labels(incident, nodes.iloc[[1]], e, subj)
    assert none_left.empty and list(none_left.columns) == labels.LABEL_COLUMNS
