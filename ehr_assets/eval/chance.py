"""The science path's smoke test: does every trained recipe beat chance on the tasks where counting codes does?

A recipe whose embeddings are read at the wrong position, or whose rows are shuffled against the decision nodes,
still trains, embeds and probes without an error -- its AUROC just sits at 0.5. The count baseline is the witness
that a task is learnable from the record: on the tasks where the baseline's headline metric (AUROC, Harrell's C)
has a bootstrap CI above 0.5, every trained recipe's mean headline metric over those tasks must have one too.
:func:`chance_table` computes that with the paired draws of :mod:`ehr_assets.eval.paired` (one draw of held-out
subjects for every task and recipe, so the tasks pool within a replicate); ``paired_differences`` turns it into the
asset check ``recipes_beat_chance``. The oracles are not tested (they read no embeddings). Nothing here imports
Dagster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .benchmark import BASELINE, ORACLE
from .paired import ScoredTask
from .resample import percentile_ci

__all__ = ["CHANCE", "COLUMNS", "chance_table", "learnable_tasks"]

CHANCE = 0.5
COLUMNS = ["recipe", "tasks", "mean_value", "ci_low", "ci_high", "passed"]


def learnable_tasks(scored: list[ScoredTask]) -> list[ScoredTask]:
    """The tasks and horizons whose count-baseline headline metric has a bootstrap CI entirely above chance."""
    out = []
    for g in scored:
        if BASELINE in g.reps and percentile_ci(g.reps[BASELINE])[0] > CHANCE:
            out.append(g)
    return out


def chance_table(scored: list[ScoredTask]) -> pd.DataFrame:
    """:data:`COLUMNS`: per trained recipe (not the baseline, not an oracle), its mean headline metric over
    :func:`learnable_tasks`, the percentile CI of that mean over the shared replicates, and whether the CI lies
    above chance. No rows when no task is learnable by counting codes."""
    tasks = learnable_tasks(scored)
    recipes = sorted({r for g in tasks for r in g.point if r != BASELINE and r.split("_")[0] != ORACLE})
    rows = []
    for r in recipes:
        have = [g for g in tasks if r in g.point]
        mean = float(np.mean([g.point[r] for g in have]))
        lo, hi, _ = percentile_ci(np.mean(np.vstack([g.reps[r] for g in have]), axis=0))
        rows.append((r, len(have), mean, lo, hi, bool(np.isfinite(lo) and lo > CHANCE)))
    return pd.DataFrame(rows, columns=COLUMNS)
