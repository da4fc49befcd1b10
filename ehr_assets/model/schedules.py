"""Schedules of a run, as pure functions of the optimizer step: the EMA momentum ``tau`` and the learning rate."""

from __future__ import annotations

import math

from ..specs import Jepa, Optimizer


def tau_at(step: int, steps: int, jepa: Jepa) -> float:
    """EMA momentum after optimizer step ``step`` (0-based): cosine from ema_tau to ema_tau_end, else constant."""
    if jepa.ema_tau_end is None:
        return float(jepa.ema_tau)
    k = min(max(step / max(1, steps - 1), 0.0), 1.0)
    return float(jepa.ema_tau_end - (jepa.ema_tau_end - jepa.ema_tau) * (1 + math.cos(math.pi * k)) / 2)


def lr_factor(step: int, opt: Optimizer, steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based): linear warmup, then constant/cosine/linear."""
    w = opt.warmup_steps
    if step < w:
        return (step + 1) / w
    if opt.schedule == "constant":
        return 1.0
    p = (step - w) / max(1, steps - w)
    if opt.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    return 1.0 - p
