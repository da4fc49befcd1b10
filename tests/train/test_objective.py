"""Tests that fail when the JEPA objective is wrong, checked where it happens: a hook on the decoder stack records what
each pass of the real training step reads (the online pass the masked ids, the momentum pass the full ids), the
online states at masked positions differ from an unmasked pass, JEPA moves the predictor and the node embeddings, and
the normalized JEPA loss means what it says."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ehr_assets.embed import embed
from ehr_assets.model import losses as L
from ehr_assets.model.backbone import build_model
from ehr_assets.model.base import decoder_of
from ehr_assets.model.batches import make_jepa_batch, make_sft_batch
from ehr_assets.model.jepa import MomentumEncoder, Predictor
from ehr_assets.train import setup, train

from .test_training import MASK, PAD, make_data, quiet, recipe


class DecoderSpy:
    """Records every call of a decoder stack: the ids and mask it read, whether gradients were on, its output."""

    def __init__(self, decoder):
        self.calls: list[dict] = []
        self.handle = decoder.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        self.calls.append(
            {
                "ids": ids.detach().clone(),
                "am": kwargs["attention_mask"].detach().clone(),
                "grad": torch.is_grad_enabled(),
                "h": output.last_hidden_state.detach().clone(),
            }
        )


def _spy_on_training(monkeypatch) -> dict:
    """Patch the trainer's model builder so the decoder of the model train() builds carries a :class:`DecoderSpy`."""
    seen: dict = {}
    real = setup.build_model

    def spying_build(*a, **kw):
        model, info = real(*a, **kw)
        seen["spy"] = DecoderSpy(decoder_of(model)[0])
        return model, info

    monkeypatch.setattr(setup, "build_model", spying_build)
    return seen


def _is_window(row: np.ndarray, seqs: list[np.ndarray]) -> bool:
    n = len(row)
    return any(any(np.array_equal(s[i : i + n], row) for i in range(len(s) - n + 1)) for s in seqs)


# ------------------------------------------------------------------------------ what each pass of a step reads
@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_the_training_step_feeds_masked_ids_online_and_full_ids_to_the_target(tmp_path, monkeypatch, finetune):
    """Inside train() (hybrid, CPU, no stacking): per step the decoder runs three times: SFT (gradients, windows of
    whole timelines, no mask token), online (gradients, the JEPA rows with mask tokens) and momentum (no gradients,
    the same rows unmasked). At step 1 the momentum weights equal the online ones, so the two JEPA passes agree up
    to the first masked position and differ at the masked positions."""
    data = make_data(n=10, seed=11, min_len=30, max_len=70)
    seen = _spy_on_training(monkeypatch)
    r = recipe(
        "hyb", "hybrid", finetune=finetune, training={"steps": 2, "batch_size": 3, "seq_len": 32, "monitor_nodes": 0}
    )
    res = train(r, data, tmp_path / "ck", log=quiet)
    calls = seen["spy"].calls
    assert len(calls) == 6, [c["grad"] for c in calls]  # 2 steps x (SFT, online, momentum)
    for step, (sft, online, target) in enumerate(zip(calls[0::3], calls[1::3], calls[2::3])):
        assert sft["grad"] and online["grad"] and not target["grad"]
        real_t = target["am"] == 1
        assert not (target["ids"][real_t] == MASK).any(), "the momentum pass read masked ids"
        masked = online["ids"] == MASK
        assert masked.any(dim=1).all(), "the online pass read rows without a mask token"
        assert online["ids"].shape == target["ids"].shape
        assert torch.equal(online["ids"][~masked], target["ids"][~masked])  # same rows, masked where masked
        assert not (target["ids"][masked] == MASK).any()
        seqs = data.sft_sequences
        for row, am in zip(sft["ids"].numpy(), sft["am"].numpy()):
            toks = row[am == 1]
            assert not (toks == MASK).any() and _is_window(toks, seqs), "the SFT pass read something else"
        if step == 0:  # EMA == online weights before the first update
            first = masked.float().argmax(dim=1)
            for i in range(len(first)):
                f = int(first[i])
                torch.testing.assert_close(online["h"][i, :f], target["h"][i, :f], rtol=0, atol=1e-5)
            diff = (online["h"] - target["h"]).norm(dim=-1)[masked]
            assert (diff > 1e-3).all(), "online states at masked positions equal the unmasked run's"
            # the logged normalized loss divides by the variance of the targets the momentum pass produced there
            var = float(target["h"][masked].var(dim=0, unbiased=False).mean())
            rec = res.loss_curve[0]
            assert rec["jepa_loss_norm"] == pytest.approx(rec["jepa_loss"] / var, rel=1e-4)


def _real_rows(ids: torch.Tensor, am: torch.Tensor) -> list[tuple[int, ...]]:
    """Each row's real (attended) tokens, sorted: what a pass read, whatever its padding or stacking."""
    return sorted(tuple(r[m == 1].tolist()) for r, m in zip(ids, am))


@pytest.mark.parametrize("stack", [True, False])
def test_step_losses_routes_rows_to_the_right_pass(data12, stack):
    """step_losses itself, also on the stacked (GPU) path: the passes with gradients read exactly the SFT rows and
    the masked JEPA rows, the momentum pass exactly the unmasked JEPA rows."""
    r = recipe("hyb", "hybrid", jepa={"mask_ratio": 0.5})
    torch.manual_seed(0)
    model, _ = build_model(r, data12, log=quiet)
    pred, mom = Predictor(32, 2), MomentumEncoder(model)
    jb = make_jepa_batch(data12.jepa_examples[:4], 32, r.jepa, MASK, PAD, np.random.default_rng(0)).tensors("cpu")
    inp, am = make_sft_batch(data12.sft_sequences[4:7], 24, PAD, np.random.default_rng(1))
    sb = {"input_ids": torch.from_numpy(inp), "attention_mask": torch.from_numpy(am)}
    spy = DecoderSpy(decoder_of(model)[0])
    L.step_losses(model, pred, mom, jb, sft=True, jepa=True, sft_batch=sb, stack=stack)
    grad_calls = [c for c in spy.calls if c["grad"]]
    assert len(grad_calls) == (1 if stack else 2)
    read_with_grad = sorted(sum((_real_rows(c["ids"], c["am"]) for c in grad_calls), []))
    expected = sorted(
        _real_rows(sb["input_ids"], sb["attention_mask"]) + _real_rows(jb["masked_ids"], jb["attention_mask"])
    )
    assert read_with_grad == expected
    (target,) = [c for c in spy.calls if not c["grad"]]
    assert _real_rows(target["ids"], target["am"]) == _real_rows(jb["input_ids"], jb["attention_mask"])


@pytest.fixture(scope="module")
def data12():
    return make_data()


# ------------------------------------------------------------------------- JEPA moves the model, not a no-op
def test_jepa_from_an_sft_checkpoint_changes_the_node_embeddings(tmp_path):
    """A JEPA phase (JEPA loss only, full fine-tuning as the shipped recipes) from an SFT checkpoint changes the
    frozen node embeddings; with the JEPA term switched off it would change nothing."""
    data = make_data(n=10, seed=12, min_len=30, max_len=70)
    sft = recipe(finetune="full", training={"steps": 3})
    train(sft, data, tmp_path / "sft", log=quiet)
    jep = recipe(
        "jepa",
        "jepa",
        finetune="full",
        init_from="sft",
        loss_weights={"sft": 0.0, "jepa": 1.0},
        training={"steps": 3},
        optimizer={"lr": 1e-2, "schedule": "constant", "warmup_steps": 0},
    )
    train(jep, data, tmp_path / "jepa", init_dir=tmp_path / "sft", log=quiet)
    contexts = [ids[:b] for ids, b in data.jepa_examples]
    a = embed(tmp_path / "sft", contexts)
    b = embed(tmp_path / "jepa", contexts)
    change = np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
    assert change.min() > 1e-3, change


def test_the_jepa_term_trains_the_predictor_in_a_hybrid_run(tmp_path, data12):
    """After a hybrid run the saved predictor is not the seeded one it started as (the JEPA gradient reached it)."""
    r = recipe("hyb", "hybrid", training={"steps": 2, "monitor_nodes": 0})
    train(r, data12, tmp_path / "ck", log=quiet)
    torch.manual_seed(r.training.seed + 1)  # how build_parts seeds the predictor
    init = Predictor(32, r.jepa.predictor_depth, r.jepa.predictor_width).state_dict()
    saved = load_file(str(tmp_path / "ck" / "predictor.safetensors"))
    assert init.keys() == saved.keys()
    assert all((saved[k] - init[k]).abs().max() > 1e-4 for k in init)


# ----------------------------------------------------------------------------------- the normalized JEPA loss
def test_target_variance_is_what_predicting_the_mean_scores():
    rng = np.random.default_rng(0)
    t = torch.from_numpy(rng.normal(2.0, [0.5, 1.0, 3.0], size=(200, 3))).float()
    var = L.target_variance(t)
    np.testing.assert_allclose(float(var), t.numpy().var(axis=0).mean(), rtol=1e-5)
    mean_pred = t.mean(0, keepdim=True).expand_as(t)
    assert float(torch.nn.functional.mse_loss(mean_pred, t) / var) == pytest.approx(1.0, rel=1e-5)
    assert float(torch.nn.functional.mse_loss(t, t) / var) == 0.0
    assert float(L.target_variance(t * 3.0)) == pytest.approx(9 * float(var), rel=1e-5)


def test_step_reports_the_targets_variance_at_masked_positions(data12):
    r = recipe("hyb", "hybrid", jepa={"mask_ratio": 0.5})
    torch.manual_seed(0)
    model, _ = build_model(r, data12, log=quiet)
    pred, mom = Predictor(32, 2), MomentumEncoder(model)
    jb = make_jepa_batch(data12.jepa_examples[:5], 32, r.jepa, MASK, PAD, np.random.default_rng(2)).tensors("cpu")
    stats: dict = {}
    _, lj = L.step_losses(model, pred, mom, jb, sft=False, jepa=True, stats=stats)
    tgt = mom.hidden(jb["input_ids"], jb["attention_mask"])[jb["mask"]].numpy()
    assert stats["jepa_target_var"] == pytest.approx(float(tgt.var(axis=0).mean()), rel=1e-5)
    unmasked = mom.hidden(jb["input_ids"], jb["attention_mask"])[~jb["mask"] & (jb["attention_mask"] == 1)].numpy()
    assert stats["jepa_target_var"] != pytest.approx(float(unmasked.var(axis=0).mean()), rel=1e-3)


def test_loss_curve_and_log_carry_the_normalized_jepa_loss(tmp_path, data12):
    r = recipe("hyb", "hybrid", training={"steps": 3, "log_every": 1, "monitor_nodes": 0})
    res = train(r, data12, tmp_path / "ck", log=quiet)
    norms = [c["jepa_loss_norm"] for c in res.loss_curve]
    assert all(math.isfinite(x) and 0.2 < x < 5 for x in norms), norms
    logged = json.loads((tmp_path / "ck" / "train_log.json").read_text())["loss_curve"]
    assert [c["jepa_loss_norm"] for c in logged] == norms
    s = train(recipe(training={"steps": 1}), data12, tmp_path / "sft", log=quiet)
    assert math.isnan(s.loss_curve[0]["jepa_loss_norm"])
