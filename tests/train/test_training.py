"""ehr_assets.model and ehr_assets.train on a tiny Llama (hidden 32, 1 layer, vocab 48).

EMA, masking, gradients, overfitting, curriculum, determinism, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ehr_assets.model import losses as L
from ehr_assets.model.backbone import build_model
from ehr_assets.model.batches import make_jepa_batch, make_sft_batch, n_masked
from ehr_assets.model.jepa import MomentumEncoder, Predictor
from ehr_assets.model.schedules import tau_at
from ehr_assets.specs import RecipeSpec
from ehr_assets.train import TrainData, setup, train

V, PAD, BOS, EOS, MASK = 48, 0, 1, 2, 3
TINY = {
    "architecture": "llama",
    "config": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 64,
        "max_position_embeddings": 256,
    },
}


def recipe(name="sft", objective="sft", training=None, **kw) -> RecipeSpec:
    tr = {"steps": 4, "batch_size": 4, "seq_len": 32, "log_every": 1, "seed": 0}
    tr.update(training or {})
    return RecipeSpec.model_validate(
        {
            "name": name,
            "backbone": TINY,
            "objective": objective,
            "lora": {"rank": 4, "alpha": 8},
            "optimizer": {"lr": 5e-3, "schedule": "constant", "warmup_steps": 0},
            "training": tr,
            **kw,
        }
    )


def make_data(n=12, seed=0, min_len=12, max_len=60) -> TrainData:
    rng = np.random.default_rng(seed)
    seqs = [
        np.concatenate([[BOS], rng.integers(4, V, size=int(rng.integers(min_len, max_len))), [EOS]]).astype(np.int64)
        for _ in range(n)
    ]
    examples = [(s, int(rng.integers(2, len(s) - 1))) for s in seqs]
    return TrainData(seqs, examples, V, PAD, MASK, BOS, EOS)


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def data() -> TrainData:
    return make_data()


def _setup_jepa(data, **jepa):
    r = recipe("hyb", "hybrid", jepa={"mask_ratio": 0.5, **jepa})
    torch.manual_seed(0)
    model, _ = build_model(r, data, log=quiet)
    model.train()
    pred = Predictor(32, r.jepa.predictor_depth, r.jepa.predictor_width)
    mom = MomentumEncoder(model)
    batch = make_jepa_batch(data.jepa_examples[:4], r.training.seq_len, r.jepa, MASK, PAD, np.random.default_rng(0))
    return r, model, pred, mom, batch


# ------------------------------------------------------------------------------------------------------ 1. EMA
def test_ema_update_touches_only_trainable_tensors(data):
    r, model, pred, mom, batch = _setup_jepa(data)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(mom.ema) == trainable
    assert any(".lora_A." in n for n in trainable) and any("trainable_tokens_delta" in n for n in trainable)
    assert not any("base_layer" in n or "original_module" in n for n in mom.ema)

    # the momentum encoder equals the online one before any step (the swap really uses the EMA tensors)
    b = batch.tensors("cpu")
    model.eval()
    with torch.no_grad():
        online_h = mom.decoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    torch.testing.assert_close(mom.hidden(b["input_ids"], b["attention_mask"]), online_h, atol=1e-6, rtol=0)
    model.train()

    # a real optimizer step on the JEPA loss, then the EMA update
    params = [p for p in model.parameters() if p.requires_grad] + list(pred.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    L.jepa_loss(model, pred, mom, b).backward()
    opt.step()
    before = {n: t.clone() for n, t in mom.ema.items()}
    online = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert any(not torch.equal(before[n], online[n]) for n in online)
    tau = 0.9
    mom.update(tau)
    for n, e in mom.ema.items():
        torch.testing.assert_close(e, tau * before[n] + (1 - tau) * online[n], atol=1e-6, rtol=0)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), online[n]), f"EMA update changed online tensor {n}"
        else:
            assert torch.equal(p.detach(), frozen[n]), f"frozen base tensor {n} changed"

    # the target pass leaves the online weights in place and now differs from the online pass
    with torch.no_grad():
        tgt = mom.hidden(b["input_ids"], b["attention_mask"])
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), online[n])
    model.eval()
    with torch.no_grad():
        online_h = mom.decoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    assert not torch.allclose(tgt, online_h)
    assert model.training is False
    # the EMA is saved with the adapter's keys
    sd = mom.state_dict_to_save()
    assert sd and all(".default." not in k for k in sd)


def test_tau_schedule():
    r = recipe("j", "hybrid", jepa={"ema_tau": 0.99, "ema_tau_end": 1.0})
    taus = [tau_at(s, 11, r.jepa) for s in range(11)]
    assert taus[0] == pytest.approx(0.99) and taus[-1] == pytest.approx(1.0) and taus[5] == pytest.approx(0.995)
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    assert tau_at(3, 11, recipe("j", "hybrid").jepa) == 0.996


# ----------------------------------------------------------------------------------------------------- 2. masks
@pytest.mark.parametrize("ratio,max_future", [(0.5, None), (0.3, 5), (0.75, None)])
def test_masks_only_in_future(ratio, max_future):
    rng = np.random.default_rng(1)
    seq_len = 32
    ids = [np.arange(4, 4 + n) % V for n in (10, 50, 80, 40, 33)]
    bounds = [3, 45, 20, 2, 32]  # short context, long context, long future, short context, future of 1
    examples = [(a.astype(np.int64), b) for a, b in zip(ids, bounds)]
    r = recipe("j", "hybrid", jepa={"mask_ratio": ratio, "max_future_tokens": max_future})
    batch = make_jepa_batch(examples, seq_len, r.jepa, MASK, PAD, rng)
    for i, (a, b) in enumerate(examples):
        Fn = min(len(a) - b, max_future or seq_len // 2)
        C = min(b, seq_len - Fn)
        assert batch.future_len[i] == Fn and batch.context_len[i] == C
        n = int(batch.attention_mask[i].sum())
        assert n == C + Fn <= seq_len
        np.testing.assert_array_equal(batch.input_ids[i, :n], a[b - C : b + Fn])  # last C context, first F future
        assert (batch.input_ids[i, n:] == PAD).all()
        pos = np.flatnonzero(batch.mask[i])
        assert len(pos) == n_masked(Fn, ratio) == max(1, math.floor(ratio * Fn + 0.5))
        if ratio * Fn % 1 != 0.5 and ratio * Fn >= 0.5:
            assert len(pos) == round(ratio * Fn)
        assert (pos >= C).all() and (pos < C + Fn).all()  # never context, never pad
        assert batch.attention_mask[i, pos].all()
        np.testing.assert_array_equal(batch.masked_ids[i, pos], MASK)
        keep = ~batch.mask[i]
        np.testing.assert_array_equal(batch.masked_ids[i, keep], batch.input_ids[i, keep])
    again = make_jepa_batch(examples, seq_len, r.jepa, MASK, PAD, np.random.default_rng(1))
    np.testing.assert_array_equal(again.mask, batch.mask)  # seeded


# ------------------------------------------------------------------------------------------------- 3. gradients
def test_jepa_target_has_no_grad_and_online_learns(data):
    r, model, pred, mom, batch = _setup_jepa(data)
    b = batch.tensors("cpu")
    loss, p, tgt = L.jepa_loss(model, pred, mom, b, return_parts=True)
    raw = mom.hidden(b["input_ids"], b["attention_mask"])
    assert not raw.requires_grad and raw.grad_fn is None
    assert not tgt.requires_grad and tgt.grad_fn is None
    assert p.requires_grad and loss.requires_grad
    assert tgt.shape == p.shape == (int(batch.mask.sum()), 32)
    loss.backward()
    for n, q in pred.named_parameters():
        assert q.grad is not None and q.grad.abs().sum() > 0, f"predictor {n} has no gradient"
    named = dict(model.named_parameters())
    lora_b = [n for n in named if ".lora_B." in n]
    assert lora_b
    for n in lora_b:  # lora_A gets a zero gradient at init (lora_B starts at 0), lora_B must not
        assert named[n].grad is not None and named[n].grad.abs().sum() > 0, f"{n} has no gradient"
    emb = [n for n in named if "embed_tokens.token_adapter.trainable_tokens_delta" in n]
    assert emb and named[emb[0]].grad.abs().sum() > 0
    for n, q in named.items():
        if not q.requires_grad:
            assert q.grad is None, f"frozen {n} got a gradient"
    for t in mom.ema.values():
        assert t.grad is None and not t.requires_grad


# --------------------------------------------------------------------------------------------------- 4. overfit
def test_sft_overfits_tiny_set(tmp_path):
    d = make_data(n=4, seed=3, min_len=14, max_len=20)
    r = recipe(
        training={"steps": 60, "batch_size": 4, "seq_len": 32},
        optimizer={"lr": 2e-2, "schedule": "constant", "warmup_steps": 0},
    )
    res = train(r, d, tmp_path / "ck", log=quiet)
    losses = [c["loss"] for c in res.loss_curve]
    assert len(losses) == 60
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert all(math.isnan(c["jepa_loss"]) and math.isnan(c["tau"]) for c in res.loss_curve)
    assert res.tokens_per_s > 0 and res.peak_mem_mb > 0 and 0 < res.trainable_params < res.total_params


def test_jepa_loss_falls(tmp_path):
    d = make_data(n=4, seed=4, min_len=14, max_len=20)
    r = recipe(
        "jp",
        "hybrid",
        training={"steps": 60, "batch_size": 4, "seq_len": 32},
        loss_weights={"sft": 0.0, "jepa": 1.0},
        jepa={"ema_tau": 0.99},
        optimizer={"lr": 1e-2, "schedule": "constant", "warmup_steps": 0},
    )
    res = train(r, d, tmp_path / "ck", log=quiet)
    j = [c["jepa_loss"] for c in res.loss_curve]
    assert all(math.isnan(c["sft_loss"]) for c in res.loss_curve)
    assert np.mean(j[-5:]) < 0.7 * np.mean(j[:5]), j[::5]


# ------------------------------------------------------------------------------------------------ 5. curriculum
def test_curriculum_starts_from_sft_weights(tmp_path, data, monkeypatch):
    sft = recipe(training={"steps": 3})
    train(sft, data, tmp_path / "sft", log=quiet)
    jep = recipe("jepa", "jepa", init_from="sft", training={"steps": 2})

    saved = load_file(str(tmp_path / "sft" / "adapter" / "adapter_model.safetensors"))
    base_saved = load_file(str(tmp_path / "sft" / "base" / "model.safetensors"))
    assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in saved.items())  # SFT really moved the adapter

    seen = {}
    real_build = setup.build_model

    def spy(*a, **kw):  # what train() starts from, before its first step
        model, info = real_build(*a, **kw)
        seen["state"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        return model, info

    monkeypatch.setattr(setup, "build_model", spy)
    train(jep, data, tmp_path / "jepa", init_dir=tmp_path / "sft", log=quiet)
    state = seen["state"]

    n_checked = 0
    for k, v in saved.items():  # adapter file keys drop the adapter name
        if ".lora_" in k:
            name = k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
        else:
            assert k.endswith("token_adapter.trainable_tokens_delta"), k
            name = k + ".default"
        assert torch.equal(state[name], v), name
        n_checked += 1
    assert n_checked == len(saved)
    for k, v in base_saved.items():
        cands = [
            n
            for n in state
            if n.endswith(k.replace(".weight", ".base_layer.weight"))
            or n.endswith(k.replace(".weight", ".token_adapter.base_layer.weight"))
            or n == f"base_model.model.{k}"
        ]
        assert len(cands) == 1, (k, cands)
        assert torch.equal(state[cands[0]], v), k
    assert seen["trainable"] == {n for n in state if "lora_" in n or ".trainable_tokens_delta." in n}
    # the EMA starts there too: after the run the JEPA checkpoint holds its own EMA adapter with the same keys
    ema = load_file(str(tmp_path / "jepa" / "ema_adapter.safetensors"))
    assert set(ema) == set(saved)
    assert (tmp_path / "jepa" / "predictor.safetensors").is_file()
    for k, v in base_saved.items():  # the base is carried over unchanged
        assert torch.equal(load_file(str(tmp_path / "jepa" / "base" / "model.safetensors"))[k], v)

    other = RecipeSpec.model_validate(
        {**jep.model_dump(), "backbone": {**TINY, "config": {**TINY["config"], "hidden_size": 64}}}
    )
    with pytest.raises(ValueError, match=r"'jepa'.*'sft'.*backbones differ"):
        train(other, data, tmp_path / "bad", init_dir=tmp_path / "sft", log=quiet)


# ----------------------------------------------------------------------------------------------- 6. determinism
@pytest.mark.parametrize("objective", ["sft", "hybrid"])
def test_identical_runs_identical_curves(tmp_path, data, objective):
    r = recipe("det", objective, training={"steps": 5, "batch_size": 3}, jepa={"ema_tau_end": 1.0})
    a = train(r, data, tmp_path / "a", log=quiet)
    b = train(r, data, tmp_path / "b", log=quiet)
    assert json.dumps(a.loss_curve) == json.dumps(b.loss_curve)
    fa = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    fb = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    c = train(
        RecipeSpec.model_validate({**r.model_dump(), "training": {**r.training.model_dump(), "seed": 1}}),
        data,
        tmp_path / "c",
        log=quiet,
    )
    assert json.dumps(c.loss_curve) != json.dumps(a.loss_curve)


# --------------------------------------------------------------------------------------------- 7. hybrid, errors
def test_hybrid_logs_both_losses_and_writes_checkpoint(tmp_path, data):
    lines = []
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    r = recipe(
        "hyb",
        "hybrid",
        training={
            "steps": 4,
            "log_every": 2,
            "grad_accum": 2,
            "checkpoint_every": 2,
            "gradient_checkpointing": True,
            "precision": "bf16",
        },
        jepa={"predictor_depth": 3, "predictor_width": 16},
    )
    res = train(r, data, tmp_path / "ck", tokenizer_dir=tok, log=lines.append)
    assert [c["step"] for c in res.loss_curve] == [1, 2, 4]
    for c in res.loss_curve:
        assert math.isfinite(c["sft_loss"]) and math.isfinite(c["jepa_loss"]) and math.isfinite(c["tau"])
        assert c["loss"] == pytest.approx(c["sft_loss"] + c["jepa_loss"], rel=1e-5)
    assert any("step 4/4" in s and "tok/s" in s for s in lines)
    if not torch.cuda.is_available():
        assert any("bf16" in s and "fp32" in s for s in lines)
    ck = tmp_path / "ck"
    for f in (
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "base/model.safetensors",
        "predictor.safetensors",
        "ema_adapter.safetensors",
        "tokenizer/tokenizer.json",
        "recipe.json",
        "train_log.json",
        "checkpoints/step_000002/adapter/adapter_model.safetensors",
    ):
        assert (ck / f).is_file(), f
    assert not list(ck.rglob("*.bin")) and not list(ck.rglob("*.pt"))
    assert json.loads((ck / "recipe.json").read_text())["name"] == "hyb"
    assert json.loads((ck / "train_log.json").read_text())["steps"] == 4
    p = load_file(str(ck / "predictor.safetensors"))
    assert [tuple(v.shape) for k, v in sorted(p.items()) if k.endswith("weight")] == [(16, 32), (16, 16), (32, 16)]


def test_bad_data_raises(tmp_path, data):
    empty = TrainData([], [], V, PAD, MASK, BOS, EOS)
    with pytest.raises(ValueError, match="no sft_sequences"):
        train(recipe(), empty, tmp_path / "a", log=quiet)
    with pytest.raises(ValueError, match="no jepa_examples"):
        train(recipe("j", "jepa"), empty, tmp_path / "b", log=quiet)
    seq = data.sft_sequences[0]
    for bad in (0, len(seq), len(seq) + 3, -1):
        d = TrainData(data.sft_sequences, [(seq, bad)], V, PAD, MASK, BOS, EOS)
        with pytest.raises(ValueError, match="boundary"):
            train(recipe("h", "hybrid"), d, tmp_path / "c", log=quiet)
    d = TrainData([np.array([1, 99, 2])], [], V, PAD, MASK, BOS, EOS)
    with pytest.raises(ValueError, match="outside"):
        train(recipe(), d, tmp_path / "d", log=quiet)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        train(recipe(), data, tmp_path / "full", log=quiet)
    with pytest.raises(ValueError, match="init_dir"):
        train(recipe("j", "jepa", init_from="sft"), data, tmp_path / "e", log=quiet)


# ------------------------------------------------------------------------------------- 8. the optimized step
TOKEN_SETUPS = {
    "token_rows": {},  # the default: embed_tokens and lm_head rows of the added tokens (all, config-built)
    "whole_matrices": {"modules_to_save": ["embed_tokens", "lm_head"], "trainable_tokens": []},
    "no_tokens": {"trainable_tokens": []},
}


@pytest.mark.parametrize("stack,fused", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("tokens", list(TOKEN_SETUPS))
@pytest.mark.parametrize("sft_w,jepa_w", [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)])
def test_optimized_step_matches_the_plain_three_pass_step(data, tokens, sft_w, jepa_w, stack, fused):
    """step_losses (stacked SFT + online rows, chunked linear cross-entropy without full logits, no lm_head in the
    JEPA rows) gives the losses and gradients of sft_loss + jepa_loss, in fp32 to rtol 1e-5 / atol 1e-6; the SFT
    rows are windows of other sequences than the JEPA rows, of another length (as in training)."""
    r = recipe("hyb", "hybrid", lora={"rank": 4, "alpha": 8, **TOKEN_SETUPS[tokens]}, jepa={"mask_ratio": 0.5})
    torch.manual_seed(0)
    model, _ = build_model(r, data, log=quiet)
    model.train()
    with torch.no_grad():  # a non-zero adapter, so LoRA paths matter
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    pred = Predictor(32, 2)
    mom = MomentumEncoder(model)
    with torch.no_grad():
        for t in mom.ema.values():  # a target encoder that differs from the online one
            t.add_(0.01 * torch.randn_like(t))
    b = make_jepa_batch(data.jepa_examples[:6], 32, r.jepa, MASK, PAD, np.random.default_rng(0)).tensors("cpu")
    inp, am = make_sft_batch(data.sft_sequences[6:11], 40, PAD, np.random.default_rng(1))
    sb = {"input_ids": torch.from_numpy(inp), "attention_mask": torch.from_numpy(am)}
    assert sb["input_ids"].shape[1] != b["input_ids"].shape[1]
    params = [p for p in model.parameters() if p.requires_grad] + list(pred.parameters())

    def grads_of(loss):
        for p in params:
            p.grad = None
        loss.backward()
        return [None if p.grad is None else p.grad.clone() for p in params]

    ref = torch.zeros(())
    ref_s = L.sft_loss(model, sb["input_ids"], sb["attention_mask"]) if sft_w else None
    ref_j = L.jepa_loss(model, pred, mom, b) if jepa_w else None
    ref = (sft_w * ref_s if ref_s is not None else 0) + (jepa_w * ref_j if ref_j is not None else 0)
    g_ref = grads_of(ref)

    fs, fj = L.step_losses(
        model,
        pred,
        mom,
        b,
        sft=bool(sft_w),
        jepa=bool(jepa_w),
        sft_batch=sb,
        chunk=7,  # several chunks
        stack=stack,
        fused=fused,
    )
    fast = (sft_w * fs if fs is not None else 0) + (jepa_w * fj if fj is not None else 0)
    g_fast = grads_of(fast)

    if sft_w:
        torch.testing.assert_close(fs, ref_s, rtol=1e-5, atol=1e-6)
    if jepa_w:
        torch.testing.assert_close(fj, ref_j, rtol=1e-5, atol=1e-6)
    n_checked = 0
    for a, c in zip(g_ref, g_fast):
        assert (a is None) == (c is None)
        if a is not None:
            torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)
            n_checked += 1
    assert n_checked > 10


def test_linear_cross_entropy_matches_full_logits():
    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    ref = F.cross_entropy(h @ w.t(), y)
    gh, gw = torch.autograd.grad(ref, (h, w))
    fast = L.LinearCrossEntropy.apply(h, w, y, 8)
    fh, fw = torch.autograd.grad(fast, (h, w))
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(fh, gh)
    torch.testing.assert_close(fw, gw)

    # trained token rows (PEFT trainable tokens) replacing w[idx]: as if the merged matrix were used, without it
    idx = torch.tensor([3, 17, 49])
    rows = torch.randn(3, 16, requires_grad=True)
    merged = w.detach().index_copy(0, idx, rows)
    ref = F.cross_entropy(h @ merged.t(), y)
    gh, grows = torch.autograd.grad(ref, (h, rows))
    fast = L.LinearCrossEntropy.apply(h, w.detach(), y, 8, idx, rows)
    fh, frows = torch.autograd.grad(fast, (h, rows))
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(fh, gh)
    torch.testing.assert_close(frows, grows)
    assert not torch.allclose(fast, L.LinearCrossEntropy.apply(h, w, y, 8))  # the rows do change the loss


def test_train_applies_the_ema_update_after_each_step(tmp_path, data):
    """Inside train(): after one JEPA-phase step the saved EMA adapter is tau * (the SFT weights it started from)
    + (1 - tau) * (the online weights after the step)."""
    train(recipe(training={"steps": 2}), data, tmp_path / "sft", log=quiet)
    start = load_file(str(tmp_path / "sft" / "adapter" / "adapter_model.safetensors"))
    j = recipe(
        "jepa",
        "jepa",
        init_from="sft",
        training={"steps": 1},
        jepa={"ema_tau": 0.9},
        optimizer={"lr": 5e-2, "schedule": "constant", "warmup_steps": 0},
    )
    train(j, data, tmp_path / "j", init_dir=tmp_path / "sft", log=quiet)
    online = load_file(str(tmp_path / "j" / "adapter" / "adapter_model.safetensors"))
    ema = load_file(str(tmp_path / "j" / "ema_adapter.safetensors"))
    assert ema.keys() == online.keys() == start.keys()
    moved = [k for k in online if not torch.equal(online[k], start[k])]
    assert moved  # the step changed the online weights, so the check below can tell tau from 1 - tau
    for k in online:
        torch.testing.assert_close(ema[k], 0.9 * start[k] + 0.1 * online[k], rtol=1e-5, atol=1e-6)
