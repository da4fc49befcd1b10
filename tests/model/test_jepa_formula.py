"""The JEPA loss held to its definition, computed here by plain torch code and nothing of ``model/losses.py``:

    predictor(online final hidden states of the *masked* sequence, at the masked positions)
    vs the momentum encoder's final hidden states of the *full* sequence at those positions,
    MSE (mean over masked positions x hidden dimensions), the target a constant (no gradient through it).

The online states come from the PeftModel's own decoder stack (``get_base_model().model``), the target's from a
deep copy of the model with the EMA tensors written into its trainable parameters (not the momentum encoder's
``functional_call``), the masked positions from an index list (not the batch's bool mask). :func:`step_losses` (every
path of it) and :func:`jepa_loss` must equal it in value and gradients, and the loss must read the target only at
the masked positions.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ehr_assets.model.backbone import build_model
from ehr_assets.model.jepa import MomentumEncoder, Predictor
from ehr_assets.model.losses import jepa_loss, step_losses

from ..train.test_training import MASK, PAD, make_data, quiet, recipe

H = 32  # hidden size of the tiny Llama of tests/train/test_training.py
LENGTHS = (12, 9, 7)  # real tokens per row; right-padded to 12
BOUNDARY = (6, 5, 4)  # first future position per row
MASKED = [(0, 7), (0, 9), (0, 10), (1, 5), (1, 8), (2, 6)]  # (row, position): future positions only, row-major


def tiny_batch() -> dict[str, torch.Tensor]:
    """Three right-padded rows of random tokens; MASKED replaced by the mask token in ``masked_ids``."""
    g = torch.Generator().manual_seed(7)
    L = max(LENGTHS)
    ids = torch.full((len(LENGTHS), L), PAD, dtype=torch.long)
    am = torch.zeros_like(ids)
    for i, n in enumerate(LENGTHS):
        ids[i, :n] = torch.randint(4, 48, (n,), generator=g)
        am[i, :n] = 1
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, j in MASKED:
        assert BOUNDARY[i] <= j < LENGTHS[i]
        mask[i, j] = True
    masked = ids.clone()
    masked[mask] = MASK
    return {"input_ids": ids, "masked_ids": masked, "attention_mask": am, "mask": mask}


@pytest.fixture(scope="module")
def base():
    """A tiny LoRA Llama (LoRA adapters and token rows trainable) with non-zero adapters, and a seeded predictor."""
    r = recipe("hyb", "hybrid", jepa={"mask_ratio": 0.5})
    torch.manual_seed(0)
    model, _ = build_model(r, make_data(), log=quiet)
    with torch.no_grad():  # lora_B starts at 0 and the token deltas at 0: make every trainable tensor matter
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(1)
    return model, Predictor(H, 2)


def parts(base, ema: str):
    """Fresh copies of the model and predictor, and their momentum encoder: ``ema="moved"``: EMA tensors that
    differ from the online ones (as after training steps); ``"start"``: equal to them (as before the first step)."""
    model, pred = copy.deepcopy(base[0]), copy.deepcopy(base[1])
    model.train()
    mom = MomentumEncoder(model)
    if ema == "moved":
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for t in mom.ema.values():
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model, pred, mom


def target_model(model, mom: MomentumEncoder):
    """An independent momentum encoder: a copy of the model with the EMA values in its trainable parameters."""
    tm = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in tm.named_parameters():
            if p.requires_grad:
                p.copy_(mom.ema[n])
                p.requires_grad_(False)
    return tm.eval()


def final_hidden(model, ids: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
    """Final-layer hidden states of the PeftModel's Llama decoder stack (``LlamaModel``: no lm_head)."""
    return model.get_base_model().model(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state


def expected_loss(model, pred, mom, b):
    """The JEPA loss from its definition (see the module docstring), with the graph to the online parameters."""
    rows = torch.tensor([i for i, _ in MASKED])
    cols = torch.tensor([j for _, j in MASKED])
    online = final_hidden(model, b["masked_ids"], b["attention_mask"])
    with torch.no_grad():
        target = final_hidden(target_model(model, mom), b["input_ids"], b["attention_mask"])
    prediction = pred(online[rows, cols])
    tgt = target[rows, cols]
    assert prediction.shape == tgt.shape == (len(MASKED), H)
    return ((prediction - tgt) ** 2).sum() / (len(MASKED) * H), online, target


# the function under test, each path of it: (name, callable(model, pred, mom, batch) -> JEPA loss)
LOSSES = {
    "jepa_loss": lambda m, p, e, b: jepa_loss(m, p, e, b),
    "step_losses": lambda m, p, e, b: step_losses(m, p, e, b, sft=False, jepa=True)[1],
    "step_losses_sft_unstacked": lambda m, p, e, b: step_losses(m, p, e, b, sft=True, jepa=True, stack=False)[1],
    "step_losses_sft_stacked": lambda m, p, e, b: step_losses(m, p, e, b, sft=True, jepa=True, stack=True)[1],
}


def grads(loss, params) -> list[torch.Tensor]:
    for p in params:
        p.grad = None
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


@pytest.mark.parametrize("ema", ["moved", "start"])
@pytest.mark.parametrize("fn", list(LOSSES))
def test_jepa_loss_equals_its_definition(base, fn, ema):
    """Value and gradients (LoRA adapters, token rows, predictor) of the loss equal the by-hand formula. With the EMA
    equal to the online weights (``start``) a target read by the online weights with gradients would have the right
    value: only the gradients tell it from a detached EMA target."""
    model, pred, mom = parts(base, ema)
    b = tiny_batch()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad] + list(pred.named_parameters())
    params = [p for _, p in named]
    want, online, target = expected_loss(model, pred, mom, b)
    g_want = grads(want, params)

    # the formula tells the masked positions from the rest, and the full sequence from the masked one
    real = b["attention_mask"] == 1
    with torch.no_grad():
        all_real = ((pred(online[real]) - target[real]) ** 2).mean()
        t_masked = final_hidden(target_model(model, mom), b["masked_ids"], b["attention_mask"])
    w = float(want.detach())
    assert abs(float(all_real) - w) > 1e-2 * w, (float(all_real), w)  # far beyond the tolerance below
    assert (t_masked[b["mask"]] - target[b["mask"]]).abs().max() > 1e-2

    got = LOSSES[fn](model, pred, mom, b)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    g_got = grads(got, params)
    assert sum(int(g.abs().sum() > 0) for g in g_want) > 10  # the check below compares real gradients
    for (n, _), gw, gg in zip(named, g_want, g_got):
        torch.testing.assert_close(gg, gw, rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"gradient of {n}: {m}")
    for t in mom.ema.values():
        assert t.grad is None and not t.requires_grad


class EditedTarget(MomentumEncoder):
    """The momentum encoder with ``delta`` added to its final hidden states: a target changed where ``delta`` is."""

    delta: torch.Tensor

    def hidden(self, input_ids, attention_mask=None, layers=1):
        return super().hidden(input_ids, attention_mask, layers=layers) + self.delta


@pytest.mark.parametrize("fn", list(LOSSES))
def test_jepa_loss_reads_the_target_only_at_masked_positions(base, fn):
    """Changing the target's hidden states at every unmasked position (context, unmasked future, pad) leaves the loss
    unchanged; changing them at a single masked position changes it by what the formula says."""
    model, pred, _ = parts(base, "moved")
    b = tiny_batch()
    mom = EditedTarget(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for t in mom.ema.values():
            t.add_(0.05 * torch.randn(t.shape, generator=g))
    shape = (*b["input_ids"].shape, H)
    mom.delta = torch.zeros(shape)
    loss = LOSSES[fn](model, pred, mom, b).detach()

    mom.delta = 10.0 * torch.randn(shape, generator=g) * (~b["mask"]).unsqueeze(-1)
    assert mom.delta.abs().sum() > 0
    unmasked = LOSSES[fn](model, pred, mom, b).detach()
    torch.testing.assert_close(unmasked, loss, rtol=1e-6, atol=0)

    i, j = MASKED[3]
    d = torch.randn(H, generator=g)
    mom.delta = torch.zeros(shape)
    mom.delta[i, j] = d
    one = LOSSES[fn](model, pred, mom, b).detach()
    # by hand: only the term of (i, j) changes, from |p - t|^2 to |p - t - d|^2
    with torch.no_grad():
        p = pred(final_hidden(model, b["masked_ids"], b["attention_mask"])[i, j])
        t = final_hidden(target_model(model, mom), b["input_ids"], b["attention_mask"])[i, j]
        change = (((p - t - d) ** 2).sum() - ((p - t) ** 2).sum()) / (len(MASKED) * H)
    assert abs(float(change)) > 1e-3
    torch.testing.assert_close(one - loss, change, rtol=1e-4, atol=1e-6)
