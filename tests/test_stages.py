"""Unit tests of the data stages on a hand-built cohort whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from ehr_assets import cohort, decision_nodes, labels, sequences
from ehr_assets.specs import DecisionNodeRule, ProbeSpec

from .conftest import ev


def subjects_of(events):
    events = events.assign(source_cohort="msk")
    subj = pd.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"], "source_cohort": "msk"})
    g = events.groupby("subject_id")["time"]
    return subj.assign(last_time=subj["subject_id"].map(g.max()))


# ------------------------------------------------------------------------------------------------------ cohort
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


# ------------------------------------------------------------------------------------------------ decision nodes
def test_find_nodes_rule_context_and_death(tiny_events):
    rule = DecisionNodeRule(codes=[r"ICD10/C\d\d.*", "SNOMED/444391001"], max_per_subject=3, min_context_events=3)
    nodes = decision_nodes.find_nodes(tiny_events, rule)
    got = list(zip(nodes["subject_id"], nodes["prediction_time"].dt.strftime("%Y-%m-%d"), nodes["node_code"]))
    assert got == [
        (1, "2015-03-01", "ICD10/C34.90"),
        (1, "2015-06-01", "SNOMED/444391001"),
        (2, "2015-03-01", "ICD10/C18.9"),
    ]
    one = decision_nodes.find_nodes(tiny_events, rule.model_copy(update={"max_per_subject": 1}))
    assert len(one) == 2
    strict = decision_nodes.find_nodes(tiny_events, rule.model_copy(update={"min_context_events": 7}))
    assert list(strict["node_code"]) == ["SNOMED/444391001"]  # 6 events at/before diagnosis, 7 at progression


# -------------------------------------------------------------------------------------------------------- labels
def _nodes(tiny_events):
    rule = DecisionNodeRule(codes=[r"ICD10/C\d\d.*"], min_context_events=1)
    n = decision_nodes.find_nodes(tiny_events, rule)
    return n.assign(split=["train", "held_out"], source_cohort="msk")


def test_binary_labels_with_censoring(tiny_events):
    task = ProbeSpec(name="mortality", kind="binary", outcome_codes=["MEDS_DEATH"], horizons_days=[90, 180, 1000],
                     cohorts=["msk"])
    lab = labels.task_labels(task, _nodes(tiny_events), tiny_events, subjects_of(tiny_events))
    got = {(r.subject_id, r.horizon_days): r.boolean_value for r in lab.itertuples()}
    # subject 1 dies 122 days after diagnosis; subject 2 is followed ~1037 days and never dies
    assert got == {(1, 90): False, (1, 180): True, (1, 1000): True, (2, 90): False, (2, 180): False, (2, 1000): False}
    assert set(labels.LABEL_COLUMNS) == set(lab.columns)
    assert (lab.loc[lab["boolean_value"], "outcome_time"] > lab.loc[lab["boolean_value"], "prediction_time"]).all()


def test_binary_label_excluded_when_followup_ends_before_horizon(tiny_events):
    task = ProbeSpec(name="progression", kind="binary", outcome_codes=["SNOMED/444391001"], horizons_days=[2000],
                     cohorts=["msk"])
    lab = labels.task_labels(task, _nodes(tiny_events), tiny_events, subjects_of(tiny_events))
    # subject 1 progresses (event, kept); subject 2 is followed 1037 < 2000 days without it: censored, excluded
    assert list(zip(lab["subject_id"], lab["boolean_value"])) == [(1, True)]


def test_survival_labels(tiny_events):
    task = ProbeSpec(name="survival", kind="survival", outcome_codes=["MEDS_DEATH"], cohorts=["msk"])
    lab = labels.task_labels(task, _nodes(tiny_events), tiny_events, subjects_of(tiny_events))
    rows = {r.subject_id: (r.boolean_value, round(float(r.float_value), 1)) for r in lab.itertuples()}
    assert rows == {1: (True, 122.0), 2: (False, 1037.0)}
    capped = labels.task_labels(task.model_copy(update={"max_followup_days": 100}), _nodes(tiny_events), tiny_events,
                                subjects_of(tiny_events))
    assert {r.subject_id: (r.boolean_value, float(r.float_value)) for r in capped.itertuples()} == {
        1: (False, 100.0), 2: (False, 100.0)}


def test_outcome_at_prediction_time_does_not_count():
    e = ev([(5, "1970-01-01", "MEDS_BIRTH", None, "person"), (5, "2020-01-01", "X/NODE", None, "condition"),
            (5, "2020-01-01", "X/OUT", None, "condition"), (5, "2021-06-01", "Visit/OP", None, "observation")])
    nodes = pd.DataFrame({"subject_id": [5], "prediction_time": pd.to_datetime(["2020-01-01"]).astype("datetime64[us]"),
                          "split": ["train"], "source_cohort": ["msk"]})
    subj = pd.DataFrame({"subject_id": [5], "last_time": [pd.Timestamp("2021-06-01")]})
    task = ProbeSpec(name="t", kind="binary", outcome_codes=["X/OUT"], horizons_days=[30], cohorts=["msk"])
    lab = labels.task_labels(task, nodes, e, subj)
    assert lab["boolean_value"].tolist() == [False]


def _two_node_case():
    """Subject 7: nodes (studies) on 2020-01-01 and 2021-01-01; its diagnosis X/DX an hour after the first study
    and again on 2020-07-01; follow-up to 2023-01-01."""
    e = ev([(7, "1960-01-01", "MEDS_BIRTH", None, "person"),
            (7, "2020-01-01 08:00", "X/STUDY", None, "procedure"), (7, "2020-01-01 09:00", "X/DX", None, "condition"),
            (7, "2020-07-01", "X/DX", None, "condition"),
            (7, "2021-01-01", "X/STUDY", None, "procedure"), (7, "2023-01-01", "Visit/OP", None, "observation")])
    nodes = pd.DataFrame({"subject_id": [7, 7],
                          "prediction_time": pd.to_datetime(["2020-01-01 08:00", "2021-01-01 00:00"]).astype("datetime64[us]"),
                          "split": ["train", "train"], "source_cohort": ["inspect", "inspect"]})
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
    assert round(float(got["float_value"].iloc[0]), 2) == round((pd.Timestamp("2020-07-01") - pd.Timestamp(
        "2020-01-01 08:00")) / pd.Timedelta(days=1), 2)  # measured from the prediction time, not the blanking end
    with pytest.raises(ValueError, match="must exceed the blanking period"):
        ProbeSpec(name="t", kind="binary", outcome_codes=["X"], horizons_days=[7, 30], blanking_days=7, cohorts=["a"])


def test_exclude_prior_keeps_only_nodes_without_the_outcome_in_context():
    e, nodes, subj = _two_node_case()
    incident = ProbeSpec(name="t", kind="binary", outcome_codes=["X/DX"], horizons_days=[365], exclude_prior=True,
                         cohorts=["inspect"])
    got = labels.task_labels(incident, nodes, e, subj)
    # the second study's context holds the diagnosis: a prevalent condition, dropped
    assert got["prediction_time"].tolist() == [nodes["prediction_time"][0]] and got["boolean_value"].tolist() == [True]
    none_left = labels.task_labels(incident, nodes.iloc[[1]], e, subj)
    assert none_left.empty and list(none_left.columns) == labels.LABEL_COLUMNS


# ----------------------------------------------------------------------------------------------------- sequences
def test_serialize_subject_layout(tiny_events):
    edges = {"LOINC/718-7": [12.0, 12.8, 13.5, 14.5]}
    s = sequences.serialize_subject(tiny_events[tiny_events.subject_id == 1], edges)
    words = s.text.split()
    assert words[:4] == ["<bos>", "<demographics>", "GENDER/F", "<age:55-59>"]
    assert s.text.split("<dt:0d>", 1)[1].split()[:5] == ["<observations>", "Visit/OP", "<measurements>", "LOINC/718-7", "<q2>"]
    assert "<dt:1-3m> <conditions> ICD10/C34.90 <drugs> RXNORM/40048" in s.text
    assert "<death> MEDS_DEATH" in s.text
    assert len(s.block_times) == len(s.block_ends) == 5  # demographics + 4 event times
    assert s.block_ends[-1] == len(words)
    assert "MEDS_BIRTH" not in s.text


def test_gap_and_age_tokens():
    assert sequences.gap_token(0.5) == "<dt:0d>" and sequences.gap_token(45) == "<dt:1-3m>"
    assert sequences.gap_token(5000) == "<dt:2y+>" and sequences.age_token(101) == "<age:100+>"
    assert sequences.bin_token("X", 1.0, {"X": [0.0, 1.0, 2.0, 3.0]}) == "<q3>"


def test_tokenizer_roundtrip_offline(tmp_path, tiny_events):
    subj = pd.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"]})
    fast, edges = sequences.tokenizer_from_events(tiny_events, subj)
    sequences.save_tokenizer(fast, edges, tmp_path)
    again, edges2 = sequences.load_tokenizer(tmp_path)
    assert edges2 == edges and len(again) == len(fast)
    assert again.convert_tokens_to_ids(["<pad>", "<mask>"]) == [0, 4]
    ser = sequences.serialize_cohort(tiny_events, edges)
    ids = sequences.encode(again, ser["text"].tolist())
    assert [len(x) for x in ids] == [len(t.split()) for t in ser["text"]]
    # a code seen only in the held_out subject is unknown to the train vocabulary
    held = ser.loc[ser.subject_id == 2, "text"].iloc[0].split()
    assert ids[1][held.index("ICD10/C18.9")] == again.unk_token_id
    assert again.decode(ids[0]).split()[:2] == ["<bos>", "<demographics>"]


def test_node_contexts_and_leakage_detection(tiny_events):
    edges = {}
    ser = sequences.serialize_cohort(tiny_events, edges)
    ser["n_tokens"] = [len(t.split()) for t in ser["text"]]
    nodes = _nodes(tiny_events)
    ctx = sequences.node_contexts(ser, nodes)
    for r in ctx.itertuples():
        text = ser.set_index("subject_id").at[r.subject_id, "text"].split()[: r.context_end]
        assert text[-1] in ("ICD10/C34.90", "RXNORM/40048", "ICD10/C18.9")
        assert r.context_last_time <= r.prediction_time
    assert sequences.context_violations(ctx, ser).empty
    leaky = ctx.copy()
    leaky.loc[0, "context_end"] = leaky.loc[0, "n_tokens"]  # reads the whole timeline
    assert len(sequences.context_violations(leaky, ser)) == 1


def test_a_person_row_recorded_after_a_node_stays_out_of_its_context(tiny_events):
    """A demographic recorded years later (e.g. ethnicity entered in 2019) is an event of its own time: the 2015
    node's context must not read it, and the leakage check agrees."""
    late = ev([(1, "2015-06-15", "ETHNICITY/HISPANIC", None, "person")])
    events = pd.concat([tiny_events, late], ignore_index=True).sort_values(["subject_id", "time"], kind="stable")
    ser = sequences.serialize_cohort(events, {})
    ser["n_tokens"] = [len(t.split()) for t in ser["text"]]
    words = ser.set_index("subject_id").at[1, "text"].split()
    assert "ETHNICITY/HISPANIC" in words and "GENDER/F" in words[: words.index("<dt:0d>")]  # demographics block
    assert words.index("ETHNICITY/HISPANIC") > words.index("SNOMED/444391001")  # placed at its own time (June)
    ctx = sequences.node_contexts(ser, _nodes(events))
    for r in ctx[ctx["subject_id"] == 1].itertuples():
        assert "ETHNICITY/HISPANIC" not in words[: r.context_end]
    assert sequences.context_violations(ctx, ser).empty
