"""ehr_assets.embed: reload, pooling against a plain forward, batch/padding invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehr_assets.embed import embed, load_encoder
from ehr_assets.specs import RecipeSpec
from ehr_assets.train import TrainData, train

V, PAD, BOS, EOS, MASK = 40, 0, 1, 2, 3
H = 32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    rng = np.random.default_rng(0)
    seqs = [
        np.concatenate([[BOS], rng.integers(4, V, size=int(rng.integers(10, 40))), [EOS]]).astype(np.int64)
        for _ in range(8)
    ]
    data = TrainData(seqs, [(s, len(s) // 2) for s in seqs], V, PAD, MASK, BOS, EOS)
    r = RecipeSpec.model_validate(
        {
            "name": "hyb",
            "backbone": {
                "architecture": "qwen3",
                "config": {
                    "hidden_size": H,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "num_key_value_heads": 1,
                    "intermediate_size": 64,
                },
            },
            "objective": "hybrid",
            "lora": {"rank": 4, "alpha": 8},
            "optimizer": {"lr": 1e-2, "warmup_steps": 0},
            "training": {"steps": 3, "batch_size": 4, "seq_len": 32, "log_every": 1},
        }
    )
    out = tmp_path_factory.mktemp("emb") / "ck"
    train(r, data, out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def contexts():
    rng = np.random.default_rng(5)
    return [np.concatenate([[BOS], rng.integers(4, V, size=n)]).astype(np.int64) for n in (1, 9, 30, 4, 17, 22, 9)]


def _plain_hidden(model, ctx):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ctx)[None], output_hidden_states=True)
    return out.hidden_states[-1][0].numpy()


def test_reload_gives_identical_embeddings(ckpt, contexts):
    a = embed(ckpt, contexts, batch_size=3)
    b = embed(ckpt, contexts, batch_size=3)
    assert a.dtype == np.float32 and a.shape == (len(contexts), H)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert np.isfinite(a).all() and a.std(0).min() > 0


def test_last_pool_matches_plain_forward(ckpt, contexts):
    model, rec = load_encoder(ckpt)
    assert rec["name"] == "hyb" and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    emb = embed(ckpt, contexts, pool="last", batch_size=4, pad_id=PAD)
    for i, c in enumerate(contexts):
        np.testing.assert_allclose(emb[i], _plain_hidden(model, c)[-1], atol=1e-5, rtol=0)


def test_mean_pool(ckpt, contexts):
    model, _ = load_encoder(ckpt)
    emb = embed(ckpt, contexts, pool="mean", batch_size=4)
    assert emb.shape == (len(contexts), H) and emb.dtype == np.float32
    for i, c in enumerate(contexts):
        np.testing.assert_allclose(emb[i], _plain_hidden(model, c).mean(0), atol=1e-5, rtol=0)


def test_batching_and_order_do_not_change_rows(ckpt, contexts):
    logs = []
    ref = embed(ckpt, contexts, batch_size=1, log=logs.append)
    assert logs and f"| {len(contexts)}/{len(contexts)} contexts" in logs[-1]
    full = embed(ckpt, contexts, batch_size=len(contexts))
    perm = np.random.default_rng(0).permutation(len(contexts))
    shuffled = embed(ckpt, [contexts[i] for i in perm], batch_size=2)
    np.testing.assert_allclose(full, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(shuffled, ref[perm], atol=1e-5, rtol=0)
    for pool in ("mean",):
        np.testing.assert_allclose(
            embed(ckpt, contexts, pool=pool, batch_size=1),
            embed(ckpt, contexts, pool=pool, batch_size=5),
            atol=1e-5,
            rtol=0,
        )


def test_edge_cases(ckpt):
    assert embed(ckpt, []).shape == (0, H)
    with pytest.raises(ValueError, match="empty"):
        embed(ckpt, [np.array([1, 5]), np.array([], dtype=np.int64)])
    with pytest.raises(ValueError, match="pool"):
        embed(ckpt, [np.array([1, 5])], pool="max")
    with pytest.raises(FileNotFoundError):
        load_encoder(ckpt.parent / "missing")
