"""The science-path smoke test: trained recipes must beat chance where counting codes does; embeddings whose rows
are shuffled against the nodes do not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr_assets.eval.chance import chance_table, learnable_tasks
from ehr_assets.eval.paired import score_tasks

from .test_paired import predictions


def shuffled(preds: pd.DataFrame, recipe: str, seed: int = 0) -> pd.DataFrame:
    """``recipe``'s scores permuted within each task: its embeddings' rows no longer belong to their nodes."""
    rng = np.random.default_rng(seed)
    out = preds.copy()
    for _, rows in out[out["recipe"] == recipe].groupby(["task", "horizon_days"]):
        for col in ("predicted_boolean_probability", "predicted_risk"):
            out.loc[rows.index, col] = rng.permutation(rows[col].to_numpy())
    return out


def test_trained_recipes_beat_chance_and_shuffled_rows_do_not():
    preds = predictions(seed=3)
    preds = pd.concat([preds, shuffled(preds[preds["recipe"] == "sft"], "sft").assign(recipe="broken")])
    scored = score_tasks(preds, n_bootstrap=300)
    assert len(learnable_tasks(scored)) == 3  # the baseline beats chance on every task here
    table = chance_table(scored).set_index("recipe")
    assert set(table.index) == {"sft", "jepa", "sft_seed1", "jepa_seed1", "broken"}  # no baseline, no oracle
    assert table.loc[["sft", "jepa", "sft_seed1", "jepa_seed1"], "passed"].all()
    assert not table.loc["broken", "passed"] and table.loc["broken", "ci_low"] < 0.5 < table.loc["sft", "ci_low"]
    assert table.loc["sft", "tasks"] == 3


def test_only_tasks_the_baseline_learns_are_tested():
    preds = predictions(seed=4)
    base = (preds["recipe"] == "count_baseline") & (preds["horizon_days"] == 90)
    preds = pd.concat([preds[~base], shuffled(preds[base], "count_baseline")])  # the baseline at chance at 90 d
    scored = score_tasks(preds, n_bootstrap=300)
    assert {(g.task, g.horizon) for g in learnable_tasks(scored)} == {("mortality", 730), ("survival", 0)}
    assert (chance_table(scored)["tasks"] == 2).all()
    no_task = [g for g in scored if (g.task, g.horizon) == ("mortality", 90)]
    assert chance_table(no_task).empty
