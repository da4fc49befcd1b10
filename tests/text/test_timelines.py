"""The columnar delimited serializer (ehr_assets.text.timelines) against the per-event reference it replaced, on
seeded synthetic cohorts of both profiles; the age at the node; and the token_sequences table it writes."""

import numpy as np
import pandas as pd
import pytest
from meds import birth_code, train_split

from ehr_assets.constants import DAYS_PER_YEAR
from ehr_assets.text import delimited, sequence_tables, timelines, tokenizers

from ..conftest import ev
from ..reference import delimited_v1
from ..reference.cohorts import seeded_cohort

COHORTS = [("msk", 300), ("inspect", 300)]


def fitted(c):
    """The train split's bins and word-level tokenizer of a seeded cohort (the tokenizer asset's work)."""
    fast, edges = tokenizers.tokenizer_from_events(c.events, c.subjects)
    return fast, edges


def with_rare_rows(c) -> pd.DataFrame:
    """The cohort's events plus rows only a held-out subject has (an unknown code, a text value with spaces, a row
    without a table), placed at its last event time, so unknown words and text tokens are exercised."""
    sid = int(c.subjects.loc[c.subjects["split"] == "held_out", "subject_id"].iloc[0])
    t = c.events.loc[c.events["subject_id"] == sid, "time"].max()
    extra = ev([(sid, t, "X/ONLY HELD OUT", 4.0, "lab", "mg", "free text  here"), (sid, t, "Y/NO_TABLE", None, None)])
    extra["source_cohort"] = c.name
    out = pd.concat([c.events, extra], ignore_index=True)
    return out.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("name,n", COHORTS)
def test_the_columnar_serializer_writes_the_reference_words_blocks_and_ids(name, n):
    c = seeded_cohort(name, n)
    fast, edges = fitted(c)
    events = with_rare_rows(c)
    ref = delimited_v1.serialize_cohort(events, edges)
    tl = timelines.build_timelines(events, edges)
    assert list(tl.subject_ids) == list(ref["subject_id"])
    assert tl.texts() == ref["text"].tolist()
    times, ends = tl.split_blocks()
    for i in range(len(ref)):
        assert ends[i].tolist() == ref["block_ends"][i]
        np.testing.assert_array_equal(times[i], np.asarray(ref["block_times"][i], dtype="datetime64[us]"))
    # token ids by one lookup equal the Hugging Face tokenizer run on the reference texts
    expected = np.concatenate(tokenizers.encode_words(fast, ref["text"].tolist()))
    np.testing.assert_array_equal(tl.token_ids(fast.get_vocab(), fast.unk_token_id), expected)
    assert (expected == fast.unk_token_id).any()  # held-out codes unknown to the train vocabulary are covered


@pytest.mark.parametrize("name,n", COHORTS)
def test_the_vocabulary_is_counted_without_serializing(name, n):
    c = seeded_cohort(name, n)
    train = c.events[c.events["subject_id"].isin(c.subjects.loc[c.subjects["split"] == train_split, "subject_id"])]
    texts = delimited_v1.serialize_cohort(train, delimited.value_bin_edges(train))["text"].tolist()
    counts = timelines.vocabulary_counts(train)
    for min_count in (1, 3):
        assert tokenizers.build_vocab(counts, min_count) == delimited_v1.build_vocab(texts, min_count)


def test_row_order_between_subjects_and_times_does_not_matter():
    c = seeded_cohort("msk", 300)
    edges = delimited.value_bin_edges(c.events)
    # subjects in reverse order, each subject's times reversed; rows of one time keep their order (it is meaningful)
    shuffled = c.events.assign(_t=-c.events["time"].astype("int64")).sort_values(
        ["subject_id", "_t"], ascending=[False, True], kind="stable"
    )
    a = timelines.build_timelines(c.events, edges)
    b = timelines.build_timelines(shuffled.drop(columns="_t"), edges)
    assert a.texts() == b.texts()  # word ids index each input's own word table; the words are what must agree
    np.testing.assert_array_equal(a.block_ends, b.block_ends)
    np.testing.assert_array_equal(a.block_times, b.block_times)


def age_at(events: pd.DataFrame, subject: int, t) -> str:
    """The age token of ``subject`` at time ``t``, computed here from its birth row."""
    birth = events.loc[(events["subject_id"] == subject) & (events["code"] == birth_code), "time"].min()
    return delimited.age_token((pd.Timestamp(t) - birth) / pd.Timedelta(days=1) / DAYS_PER_YEAR)


@pytest.mark.parametrize("name,n", COHORTS)
def test_every_node_context_ends_in_a_block_that_states_the_age_at_the_node(name, n):
    c = seeded_cohort(name, 200)
    edges = delimited.value_bin_edges(c.events)
    plain = sequence_tables.serialize_cohort(c.events, edges).set_index("subject_id")
    aged = sequence_tables.serialize_cohort(c.events, edges, c.nodes).set_index("subject_id")
    for r in c.nodes.itertuples():
        words = aged.at[r.subject_id, "text"].split()
        times = np.asarray(aged.at[r.subject_id, "block_times"], dtype="datetime64[us]")
        k = int(np.searchsorted(times, np.datetime64(r.prediction_time, "us"), side="right"))
        start, end = aged.at[r.subject_id, "block_ends"][k - 2], aged.at[r.subject_id, "block_ends"][k - 1]
        block = words[start:end]  # the node's own block: gap token, age token, its events
        assert block[0].startswith("<dt:") and block[1] == age_at(c.events, r.subject_id, r.prediction_time)
    # nothing else changes: without the node blocks' age tokens the text is the one without nodes
    for sid in aged.index:
        words = aged.at[sid, "text"].split()
        stripped = [
            w for i, w in enumerate(words) if not (i and w.startswith("<age:") and words[i - 1].startswith("<dt:"))
        ]
        assert stripped == plain.at[sid, "text"].split()
    n_nodes = c.nodes.groupby("subject_id").size()
    added = aged["text"].str.split().str.len() - plain["text"].str.split().str.len()
    assert (added.reindex(n_nodes.index) == n_nodes).all()  # one age token per node (each node has its own block)


def test_no_birth_no_age_and_a_node_in_the_header_adds_nothing():
    events = ev(
        [
            (7, "2015-01-01", "GENDER/F", None, "person"),
            (7, "2015-01-01", "Visit/OP", None, "observation", None, "first visit"),
            (7, "2016-01-01", "ICD10/C34.90", None, "condition"),
            (8, "1950-01-01", "MEDS_BIRTH", None, "person"),
            (8, "1950-01-01", "GENDER/M", None, "person"),
            (8, "2014-06-01", "LOINC/718-7", 13.0, "lab"),
        ]
    )
    nodes = pd.DataFrame(
        {"subject_id": [7, 8], "prediction_time": pd.to_datetime(["2016-01-01", "1960-01-01"]).astype("datetime64[us]")}
    )
    ser = sequence_tables.serialize_cohort(events, {}, nodes).set_index("subject_id")
    assert ser.at[7, "text"] == (
        "<bos> <demographics> GENDER/F <dt:0d> <observations> Visit/OP <txt:first_visit> <dt:1-2y> <conditions> "
        "ICD10/C34.90"
    )  # no birth: no age token at all
    assert ser.at[8, "text"] == "<bos> <demographics> GENDER/M <age:60-64> <dt:0d> <measurements> LOINC/718-7 <q3>"


def test_the_sequence_table_holds_ids_blocks_and_unknown_counts():
    c = seeded_cohort("inspect", 300)
    fast, edges = fitted(c)
    tl = timelines.build_timelines(with_rare_rows(c), edges, c.nodes)
    table = sequence_tables.sequence_table(tl, fast.get_vocab(), fast.unk_token_id)
    ids = tokenizers.encode_words(fast, table["text"].tolist())
    for i, row in enumerate(table.itertuples()):
        np.testing.assert_array_equal(np.asarray(row.input_ids), ids[i])
        assert row.n_tokens == len(ids[i]) == row.block_ends[-1]
        assert row.n_unk == int((ids[i] == fast.unk_token_id).sum())
    assert table["n_unk"].sum() > 0
