"""The JEPA design options of issue 26 (``jepa:`` keys of a recipe), each checked where it acts: span masking in the
batch, normalized / top-K targets in the momentum pass, a predictor that reads the last context position, the
predictor's own learning rate; and the defaults reproduce the paper's recipe unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ehr_assets.model import losses as L
from ehr_assets.model.backbone import build_model
from ehr_assets.model.base import decoder_of
from ehr_assets.model.batches import make_jepa_batch, masked_positions, n_masked
from ehr_assets.model.jepa import MomentumEncoder, Predictor
from ehr_assets.specs import Jepa
from ehr_assets.train import setup

from .test_training import MASK, PAD, TINY, make_data, quiet, recipe


@pytest.fixture(scope="module")
def data():
    return make_data(n=8, seed=3, min_len=30, max_len=60)


def test_single_token_masking_is_unchanged_by_default():
    """mask_span 1 draws exactly what the recipe always drew (rng.choice of n_masked offsets)."""
    for n in (1, 7, 40):
        want = np.random.default_rng(5).choice(n, size=n_masked(n, 0.5), replace=False)
        assert np.array_equal(masked_positions(n, Jepa(), np.random.default_rng(5)), want)


@pytest.mark.parametrize("n, span, ratio", [(40, 8, 0.5), (37, 8, 0.5), (37, 5, 0.25), (9, 4, 0.75)])
def test_span_masking_masks_whole_aligned_spans(n, span, ratio):
    pos = masked_positions(n, Jepa(mask_ratio=ratio, mask_span=span), np.random.default_rng(1))
    assert len(pos) == len(set(pos.tolist())) == n_masked(n, ratio)
    assert pos.min() >= 0 and pos.max() < n
    blocks = {}
    for p in pos.tolist():
        blocks.setdefault(p // span, []).append(p)
    whole = [b for b, ps in blocks.items() if len(ps) == min(span, n - b * span)]
    assert len(blocks) - len(whole) <= 1  # every block whole but the one cut to the ratio
    cut = [ps for b, ps in blocks.items() if b not in whole]
    if cut:  # the cut block keeps its first positions: a contiguous span from the block's start
        assert sorted(cut[0]) == list(range(cut[0][0] // span * span, cut[0][0] // span * span + len(cut[0])))


def test_span_masking_draws_the_spans_at_random():
    jepa = Jepa(mask_ratio=0.25, mask_span=4)
    draws = [tuple(sorted(masked_positions(40, jepa, np.random.default_rng(k)).tolist())) for k in range(20)]
    assert len(set(draws)) > 10  # not always the same spans
    covered = np.bincount(np.concatenate(draws), minlength=40)
    assert (covered > 0).all()  # every future position is masked in some draw (the last span too)


def test_span_masking_in_the_batch(data):
    jepa = Jepa(mask_ratio=0.5, mask_span=4)
    b = make_jepa_batch(data.jepa_examples[:4], 32, jepa, MASK, PAD, np.random.default_rng(0))
    for i in range(4):
        C, Fn = int(b.context_len[i]), int(b.future_len[i])
        row = np.flatnonzero(b.mask[i]) - C
        assert len(row) == n_masked(Fn, 0.5) and row.min() >= 0
        runs = np.split(row, np.flatnonzero(np.diff(row) != 1) + 1)
        assert all(r[0] % 4 == 0 for r in runs)  # every masked run starts on a span boundary
        assert sum(len(r) >= min(4, Fn) for r in runs) >= len(runs) - 1


def _model(data, layers: int = 1, **jepa):
    backbone = {**TINY, "config": {**TINY["config"], "num_hidden_layers": layers}}
    r = recipe("hyb", "hybrid", jepa={"mask_ratio": 0.5, **jepa}, finetune="full", backbone=backbone)
    torch.manual_seed(0)
    model, _ = build_model(r, data, log=quiet)
    return r, model


def test_layer_normed_targets(data):
    _, model = _model(data)
    ids = torch.from_numpy(np.stack([s[:20] for s in data.sft_sequences[:3]]))
    am = torch.ones_like(ids)
    raw = MomentumEncoder(model).targets(ids, am)
    assert torch.allclose(raw, MomentumEncoder(model).hidden(ids, am))  # default: the final hidden states
    ln = MomentumEncoder(model, target_norm="layer").targets(ids, am)
    assert torch.allclose(ln, F.layer_norm(raw, raw.shape[-1:]), atol=1e-5)
    assert ln.mean(-1).abs().max() < 1e-4 and (ln.var(-1, unbiased=False) - 1).abs().max() < 1e-3
    assert not torch.allclose(raw, ln, atol=1e-2)


def test_top_k_layer_targets_average_the_top_layers(data):
    _, model = _model(data, layers=3)
    ids = torch.from_numpy(np.stack([s[:20] for s in data.sft_sequences[:3]]))
    am = torch.ones_like(ids)
    with torch.no_grad():
        hs = decoder_of(model)[0](input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states
    assert len(hs) == 4  # the embeddings, then each layer's output (the last one normed)
    top = [F.layer_norm(h, h.shape[-1:]) for h in hs[-2:]]
    want = F.layer_norm((top[0] + top[1]) / 2, top[0].shape[-1:])
    got = MomentumEncoder(model, target_layers=2, target_norm="layer").targets(ids, am)
    assert torch.allclose(got, want, atol=1e-5)
    plain = MomentumEncoder(model, target_layers=2).targets(ids, am)
    assert torch.allclose(plain, (hs[-2] + hs[-1]) / 2, atol=1e-5)


def test_a_context_reading_predictor_sees_only_the_last_context_state_and_the_offset(data):
    torch.manual_seed(0)
    pred = Predictor(32, 2, read="context", max_offset=16)
    b = make_jepa_batch(data.jepa_examples[:3], 32, Jepa(), MASK, PAD, np.random.default_rng(0)).tensors("cpu")
    h = torch.randn(*b["input_ids"].shape, 32)
    out = pred.predict(h, b)
    rows, pos = b["mask"].nonzero(as_tuple=True)
    c = b["context_len"][rows]
    want = pred(h[rows, c - 1] + pred.offset(pos - c))
    assert torch.allclose(out, want)
    h2 = h.clone()
    h2[b["mask"]] = 0.0  # the states at the masked positions are not read
    assert torch.allclose(pred.predict(h2, b), out)
    h3 = h.clone()
    h3[0, int(b["context_len"][0]) - 1] += 1.0  # the last context state is
    assert not torch.allclose(pred.predict(h3, b)[rows == 0], out[rows == 0])
    prev = Predictor(32, 2, read="previous")  # the position before each masked one
    assert torch.allclose(prev.predict(h, b), prev(h[rows, pos - 1]))
    assert torch.allclose(prev.predict(h2, b)[0], prev(h2[rows[0], pos[0] - 1]), atol=1e-6)
    masked = Predictor(32, 2)  # the default reads the masked positions
    assert torch.allclose(masked.predict(h, b), masked(h[b["mask"]]))


def test_the_training_step_uses_the_options(data):
    """step_losses reads the momentum encoder's normalized targets and the predictor's reading position."""
    r, model = _model(data, target_norm="layer", predict_from="context")
    parts = setup.build_parts(
        r, data, torch.device("cpu"), setup.Objective.of(r), init_dir=None, save_base_to=None, use_bf16=False, log=quiet
    )
    assert parts.momentum.target_norm == "layer" and parts.predictor.read == "context"
    b = make_jepa_batch(data.jepa_examples[:3], 32, r.jepa, MASK, PAD, np.random.default_rng(0)).tensors("cpu")
    stats = {}
    _, lj = L.step_losses(parts.model, parts.predictor, parts.momentum, b, sft=False, jepa=True, stats=stats)
    with torch.no_grad():
        h = decoder_of(parts.model)[0](input_ids=b["masked_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        tgt = parts.momentum.targets(b["input_ids"], b["attention_mask"])[b["mask"]]
        want = F.mse_loss(parts.predictor.predict(h, b), tgt)
    assert float(lj.detach()) == pytest.approx(float(want), rel=1e-5)
    assert stats["jepa_target_var"] == pytest.approx(float(L.target_variance(tgt)), rel=1e-5)


def test_the_predictor_learning_rate_scale(data):
    r = recipe("hyb", "hybrid", jepa={"predictor_lr_scale": 10.0}, optimizer={"lr": 1e-3})
    parts = setup.build_parts(
        r, data, torch.device("cpu"), setup.Objective.of(r), init_dir=None, save_base_to=None, use_bf16=False, log=quiet
    )
    g0, g1 = parts.optim.param_groups
    assert g0["initial_lr"] == pytest.approx(1e-3) and g1["initial_lr"] == pytest.approx(1e-2)
    assert {id(p) for p in g1["params"]} == {id(p) for p in parts.predictor.parameters()}
