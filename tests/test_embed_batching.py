"""How the embedding pass batches (ehr_assets.embed): contexts that are prefixes of others are read off the longer
one's forward pass, batches hold a token budget, padding goes without a mask -- and every row still equals a plain
forward of its context alone, for both poolings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ehr_assets.embed import embed, load_encoder, shared_prefixes, token_batches
from ehr_assets.specs import RecipeSpec
from ehr_assets.train import TrainData, train

V, PAD, BOS, EOS, MASK = 40, 0, 1, 2, 3


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    rng = np.random.default_rng(0)
    seqs = [np.concatenate([[BOS], rng.integers(4, V, size=30)]).astype(np.int64) for _ in range(6)]
    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}
    r = RecipeSpec.model_validate(
        {
            "name": "emb",
            "backbone": {"architecture": "llama", "config": {**tiny, "intermediate_size": 64}},
            "objective": "sft",
            "lora": {"rank": 4, "alpha": 8},
            "optimizer": {"lr": 1e-2, "warmup_steps": 0},
            "training": {"steps": 2, "batch_size": 2, "seq_len": 32, "log_every": 1, "monitor_nodes": 0},
        }
    )
    out = tmp_path_factory.mktemp("emb") / "ck"
    train(r, TrainData(seqs, [], V, PAD, MASK, BOS, EOS), out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def nested():
    """Decision-node contexts as the pipeline makes them: prefixes of a few timelines (several per subject, some
    repeated), plus contexts that are no one's prefix (cropped windows)."""
    rng = np.random.default_rng(3)
    timelines = [np.concatenate([[BOS], rng.integers(4, V, size=n)]).astype(np.int64) for n in (29, 17, 24)]
    ctxs = [t[:e] for t in timelines for e in sorted(rng.choice(np.arange(1, len(t) + 1), 4, replace=False))]
    ctxs += [timelines[0][5:20], timelines[1][:9].copy(), timelines[2][3:]]  # a window, a duplicate, a suffix
    order = rng.permutation(len(ctxs))
    return [ctxs[i] for i in order]


def is_prefix(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) <= len(b) and np.array_equal(b[: len(a)], a)


def test_shared_prefixes_against_the_definition(nested):
    ctxs = nested + [np.array([5]), np.array([5, 6]), np.array([50, 1]), np.array([5, 6])]
    root = shared_prefixes(ctxs)
    for i, r in enumerate(root):
        assert is_prefix(ctxs[i], ctxs[r])  # i is read off r's pass
        assert root[r] == r  # a root reads its own pass
    # the roots are exactly the contexts that are a proper prefix of nothing, one per distinct content
    distinct = {c.tobytes(): c for c in ctxs}
    longest = [c for c in distinct.values() if not any(len(c) < len(d) and is_prefix(c, d) for d in distinct.values())]
    assert sorted(ctxs[r].tobytes() for r in set(root.tolist())) == sorted(c.tobytes() for c in longest)
    assert len(set(root.tolist())) < len(ctxs)


def test_token_batches_keep_the_budget_and_every_index():
    lengths = np.array([256, 3, 40, 256, 7, 120, 1, 64, 64, 9])
    batches = token_batches(lengths, batch_size=2)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first
    for b in batches:
        assert len(b) * lengths[b].max() <= 2 * 256  # padded tokens within batch_size x the longest length
    assert len(batches[0]) == 2 and len(batches[-1]) > 2  # short contexts go many to a batch
    assert token_batches(np.array([], dtype=int), 4) == []


def plain(model, ctx: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ctx)[None], output_hidden_states=True).hidden_states[-1][0].numpy()


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_every_row_equals_a_plain_forward_of_its_context(ckpt, nested, pool):
    model, _ = load_encoder(ckpt)
    lines: list[str] = []
    emb = embed(ckpt, nested, pool=pool, batch_size=3, pad_id=PAD, log=lines.append)
    for c, e in zip(nested, emb):
        h = plain(model, c)
        np.testing.assert_allclose(e, h[-1] if pool == "last" else h.mean(0), atol=1e-5, rtol=0)
    # shared prefixes: only the longest context of each chain went through the model
    roots = set(shared_prefixes(nested).tolist())
    through = sum(len(nested[r]) for r in roots)
    assert through < sum(len(c) for c in nested)
    assert lines[-1].startswith(f"embedding: {through:,}/{through:,} tokens (100 %)")
    assert f"| {len(nested)}/{len(nested)} contexts" in lines[-1]
    assert f"; {sum(len(c) for c in nested):,} context tokens (prefixes shared)" in lines[-1]


def test_rows_do_not_depend_on_batch_size_or_order(ckpt, nested):
    ref = embed(ckpt, nested, batch_size=1)
    for bs, perm in itertools.product((2, 64), (False, True)):
        order = np.random.default_rng(bs).permutation(len(nested)) if perm else np.arange(len(nested))
        got = embed(ckpt, [nested[i] for i in order], batch_size=bs)
        np.testing.assert_allclose(got, ref[order], atol=1e-5, rtol=0)


def test_threads_apply_to_the_pass_only(ckpt, nested):
    before = torch.get_num_threads()
    lines: list[str] = []
    embed(ckpt, nested[:3], threads=1, log=lines.append)
    assert "contexts, 1 thread;" in lines[-1]
    assert torch.get_num_threads() == before
