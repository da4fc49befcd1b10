"""The bf16 branch, executed on the CPU: PyTorch autocasts to bfloat16 on the CPU too, so the code a GPU runs for a
``precision: bf16`` recipe (a bf16 frozen base, autocast around the decoder passes, the chunked cross-entropy and
the stacked SFT + online pass under autocast, the EMA target pass, the embedding pass, the training loop) runs in CI.
Only the device policy (:func:`bf16_for`: bf16 on CUDA) is the GPU's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ehr_assets.embed import embed, embed_with
from ehr_assets.model.backbone import build_model, decoder_of
from ehr_assets.model.batches import make_jepa_batch
from ehr_assets.model.jepa import MomentumEncoder, Predictor
from ehr_assets.model.losses import step_losses
from ehr_assets.model.precision import autocast, bf16_for
from ehr_assets.train import loop, train

from ..train.test_training import MASK, PAD, make_data, recipe

CPU = torch.device("cpu")


def matmul_dtypes(model) -> list[torch.dtype]:
    """Records the output dtype of the last layer's MLP projection (a LoRA-wrapped Linear) at every decoder pass:
    bfloat16 exactly when the pass ran under bf16 autocast. (The residual stream itself stays fp32: the trainable
    embedding rows are fp32.)"""
    seen: list[torch.dtype] = []
    decoder_of(model)[0].layers[-1].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen


def jepa_parts(base_dtype):
    data = make_data()
    r = recipe("hyb", "hybrid", jepa={"mask_ratio": 0.5})
    model, _ = build_model(r, data, log=lambda m: None, base_dtype=base_dtype)
    torch.manual_seed(1)
    pred = Predictor(model.get_base_model().config.hidden_size, 2)
    batch = make_jepa_batch(data.jepa_examples[:4], 32, r.jepa, MASK, PAD, np.random.default_rng(0)).tensors(CPU)
    return model, pred, MomentumEncoder(model), batch


def test_device_policy():
    assert bf16_for("bf16", torch.device("cuda")) and bf16_for("bf16", "cuda:0")
    assert not bf16_for("bf16", CPU) and not bf16_for("fp32", torch.device("cuda"))
    assert isinstance(autocast(CPU, True), torch.autocast)
    with autocast(CPU, False):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("stack, fused", [(False, False), (True, True)])
def test_step_losses_under_cpu_bf16_autocast(stack, fused):
    model, pred, mom, batch = jepa_parts(torch.bfloat16)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}  # half-size base, fp32 adapters
    seen = matmul_dtypes(model)
    with autocast(CPU, True):
        ls, lj = step_losses(model, pred, mom, batch, sft=True, jepa=True, stack=stack, fused=fused, chunk=16)
    assert seen and set(seen) == {torch.bfloat16}  # every decoder pass (SFT, online, EMA target) ran in bf16
    (ls + lj).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    ref_model, ref_pred, ref_mom, _ = jepa_parts(None)  # same seeds: the same weights in fp32
    ref_pred.load_state_dict(pred.state_dict())
    with torch.no_grad():
        rs, rj = step_losses(
            ref_model, ref_pred, ref_mom, batch, sft=True, jepa=True, stack=stack, fused=fused, chunk=16
        )
    ls, lj = ls.detach(), lj.detach()
    assert float(ls) == pytest.approx(float(rs), rel=0.03) and float(ls) != float(rs)
    assert float(lj) == pytest.approx(float(rj), rel=0.15, abs=0.02)


def test_embedding_pass_under_cpu_bf16_autocast():
    model, _, _, _ = jepa_parts(torch.bfloat16)
    model.eval()
    ctxs = [np.asarray(s[:n], dtype=np.int64) for s, n in make_data().jepa_examples[:6]]
    seen = matmul_dtypes(model)
    e16 = embed_with(model, ctxs, pool="last", batch_size=4, pad_id=PAD, bf16=True, log=None)
    assert set(seen) == {torch.bfloat16} and e16.dtype == np.float32 and np.isfinite(e16).all()
    ref, _, _, _ = jepa_parts(None)
    ref.eval()
    e32 = embed_with(ref, ctxs, pool="last", batch_size=4, pad_id=PAD, bf16=False, log=None)
    cos = (e16 * e32).sum(1) / np.linalg.norm(e16, axis=1) / np.linalg.norm(e32, axis=1)
    assert cos.min() > 0.98 and not np.array_equal(e16, e32)


def test_training_loop_runs_its_bf16_branch_on_the_cpu(tmp_path, monkeypatch):
    """The whole loop with the GPU's policy forced: bf16 base, autocast in every step and in the collapse monitor;
    the run's checkpoint then embeds on the CPU in fp32 (the real policy)."""
    monkeypatch.setattr(loop, "bf16_for", lambda precision, device: precision == "bf16")
    r = recipe("hyb", "hybrid", training={"precision": "bf16", "steps": 3, "monitor_every": 1})
    seen: list[torch.dtype] = []
    real_build = loop.build_parts

    def spy(*a, **kw):
        parts = real_build(*a, **kw)
        assert kw["use_bf16"] and {p.dtype for p in parts.model.parameters() if not p.requires_grad} == {torch.bfloat16}
        seen.extend(())  # filled by the hook below
        layer = decoder_of(parts.model)[0].layers[-1].mlp.down_proj
        layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        return parts

    monkeypatch.setattr(loop, "build_parts", spy)
    logs: list[str] = []
    res = train(r, make_data(), tmp_path / "ck", log=logs.append)
    assert seen and set(seen) == {torch.bfloat16}
    assert not any("training in fp32" in m for m in logs)
    curve = json.loads((tmp_path / "ck" / "train_log.json").read_text())["loss_curve"]
    assert len(curve) == 3 and all(np.isfinite(c["loss"]) for c in curve) and "emb_eff_rank" in curve[-1]
    assert res.steps == 3

    monkeypatch.undo()
    ctx = [np.asarray(s[:n], dtype=np.int64) for s, n in make_data().jepa_examples[:3]]
    assert np.isfinite(embed(tmp_path / "ck", ctx, pad_id=PAD)).all()  # CPU policy: fp32, loads the bf16 run's files
