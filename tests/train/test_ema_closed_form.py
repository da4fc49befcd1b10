"""The momentum encoder inside train(), held to the closed form of its updates (no loss has to fall).

After optimizer steps k = 0 .. N-1, with online weights theta_k after step k and momentum tau_k of step k,

    ema_N = (prod_k tau_k) * ema_0 + sum_k (1 - tau_k) * (prod_{j > k} tau_j) * theta_k,   ema_0 = the start weights.

The online weights after each optimizer step are recorded by an optimizer step hook on the run's own optimizer;
tau_k is written out from the recipe (cosine from ema_tau to ema_tau_end over the run), not read from the code.
"""

from __future__ import annotations

import math

import pytest
import torch

from ehr_assets.train import loop, train

from .test_training import make_data, quiet, recipe

STEPS, TAU0, TAU1 = 4, 0.3, 0.8  # tau far from 1 and changing every step: each step's weights count in ema_N


def taus() -> list[float]:
    """tau of steps 0 .. STEPS-1: cosine from TAU0 (first step) to TAU1 (last step)."""
    return [TAU1 - (TAU1 - TAU0) * (1 + math.cos(math.pi * k / (STEPS - 1))) / 2 for k in range(STEPS)]


def closed_form(start: dict[str, torch.Tensor], online: list[dict[str, torch.Tensor]], ts: list[float]) -> dict:
    out = {}
    for n, s in start.items():
        e = math.prod(ts) * s.double()
        for k, tk in enumerate(ts):
            e = e + (1 - tk) * math.prod(ts[k + 1 :]) * online[k][n].double()
        out[n] = e
    return out


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_ema_after_n_steps_is_the_closed_form_of_n_updates(tmp_path, monkeypatch, finetune):
    """train() with gradient accumulation (2 micro-batches: one EMA update per optimizer step, not per micro-batch):
    the final EMA weights equal the closed form of STEPS updates from the start weights, to fp32 rounding."""
    seen: dict = {"online": []}
    real = loop.build_parts

    def recording_build_parts(*a, **kw):
        parts = real(*a, **kw)
        seen["parts"] = parts
        seen["start"] = _trainable(parts.model)
        seen["ema0"] = {n: t.clone() for n, t in parts.momentum.ema.items()}
        parts.optim.register_step_post_hook(lambda opt, args, kwargs: seen["online"].append(_trainable(parts.model)))
        return parts

    monkeypatch.setattr(loop, "build_parts", recording_build_parts)
    r = recipe(
        "hyb",
        "hybrid",
        finetune=finetune,
        training={"steps": STEPS, "batch_size": 2, "grad_accum": 2, "seq_len": 32, "monitor_nodes": 0},
        jepa={"mask_ratio": 0.5, "ema_tau": TAU0, "ema_tau_end": TAU1},
        optimizer={"lr": 5e-2, "schedule": "constant", "warmup_steps": 0},
    )
    res = train(r, make_data(), tmp_path / "ck", log=quiet)
    assert [c["tau"] for c in res.loss_curve] == pytest.approx(taus(), rel=1e-12)

    start, online, ema = seen["start"], seen["online"], seen["parts"].momentum.ema
    assert len(online) == STEPS  # one optimizer step per training step
    assert ema.keys() == start.keys() and start
    for n in start:
        assert torch.equal(seen["ema0"][n], start[n]), f"EMA of {n} did not start at the online weights"
    want = closed_form(start, online, taus())

    # the run moved the weights enough that the closed form tells the right updates from near misses
    moved = [n for n in start if not torch.allclose(online[-1][n], start[n], rtol=0, atol=1e-3)]
    assert len(moved) >= len(start) // 2, (len(moved), len(start))
    swapped = closed_form(start, online, [1 - t for t in taus()])
    one_less = closed_form(start, online[:-1], taus()[:-1])
    for other in (swapped, one_less, start):
        assert max(float((other[n] - want[n]).abs().max()) for n in moved) > 1e-3

    for n, e in ema.items():
        torch.testing.assert_close(e.double(), want[n], rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
