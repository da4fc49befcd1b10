"""The delimited format (ehr_assets.text.delimited), its word-level tokenizer and node contexts on a hand-built
cohort."""

import pandas as pd

from ehr_assets.text import contexts, delimited, sequence_tables, tokenizers

from ..conftest import ev
from ..data.test_labels import cancer_nodes


def test_serialize_subject_layout(tiny_events):
    edges = {"LOINC/718-7": [12.0, 12.8, 13.5, 14.5]}
    s = sequence_tables.serialize_subject(tiny_events[tiny_events.subject_id == 1], edges)
    words = s.text.split()
    assert words[:4] == ["<bos>", "<demographics>", "GENDER/F", "<age:55-59>"]
    assert s.text.split("<dt:0d>", 1)[1].split()[:5] == [
        "<observations>",
        "Visit/OP",
        "<measurements>",
        "LOINC/718-7",
        "<q2>",
    ]
    assert "<dt:1-3m> <conditions> ICD10/C34.90 <drugs> RXNORM/40048" in s.text
    assert "<death> MEDS_DEATH" in s.text
    assert len(s.block_times) == len(s.block_ends) == 5  # demographics + 4 event times
    assert s.block_ends[-1] == len(words)
    assert "MEDS_BIRTH" not in s.text


def test_gap_and_age_tokens():
    assert delimited.gap_token(0.5) == "<dt:0d>" and delimited.gap_token(45) == "<dt:1-3m>"
    assert delimited.gap_token(5000) == "<dt:2y+>" and delimited.age_token(101) == "<age:100+>"
    assert delimited.bin_token("X", 1.0, {"X": [0.0, 1.0, 2.0, 3.0]}) == "<q3>"


def test_tokenizer_roundtrip_offline(tmp_path, tiny_events):
    subj = pd.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"]})
    fast, edges = tokenizers.tokenizer_from_events(tiny_events, subj)
    tokenizers.save_tokenizer(fast, edges, tmp_path)
    again, edges2 = tokenizers.load_tokenizer(tmp_path)
    assert edges2 == edges and len(again) == len(fast)
    assert again.convert_tokens_to_ids(["<pad>", "<mask>"]) == [0, 4]
    ser = sequence_tables.serialize_cohort(tiny_events, edges)
    ids = tokenizers.encode_words(again, ser["text"].tolist())
    assert [len(x) for x in ids] == [len(t.split()) for t in ser["text"]]
    # a code seen only in the held_out subject is unknown to the train vocabulary
    held = ser.loc[ser.subject_id == 2, "text"].iloc[0].split()
    assert ids[1][held.index("ICD10/C18.9")] == again.unk_token_id
    assert again.decode(ids[0]).split()[:2] == ["<bos>", "<demographics>"]


def test_node_contexts_and_leakage_detection(tiny_events):
    edges = {}
    ser = sequence_tables.serialize_cohort(tiny_events, edges)
    ser["n_tokens"] = [len(t.split()) for t in ser["text"]]
    nodes = cancer_nodes(tiny_events)
    ctx = contexts.node_contexts(ser, nodes)
    for r in ctx.itertuples():
        text = ser.set_index("subject_id").at[r.subject_id, "text"].split()[: r.context_end]
        assert text[-1] in ("ICD10/C34.90", "RXNORM/40048", "ICD10/C18.9")
        assert r.context_last_time <= r.prediction_time
    assert contexts.context_violations(ctx, ser).empty
    leaky = ctx.copy()
    leaky.loc[0, "context_end"] = leaky.loc[0, "n_tokens"]  # reads the whole timeline
    assert len(contexts.context_violations(leaky, ser)) == 1


def test_a_person_row_recorded_after_a_node_stays_out_of_its_context(tiny_events):
    """A demographic recorded years later (e.g. ethnicity entered in 2019) is an event of its own time: the 2015
    node's context must not read it, and the leakage check agrees."""
    late = ev([(1, "2015-06-15", "ETHNICITY/HISPANIC", None, "person")])
    events = pd.concat([tiny_events, late], ignore_index=True).sort_values(["subject_id", "time"], kind="stable")
    ser = sequence_tables.serialize_cohort(events, {})
    ser["n_tokens"] = [len(t.split()) for t in ser["text"]]
    words = ser.set_index("subject_id").at[1, "text"].split()
    assert "ETHNICITY/HISPANIC" in words and "GENDER/F" in words[: words.index("<dt:0d>")]  # demographics block
    assert words.index("ETHNICITY/HISPANIC") > words.index("SNOMED/444391001")  # placed at its own time (June)
    ctx = contexts.node_contexts(ser, cancer_nodes(events))
    for r in ctx[ctx["subject_id"] == 1].itertuples():
        assert "ETHNICITY/HISPANIC" not in words[: r.context_end]
    assert contexts.context_violations(ctx, ser).empty
