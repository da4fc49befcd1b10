"""Decision-node contexts (ehr_assets.text.contexts): the vectorized contexts and leakage check against the
per-node reference, and the cropping rule every reader shares (equal inputs: header, then the most recent tokens)."""

import numpy as np
import pandas as pd
import pytest

from ehr_assets.model.batches import make_jepa_batch
from ehr_assets.specs import Jepa
from ehr_assets.text import contexts, delimited, sequence_tables, timelines, tokenizers
from ehr_assets.text.contexts import crop_context

from ..reference import contexts_v1
from ..reference.cohorts import seeded_cohort


def serialized(name: str, n: int = 300):
    """(cohort, its token_sequences-like table with the age at each node, the word-level tokenizer)."""
    c = seeded_cohort(name, n)
    fast, edges = tokenizers.tokenizer_from_events(c.events, c.subjects)
    tl = timelines.build_timelines(c.events, edges, c.nodes)
    return c, sequence_tables.sequence_table(tl, fast.get_vocab(), fast.unk_token_id), fast


def test_crop_keeps_the_header_then_the_most_recent_tokens():
    ids = np.arange(100)
    np.testing.assert_array_equal(crop_context(ids, 40, 64, 5), ids[:40])  # fits: the whole context
    np.testing.assert_array_equal(crop_context(ids, 64, 64, 5), ids[:64])
    got = crop_context(ids, 90, 20, 5)
    np.testing.assert_array_equal(got, np.r_[ids[:5], ids[75:90]])  # header, then the last 15 before the node
    np.testing.assert_array_equal(crop_context(ids, 90, 20, 50), np.r_[ids[:10], ids[80:90]])  # header <= half
    np.testing.assert_array_equal(crop_context(ids, 90, 20, 0), ids[70:90])  # no header: the last tokens


@pytest.mark.parametrize("name", ["msk", "inspect"])
def test_node_contexts_equal_the_reference(name):
    c, seq, _ = serialized(name)
    got = contexts.node_contexts(seq, c.nodes)
    ref = contexts_v1.node_contexts(seq, c.nodes)
    pd.testing.assert_frame_equal(got.drop(columns="header_end"), ref)
    assert (
        got["header_end"].to_numpy() == [e[0] for e in seq.set_index("subject_id").loc[got["subject_id"], "block_ends"]]
    ).all()


def test_the_leakage_check_flags_exactly_the_rows_the_reference_flags():
    c, seq, _ = serialized("msk")
    ctx = contexts.node_contexts(seq, c.nodes)
    assert contexts.context_violations(ctx, seq).empty and contexts_v1.context_violations(ctx, seq).empty
    rng = np.random.default_rng(0)
    bad = ctx.copy()
    rows = rng.choice(len(bad), 40, replace=False)
    bad.loc[rows[:15], "context_end"] += rng.integers(1, 30, 15)  # reads into later blocks (or not: a short step)
    bad.loc[rows[15:25], "context_end"] = bad.loc[rows[15:25], "n_tokens"]  # reads the whole timeline
    bad.loc[rows[25:], "context_last_time"] += pd.Timedelta(days=1)  # claims a later block
    got = contexts.context_violations(bad, seq).index
    want = contexts_v1.context_violations(bad, seq).index
    assert list(got) == list(want) and 25 <= len(got) <= 40


def test_a_subject_without_a_sequence_is_a_violation_and_an_error():
    c, seq, _ = serialized("inspect")
    ctx = contexts.node_contexts(seq, c.nodes)
    lost = int(ctx["subject_id"].iloc[0])
    assert set(contexts.context_violations(ctx, seq[seq["subject_id"] != lost])["subject_id"]) == {lost}
    with pytest.raises(KeyError, match=str(lost)):
        contexts.node_contexts(seq[seq["subject_id"] != lost], c.nodes)


def test_cropped_contexts_keep_sex_and_the_age_at_the_node():
    """Equal inputs: at a 64-token window (msk contexts are longer), the model's context still starts with the
    subject's header (sex, age) and holds the age at the node; cropping from the left alone lost both."""
    c, seq, fast = serialized("msk")
    ctx = contexts.node_contexts(seq, c.nodes)
    ids = dict(zip(seq["subject_id"], seq["input_ids"]))
    vocab = fast.get_vocab()
    demo, sexes = vocab["<demographics>"], {vocab[w] for w in vocab if w.startswith("GENDER/")}
    long = ctx[ctx["context_end"] > 64]
    assert len(long) > 0.2 * len(ctx)
    births = c.events[c.events["code"] == "MEDS_BIRTH"].groupby("subject_id")["time"].min()
    before = after = 0
    for r in long.itertuples():
        full = np.asarray(ids[r.subject_id])
        old = full[r.context_end - 64 : r.context_end]  # what the window read before (the last 64 tokens)
        new = crop_context(full, r.context_end, 64, r.header_end)
        assert len(new) == 64 and new[-1] == full[r.context_end - 1]
        np.testing.assert_array_equal(new[: r.header_end], full[: r.header_end])
        age = delimited.age_token((r.prediction_time - births[r.subject_id]) / pd.Timedelta(days=1) / 365.25)
        before += demo in old and bool(sexes & set(old.tolist())) and vocab[age] in old
        after += demo in new and bool(sexes & set(new.tolist())) and vocab[age] in new
    assert after == len(long) and before < 0.1 * len(long)


def test_jepa_examples_are_cropped_by_the_same_rule():
    c, seq, _ = serialized("msk")
    ctx = contexts.node_contexts(seq, c.nodes)
    ids = dict(zip(seq["subject_id"], seq["input_ids"]))
    rows = ctx[(ctx["context_end"] > 40) & (ctx["n_tokens"] > ctx["context_end"] + 20)].head(8)
    examples = [(np.asarray(ids[r.subject_id], np.int64), r.context_end, r.header_end) for r in rows.itertuples()]
    batch = make_jepa_batch(examples, 48, Jepa(mask_ratio=0.5), 4, 0, np.random.default_rng(0))
    for i, (full, b, h) in enumerate(examples):
        C, F = int(batch.context_len[i]), int(batch.future_len[i])
        np.testing.assert_array_equal(batch.input_ids[i, :C], crop_context(full, b, 48 - F, h))
        np.testing.assert_array_equal(batch.input_ids[i, C : C + F], full[b : b + F])
        np.testing.assert_array_equal(batch.input_ids[i, :h], full[:h])  # the header survives the crop
