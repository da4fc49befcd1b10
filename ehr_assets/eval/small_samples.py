"""Small samples told honestly: the rule that decides whether a held-out metric is scored at all.

Every metric row carries its held-out ``n`` and ``n_pos`` (positives; events for a survival task). Below the
project's declared minimum (``project.yaml`` ``small_samples``: by default 10 positives and 10 negatives held out,
:class:`ehr_assets.specs.SmallSamples`) the row is **too few to score**: ``too_few`` is true in the
``probe_metrics`` table and the CSV, the human tables print ``too few (p+/q-)`` instead of a number, and the paired
differences, the gap closed and the study leave it out and say how many they left out. The value is kept in the
table (flagged) for whoever wants to look; nothing downstream uses it. Nothing here imports Dagster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..specs import SmallSamples

__all__ = ["DEFAULT", "cell", "left_out_note", "too_few"]

DEFAULT = SmallSamples()


def too_few(n, n_pos, minimum: SmallSamples | None = None):
    """True where fewer than ``minimum.min_positives`` positives or ``minimum.min_negatives`` negatives were held
    out (scalars or arrays; a missing count is too few)."""
    m = minimum or DEFAULT
    n = np.asarray(pd.to_numeric(pd.Series(np.atleast_1d(n)), errors="coerce"), dtype=float)
    pos = np.asarray(pd.to_numeric(pd.Series(np.atleast_1d(n_pos)), errors="coerce"), dtype=float)
    out = ~(np.isfinite(n) & np.isfinite(pos) & (pos >= m.min_positives) & (n - pos >= m.min_negatives))
    return bool(out[0]) if np.ndim(n_pos) == 0 and np.ndim(n) == 0 else out


def cell(n, n_pos) -> str:
    """What a human table shows instead of a too-few metric: ``too few (3+/7-)``."""
    if pd.isna(n) or pd.isna(n_pos):
        return "too few"
    return f"too few ({int(n_pos)}+/{int(n) - int(n_pos)}-)"


def left_out_note(k: int, minimum: SmallSamples | None = None) -> str:
    """The note of a pooled row that left ``k`` task x horizon pairs out (empty when none)."""
    m = minimum or DEFAULT
    if not k:
        return ""
    return f"{k} task x horizon pair(s) left out: too few to score (< {m.min_positives} pos / {m.min_negatives} neg)"
