"""Decision nodes and labels, rewritten without per-node Python loops (one search or as-of join for all nodes), give
exactly the rows of the reference implementation on seeded synthetic cohorts of both profiles: every declared task
(binary and survival; inspect's recurrent PE is blanked, its pulmonary hypertension and heart failure incident)."""

import numpy as np
import pandas as pd
import pytest

from ehr_assets.data import decision_nodes, labels
from ehr_assets.specs import DecisionNodeRule

from ..reference import cohort_v1
from ..reference.cohorts import seeded_cohort


@pytest.mark.parametrize("name", ["msk", "inspect"])
def test_nodes_equal_the_reference(name):
    c = seeded_cohort(name, 400)
    rule = c.project.cohorts[name].decision_nodes
    got = decision_nodes.find_nodes(c.events, rule)
    want = cohort_v1.find_nodes(c.events, rule)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    assert len(got) > 400  # several nodes per subject: the comparison covers the per-subject cap and context count
    for strict in (rule.model_copy(update={"min_context_events": 12}), rule.model_copy(update={"max_per_subject": 1})):
        pd.testing.assert_frame_equal(
            decision_nodes.find_nodes(c.events, strict).reset_index(drop=True),
            cohort_v1.find_nodes(c.events, strict).reset_index(drop=True),
        )


@pytest.mark.parametrize("name", ["msk", "inspect"])
def test_labels_equal_the_reference_for_every_task(name):
    c = seeded_cohort(name, 400)
    tasks = [t for t in c.project.tasks_for(name) if t.kind != "aces"]  # ACES tasks are labelled by ACES
    assert {t.kind for t in tasks} == {"binary", "survival"}
    index = labels.OutcomeIndex(c.events)
    for task in tasks:
        got = labels.task_labels(task, c.nodes, c.events, c.subjects, index)
        want = cohort_v1.task_labels(task, c.nodes, c.events, c.subjects)
        pd.testing.assert_frame_equal(got, want, obj=task.name)
        assert got["boolean_value"].any() or task.name == "pe_diagnosis", task.name


def test_the_first_outcome_is_strictly_after_the_node_plus_blanking():
    """The as-of join picks the first outcome strictly after prediction_time + blanking, per subject, never another
    subject's, on a hand-made case with ties at the boundary."""
    t = pd.to_datetime(["2020-01-01", "2020-01-11", "2020-01-12", "2020-03-01", "2020-01-05"]).astype("datetime64[us]")
    outcomes = pd.DataFrame({"subject_id": [1, 1, 1, 1, 2], "time": t}).sort_values("time")
    nodes = pd.DataFrame(
        {
            "subject_id": [1, 1, 2, 3],
            "prediction_time": pd.to_datetime(["2020-01-01", "2020-01-12", "2020-01-05", "2020-01-01"]).astype(
                "datetime64[us]"
            ),
        }
    )
    plain = labels._first_outcome_after(outcomes, nodes)  # the function under test
    assert list(plain.dt.strftime("%m-%d").fillna("-")) == ["01-11", "03-01", "-", "-"]
    blanked = labels._first_outcome_after(outcomes, nodes, blanking_days=10)
    assert list(blanked.dt.strftime("%m-%d").fillna("-")) == ["01-12", "03-01", "-", "-"]
    assert np.array_equal(plain.index, nodes.index)


def test_a_node_counts_every_event_of_its_own_time():
    """``min_context_events`` counts the events at or before the node, inclusive: rows sharing the node's time count
    even when they come after the node's row (the node row first at its time, then two more)."""
    t = pd.to_datetime(["1970-01-01", "2020-01-01", "2020-01-01", "2020-01-01", "2021-01-01"]).astype("datetime64[us]")
    events = pd.DataFrame(
        {"subject_id": [7] * 5, "time": t, "code": ["MEDS_BIRTH", "DX/C1", "LAB/A", "LAB/B", "DX/C1"]}
    )
    for need, kept in ((4, ["2020-01-01", "2021-01-01"]), (5, ["2021-01-01"]), (6, [])):
        rule = DecisionNodeRule(codes=["DX/.*"], min_context_events=need, max_per_subject=5)
        got = decision_nodes.find_nodes(events, rule)
        assert list(pd.to_datetime(got["prediction_time"]).dt.strftime("%Y-%m-%d")) == kept, need
        pd.testing.assert_frame_equal(
            got.reset_index(drop=True), cohort_v1.find_nodes(events, rule).reset_index(drop=True), check_dtype=False
        )
