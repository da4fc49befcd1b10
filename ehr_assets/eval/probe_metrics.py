"""Probe-metrics stage: fit linear probes on frozen features at decision nodes and score them on held_out.

For every task and horizon of a cohort: rows of the train split fit the probe, tuning chooses its regularization,
held_out is scored (see :mod:`ehr_assets.eval.probes` and :mod:`ehr_assets.eval.survival`). Features are any matrix
aligned with the decision nodes: a recipe's embeddings, the count baseline or an oracle's latent state. Returns
long-format metric rows (the ``probe_metrics`` table) and the held-out predictions (``probe_predictions``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import pandas as pd
from meds import held_out_split, train_split, tuning_split

from ..progress import Progress, duration
from ..specs import SmallSamples
from .fallbacks import probe_fallbacks, with_fallbacks
from .probes import Split, binary_probe
from .small_samples import too_few
from .survival import survival_probe

__all__ = ["METRIC_COLUMNS", "PREDICTION_COLUMNS", "evaluate"]

METRIC_COLUMNS = [
    "cohort",
    "recipe",
    "task",
    "horizon_days",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "n_pos",
    "too_few",
    "note",
]
PREDICTION_COLUMNS = [
    "cohort",
    "recipe",
    "task",
    "horizon_days",
    "subject_id",
    "prediction_time",
    "boolean_value",
    "float_value",
    "predicted_boolean_probability",
    "predicted_risk",
    "source_cohort",
]


# the survival probe's alpha grid, to name the alphas whose Cox fit failed (ehr_assets.eval.fallbacks)
SURVIVAL_ALPHA_GRID = tuple(inspect.signature(survival_probe).parameters["alpha_grid"].default)


def _fallback_notes(kind: str, splits: list[Split], params: dict) -> list[str]:
    """The probe's fallbacks (:mod:`ehr_assets.eval.fallbacks`): non-finite feature values it was given, and what
    its ``params`` say it had to do instead of its protocol."""
    n_nonfinite = int(sum(np.size(s.X) - np.isfinite(np.asarray(s.X, dtype=np.float64)).sum() for s in splits))
    n_features = int(np.asarray(splits[0].X).shape[1]) if np.ndim(splits[0].X) == 2 else 0
    return probe_fallbacks(kind, params, n_nonfinite, n_features, SURVIVAL_ALPHA_GRID)


def _split(rows: pd.DataFrame, X: np.ndarray, kind: str) -> Split:
    """The probe input of one split: the feature rows of ``rows`` and their labels (binary) or time/event."""
    feats = X[rows["_row"].to_numpy()]
    if kind == "binary":
        return Split(X=feats, groups=rows["subject_id"].to_numpy(), y=rows["boolean_value"].to_numpy().astype(int))
    return Split(
        X=feats,
        groups=rows["subject_id"].to_numpy(),
        time=rows["float_value"].to_numpy().astype(float),
        event=rows["boolean_value"].to_numpy().astype(bool),
    )


def _predictions(test: pd.DataFrame, scores, kind: str, cohort: str, recipe: str, task: str, horizon) -> pd.DataFrame:
    """The held-out rows with the probe's score: a probability for a binary task, a risk for a survival task."""
    pred = test[["subject_id", "prediction_time", "boolean_value", "float_value", "source_cohort"]].copy()
    pred.insert(0, "horizon_days", int(horizon))
    pred.insert(0, "task", task)
    pred.insert(0, "recipe", recipe)
    pred.insert(0, "cohort", cohort)
    scores = np.asarray(scores, dtype=float)
    pred["predicted_boolean_probability"] = scores if kind == "binary" else np.nan
    pred["predicted_risk"] = scores if kind == "survival" else np.nan
    return pred[PREDICTION_COLUMNS]


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
    minimum: SmallSamples | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every (task, horizon) in ``labels``. ``features[i]`` belongs to ``nodes.iloc[i]``. Each metric row
    carries its held-out ``n``, ``n_pos`` and ``too_few`` (below ``minimum``, :mod:`.small_samples`)."""
    if len(features) != len(nodes):
        raise ValueError(f"{recipe}: {len(features)} feature rows for {len(nodes)} decision nodes")
    key = nodes[["subject_id", "prediction_time"]].assign(_row=np.arange(len(nodes)))
    lab = labels.merge(key, on=["subject_id", "prediction_time"], how="inner")
    metric_rows, pred_frames = [], []
    groups = lab.groupby(["task", "horizon_days"], sort=True)
    progress = Progress(f"{recipe} probes", groups.ngroups, None, unit="tasks")
    for (task, horizon), rows in groups:
        kind = task_kinds[task]
        parts = {s: rows[rows["split"] == s] for s in (train_split, tuning_split, held_out_split)}
        tr, tu, te = (_split(parts[s], features, kind) for s in (train_split, tuning_split, held_out_split))
        probe = binary_probe if kind == "binary" else survival_probe
        res = probe(tr, tu, te, seed=seed, n_bootstrap=n_bootstrap)
        for m in with_fallbacks(res.metrics, _fallback_notes(kind, [tr, tu, te], res.params)):
            few = too_few(m.n, m.n_pos, minimum)
            metric_rows.append(
                (cohort, recipe, task, int(horizon), m.metric, m.value, m.ci_low, m.ci_high, m.n, m.n_pos, few, m.note)
            )
        pred_frames.append(_predictions(parts[held_out_split], res.test_scores, kind, cohort, recipe, task, horizon))
        progress.advance()
        if log:  # one line per task, with how far the asset is
            head = res.metrics[0]
            log(
                f"{recipe} {task}@{horizon}d: {head.metric}={head.value:.3f} (n={head.n}, pos={head.n_pos}) "
                f"| {progress.status()}, {duration(progress.elapsed())} so far"
            )
    metrics = pd.DataFrame(metric_rows, columns=METRIC_COLUMNS)
    metrics["too_few"] = metrics["too_few"].astype(bool)
    preds = pd.concat(pred_frames, ignore_index=True) if pred_frames else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return metrics, preds
