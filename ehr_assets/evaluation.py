"""Probe-metrics stage: fit linear probes on frozen features at decision nodes and score them on held_out.

For every task and horizon of a cohort: rows of the train split fit the probe, tuning chooses its regularization,
held_out is scored (see :mod:`ehr_assets.probes`). Features are any matrix aligned with the decision nodes: a
recipe's embeddings or the count baseline. Returns long-format metric rows and the held-out predictions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from meds import held_out_split, train_split, tuning_split

from .probes import Split, binary_probe, survival_probe

METRIC_COLUMNS = ["cohort", "recipe", "task", "horizon_days", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "note"]
PREDICTION_COLUMNS = [
    "cohort", "recipe", "task", "horizon_days", "subject_id", "prediction_time", "boolean_value", "float_value",
    "predicted_boolean_probability", "predicted_risk", "source_cohort",
]


def _split(rows: pd.DataFrame, X: np.ndarray, kind: str) -> Split:
    feats = X[rows["_row"].to_numpy()]
    if kind == "binary":
        return Split(X=feats, groups=rows["subject_id"].to_numpy(), y=rows["boolean_value"].to_numpy().astype(int))
    return Split(
        X=feats,
        groups=rows["subject_id"].to_numpy(),
        time=rows["float_value"].to_numpy().astype(float),
        event=rows["boolean_value"].to_numpy().astype(bool),
    )


def evaluate(
    cohort: str,
    recipe: str,
    features: np.ndarray,
    nodes: pd.DataFrame,
    labels: pd.DataFrame,
    task_kinds: dict[str, str],
    *,
    seed: int = 0,
    n_bootstrap: int = 200,
    log: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every (task, horizon) in ``labels``. ``features[i]`` belongs to ``nodes.iloc[i]``."""
    if len(features) != len(nodes):
        raise ValueError(f"{recipe}: {len(features)} feature rows for {len(nodes)} decision nodes")
    key = nodes[["subject_id", "prediction_time"]].assign(_row=np.arange(len(nodes)))
    lab = labels.merge(key, on=["subject_id", "prediction_time"], how="inner")
    metric_rows, pred_frames = [], []
    for (task, horizon), rows in lab.groupby(["task", "horizon_days"], sort=True):
        kind = task_kinds[task]
        parts = {s: rows[rows["split"] == s] for s in (train_split, tuning_split, held_out_split)}
        tr, tu, te = (_split(parts[s], features, kind) for s in (train_split, tuning_split, held_out_split))
        probe = binary_probe if kind == "binary" else survival_probe
        res = probe(tr, tu, te, seed=seed, n_bootstrap=n_bootstrap)
        for m in res.metrics:
            metric_rows.append(
                (cohort, recipe, task, int(horizon), m.metric, m.value, m.ci_low, m.ci_high, m.n, m.n_pos, m.note)
            )
        test = parts[held_out_split]
        pred = test[["subject_id", "prediction_time", "boolean_value", "float_value", "source_cohort"]].copy()
        pred.insert(0, "horizon_days", int(horizon))
        pred.insert(0, "task", task)
        pred.insert(0, "recipe", recipe)
        pred.insert(0, "cohort", cohort)
        scores = np.asarray(res.test_scores, dtype=float)
        pred["predicted_boolean_probability"] = scores if kind == "binary" else np.nan
        pred["predicted_risk"] = scores if kind == "survival" else np.nan
        pred_frames.append(pred[PREDICTION_COLUMNS])
        if log:
            head = res.metrics[0]
            log(f"{recipe} {task}@{horizon}d: {head.metric}={head.value:.3f} (n={head.n}, pos={head.n_pos})")
    metrics = pd.DataFrame(metric_rows, columns=METRIC_COLUMNS)
    preds = pd.concat(pred_frames, ignore_index=True) if pred_frames else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return metrics, preds


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """A small markdown rendering (no tabulate dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [floatfmt.format(v) if isinstance(v, float) and v == v else ("" if v is None else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
