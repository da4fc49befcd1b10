"""Paired differences between recipes, with subject-level bootstrap CIs: the evidence a comparison needs.

A recipe's CI alone cannot say whether it beats another: the two CIs overlap even when one recipe wins on almost
every resample, because both move with the patients drawn. Here every recipe's held-out predictions
(``probe_predictions``) are scored under the *same* bootstrap draws of held-out subjects
(:mod:`ehr_assets.eval.resample`), so each replicate gives a difference on the same patients.

For every task and horizon (AUROC for binary tasks, Harrell's C for survival), :func:`paired_differences` gives

* ``delta`` rows: ``recipe - reference`` for each reference of :data:`REFERENCES` -- the count baseline (does the
  encoder beat counting codes?) and ``sft`` (does JEPA add to next-token training?). A replicate recipe
  (``jepa_seed1``) is compared with the same seed's reference when there is one (``sft_seed1``);
* ``gap_closed`` rows: ``(recipe - baseline) / (oracle - baseline)`` (:mod:`ehr_assets.eval.benchmark`), its CI from
  the same replicates; undefined where the point gap is below ``MIN_GAP``;
* pooled rows (``scope``): each recipe's mean AUROC over the binary tasks at horizons >= ``LONG_HORIZON_DAYS``
  (``mean`` rows, no reference), the mean delta over the same tasks, and the pooled gap closed
  ``sum(recipe - baseline) / sum(oracle - baseline)`` over all tasks and over the long horizons, each replicate
  pooling the same draw of subjects across tasks.

Each row carries the 95 % percentile interval, a two-sided bootstrap p-value (twice the smaller share of replicates
on either side of 0; at best ``1 / B``), the number of rows, subjects and positives scored and the replicates defined.
Rows where a recipe has no score (its probe could not be fit) are left out of that recipe's comparisons, and the note
says so. A task and horizon with too few held-out positives or negatives (:mod:`ehr_assets.eval.small_samples`)
gets delta rows without an estimate (``too_few``) and no gap-closed row, and is left out of the pooled rows, whose
note says how many.
Nothing here imports Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import keys
from ..specs import SmallSamples
from .benchmark import BASELINE, LONG_HORIZON_DAYS, MIN_GAP, ORACLE
from .resample import bootstrap_p_value, percentile_ci, row_weights, subject_draws, weighted_auroc, weighted_harrell
from .small_samples import cell, left_out_note, too_few

__all__ = [
    "COLUMNS",
    "N_BOOTSTRAP",
    "REFERENCES",
    "PooledDifference",
    "SFT",
    "ScoredTask",
    "mean_difference",
    "paired_differences",
    "reference_for",
    "score_tasks",
]

SFT = "sft"
REFERENCES = (BASELINE, SFT)
N_BOOTSTRAP = 1000
COLUMNS = [
    "scope",
    "task",
    "horizon_days",
    "metric",
    "statistic",
    "recipe",
    "reference",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "recipe_value",
    "reference_value",
    "n",
    "n_subjects",
    "n_pos",
    "n_boot",
    "too_few",
    "note",
]
POOLED_LONG = f"(binary, h>={LONG_HORIZON_DAYS})"
POOLED_ALL = "(all)"


def _is_oracle(recipe: str) -> bool:
    return recipe == ORACLE or recipe.startswith(f"{ORACLE}_")


def reference_for(recipe: str, reference: str, recipes) -> str | None:
    """The reference ``recipe`` is compared with, or None when the pair is not reported: nothing is compared with
    itself or with its own seed replicates, the baseline and the oracles are not compared with ``sft``, and a seed
    replicate ``<r>_seed<k>`` is compared with ``<reference>_seed<k>`` when that replicate exists."""
    recipes = set(recipes)
    base, seed = keys.parse_replicate(recipe)
    if base == reference or recipe == reference:
        return None
    if reference != BASELINE and (recipe == BASELINE or _is_oracle(recipe)):
        return None
    if seed is not None and keys.replicate(reference, seed) in recipes:
        return keys.replicate(reference, seed)
    return reference if reference in recipes else None


@dataclass
class ScoredTask:
    """One task and horizon: each recipe's point value and bootstrap replicates on the rows it could score."""

    task: str
    horizon: int
    metric: str
    point: dict[str, float] = field(default_factory=dict)
    reps: dict[str, np.ndarray] = field(default_factory=dict)
    n: int = 0
    n_subjects: int = 0
    note: str = ""
    n_pos: int = 0  # held-out positives (survival: events) among the n rows
    too_few: bool = False  # below the project's small-sample minimum: left out (ehr_assets.eval.small_samples)


def score_task(
    task, horizon, rows: pd.DataFrame, draws: tuple[np.ndarray, np.ndarray], minimum: SmallSamples | None = None
) -> ScoredTask:
    """Every recipe's headline metric on the rows that every recipe scored (recipes whose probe was not fit at all
    are left out and named in the note), under no weights and under each bootstrap draw; with the held-out
    positives and whether they are too few (``minimum``, :mod:`.small_samples`)."""
    binary = rows["predicted_boolean_probability"].notna().any()
    col = "predicted_boolean_probability" if binary else "predicted_risk"
    wide = rows.pivot_table(index=["subject_id", "prediction_time"], columns="recipe", values=col, aggfunc="first")
    wide = wide.reindex(columns=sorted(rows["recipe"].unique()))
    unfit = [r for r in wide.columns if wide[r].isna().all()]
    wide = wide.drop(columns=unfit)
    keep = wide.notna().all(axis=1)
    notes = [f"no predictions from {', '.join(unfit)} (probe not fit)"] if unfit else []
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} row(s) without a score from every recipe left out")
    wide = wide[keep]
    truth = rows.drop_duplicates(["subject_id", "prediction_time"]).set_index(["subject_id", "prediction_time"])
    truth = truth.loc[wide.index]
    subjects = wide.index.get_level_values("subject_id").to_numpy()
    W = row_weights(draws, subjects)
    out = ScoredTask(task, int(horizon), "auroc" if binary else "c_index", n=len(wide), note="; ".join(notes))
    out.n_subjects = int(np.unique(subjects).size)
    out.n_pos = int(truth["boolean_value"].astype(bool).sum())
    out.too_few = bool(too_few(out.n, out.n_pos, minimum))
    for r in wide.columns:
        s = wide[r].to_numpy(dtype=np.float64)
        if binary:
            y = truth["boolean_value"].to_numpy(dtype=bool)
            out.point[r] = float(weighted_auroc(y, s)[0])
            out.reps[r] = weighted_auroc(y, s, W)
        else:
            e = truth["boolean_value"].to_numpy(dtype=bool)
            t = truth["float_value"].to_numpy(dtype=np.float64)
            out.point[r] = float(weighted_harrell(e, t, s)[0])
            out.reps[r] = weighted_harrell(e, t, s, W)
    return out


@dataclass
class PooledDifference:
    """A difference averaged over tasks: the point estimate, its bootstrap replicates (the same draw for both
    sides), the two sides' mean values and how many task x horizon terms were averaged."""

    estimate: float
    reps: np.ndarray
    recipe_value: float
    reference_value: float
    n_terms: int


def mean_difference(pairs: list[tuple[ScoredTask, str]], recipe: str) -> PooledDifference:
    """``recipe`` minus each task's reference (``pairs``: (scored task, reference name), non-empty), averaged over
    the tasks, point and replicate by replicate."""
    est = float(np.mean([g.point[recipe] - g.point[a] for g, a in pairs]))
    reps = np.mean(np.vstack([g.reps[recipe] - g.reps[a] for g, a in pairs]), axis=0)
    rv = float(np.mean([g.point[recipe] for g, _ in pairs]))
    fv = float(np.mean([g.point[a] for g, a in pairs]))
    return PooledDifference(est, reps, rv, fv, len(pairs))


def _row(est: float, reps: np.ndarray, **fields) -> dict:
    """One output row: ``fields`` (the :data:`COLUMNS` that describe it), the estimate and its interval, the
    p-value of a delta and the replicates defined."""
    lo, hi, k = percentile_ci(reps)
    p = bootstrap_p_value(reps) if fields["statistic"] == "delta" else float("nan")
    return {**fields, "estimate": float(est), "ci_low": lo, "ci_high": hi, "p_value": p, "n_boot": k}


def _fields(g: ScoredTask, statistic: str, recipe: str, reference: str, ref_value: float, note: str) -> dict:
    """The descriptive columns of a per-task row."""
    return dict(
        scope="task",
        task=g.task,
        horizon_days=g.horizon,
        metric=g.metric,
        statistic=statistic,
        recipe=recipe,
        reference=reference,
        recipe_value=g.point[recipe],
        reference_value=ref_value,
        n=g.n,
        n_subjects=g.n_subjects,
        n_pos=g.n_pos,
        too_few=g.too_few,
        note=note,
    )


def _group_rows(g: ScoredTask, references) -> list[dict]:
    """The delta rows (each recipe against each reference) and gap-closed rows of one task and horizon; for a task
    with too few held-out positives or negatives, rows without an estimate that say so."""
    rows = []
    recipes = list(g.point)
    if g.too_few:
        note = f"{cell(g.n, g.n_pos)} to score: left out"
        none = np.full(1, np.nan)
        for ref in references:
            for r in recipes:
                against = reference_for(r, ref, recipes)
                if against is not None:
                    rows.append(_row(np.nan, none, **_fields(g, "delta", r, against, g.point[against], note)))
        return rows
    for ref in references:
        for r in recipes:
            against = reference_for(r, ref, recipes)
            if against is None:
                continue
            est = g.point[r] - g.point[against]
            reps = g.reps[r] - g.reps[against]
            rows.append(_row(est, reps, **_fields(g, "delta", r, against, g.point[against], g.note)))
    if BASELINE in g.point and ORACLE in g.point:
        gap = g.point[ORACLE] - g.point[BASELINE]
        for r in recipes:
            if r in (BASELINE, ORACLE):
                continue
            if not (np.isfinite(gap) and gap >= MIN_GAP):
                est, reps, note = np.nan, np.full(1, np.nan), f"gap oracle - baseline {gap:.3f} < {MIN_GAP}"
            else:
                est = (g.point[r] - g.point[BASELINE]) / gap
                with np.errstate(invalid="ignore", divide="ignore"):
                    reps = (g.reps[r] - g.reps[BASELINE]) / (g.reps[ORACLE] - g.reps[BASELINE])
                note = g.note
            rows.append(_row(est, reps, **_fields(g, "gap_closed", r, BASELINE, g.point[BASELINE], note)))
    return rows


def _pooled_deltas(groups: list[ScoredTask], references, long_days: int, left_out: str = "") -> list[dict]:
    """Mean delta over the long-horizon binary tasks, per recipe and reference; each replicate averages the same
    draw across tasks (a replicate undefined on any task is left out)."""
    long = [g for g in groups if g.metric == "auroc" and g.horizon >= long_days]
    recipes = sorted({r for g in long for r in g.point})
    rows = []
    for ref in references:
        for r in recipes:
            pairs = [(g, reference_for(r, ref, list(g.point))) for g in long if r in g.point]
            pairs = [(g, a) for g, a in pairs if a is not None]
            if not pairs:
                continue
            against = pairs[0][1]
            d = mean_difference(pairs, r)
            n_subj = max(g.n_subjects for g, _ in pairs)
            fields = dict(scope="pooled_long", task=POOLED_LONG, horizon_days=long_days, metric="auroc")
            fields |= dict(statistic="delta", recipe=r, reference=against)
            fields |= dict(recipe_value=d.recipe_value, reference_value=d.reference_value)
            note = "; ".join(x for x in (f"mean over {d.n_terms} task x horizon pairs", left_out) if x)
            fields |= dict(n=d.n_terms, n_subjects=n_subj, n_pos=None, too_few=False, note=note)
            rows.append(_row(d.estimate, d.reps, **fields))
    return rows


def _pooled_means(groups: list[ScoredTask], long_days: int, left_out: str = "") -> list[dict]:
    """Each recipe's mean AUROC over the long-horizon binary tasks it scored (``statistic`` ``mean``, no
    reference), its CI from the same draws as the deltas: the level the deltas and the gap closed start from."""
    long = [g for g in groups if g.metric == "auroc" and g.horizon >= long_days]
    rows = []
    for r in sorted({r for g in long for r in g.point}):
        use = [g for g in long if r in g.point]
        est = float(np.mean([g.point[r] for g in use]))
        reps = np.mean(np.vstack([g.reps[r] for g in use]), axis=0)
        fields = dict(scope="pooled_long", task=POOLED_LONG, horizon_days=long_days, metric="auroc")
        fields |= dict(statistic="mean", recipe=r, reference="", recipe_value=est, reference_value=np.nan)
        note = "; ".join(x for x in (f"mean over {len(use)} task x horizon pairs", left_out) if x)
        fields |= dict(n=len(use), n_subjects=max(g.n_subjects for g in use), n_pos=None, too_few=False, note=note)
        rows.append(_row(est, reps, **fields))
    return rows


def _pooled_gaps(groups: list[ScoredTask], long_days: int, left_out: str = "") -> list[dict]:
    """Pooled gap closed, ``sum(recipe - baseline) / sum(oracle - baseline)`` over the tasks whose point gap is
    defined, over all tasks and over the long-horizon binary tasks."""
    ok = [g for g in groups if {BASELINE, ORACLE} <= set(g.point) and g.point[ORACLE] - g.point[BASELINE] >= MIN_GAP]
    rows = []
    for scope, label, sel in (
        ("pooled_all", POOLED_ALL, ok),
        ("pooled_long", POOLED_LONG, [g for g in ok if g.metric == "auroc" and g.horizon >= long_days]),
    ):
        for r in sorted({r for g in sel for r in g.point} - {BASELINE, ORACLE}):
            use = [g for g in sel if r in g.point]
            if not use:
                continue
            num = sum(g.point[r] - g.point[BASELINE] for g in use)
            den = sum(g.point[ORACLE] - g.point[BASELINE] for g in use)
            rnum = np.sum([g.reps[r] - g.reps[BASELINE] for g in use], axis=0)
            rden = np.sum([g.reps[ORACLE] - g.reps[BASELINE] for g in use], axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                reps = rnum / rden
            rv = float(np.mean([g.point[r] for g in use]))
            fv = float(np.mean([g.point[BASELINE] for g in use]))
            n_subj = max(g.n_subjects for g in use)
            fields = dict(scope=scope, task=label, horizon_days=long_days if scope == "pooled_long" else 0)
            fields |= dict(metric="headline", statistic="gap_closed", recipe=r, reference=BASELINE)
            fields |= dict(recipe_value=rv, reference_value=fv, n=len(use), n_subjects=n_subj, n_pos=None)
            note = "; ".join(x for x in (f"pooled over {len(use)} task x horizon pairs", left_out) if x)
            rows.append(_row(num / den, reps, note=note, too_few=False, **fields))
    return rows


def score_tasks(
    preds: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, minimum: SmallSamples | None = None
) -> list[ScoredTask]:
    """Every task and horizon of ``preds`` (the ``probe_predictions`` rows of one cohort) scored for every recipe,
    under one draw of ``n_bootstrap`` resamples of the held-out subjects (``seed``) shared by all of them; each
    flagged ``too_few`` below ``minimum``."""
    if preds.empty:
        return []
    draws = subject_draws(preds["subject_id"].to_numpy(), n_bootstrap, seed)
    groups = preds.groupby(["task", "horizon_days"], sort=True)
    return [score_task(task, h, rows, draws, minimum) for (task, h), rows in groups]


def paired_differences(
    preds: pd.DataFrame,
    *,
    references=REFERENCES,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    long_horizon_days: int = LONG_HORIZON_DAYS,
    scored: list[ScoredTask] | None = None,
    minimum: SmallSamples | None = None,
) -> pd.DataFrame:
    """The :data:`COLUMNS` table of ``preds`` (the ``probe_predictions`` rows of one cohort, every recipe): per task
    and horizon, each recipe minus each reference and each recipe's gap closed, then the pooled rows (each
    recipe's mean long-horizon AUROC, the mean deltas, the pooled gaps closed); all with
    paired subject-bootstrap CIs from one draw of ``n_bootstrap`` resamples of the held-out subjects (``seed``).
    ``scored``: :func:`score_tasks` of ``preds`` when the caller already has it. A task and horizon with too few
    held-out positives or negatives (``minimum``) gets rows without an estimate and stays out of the pooled rows,
    whose note says how many were left out."""
    groups = score_tasks(preds, n_bootstrap, seed, minimum) if scored is None else scored
    if not groups:
        return pd.DataFrame(columns=COLUMNS)
    rows = [r for g in groups for r in _group_rows(g, references)]
    ok = [g for g in groups if not g.too_few]
    long_out = sum(g.too_few and g.metric == "auroc" and g.horizon >= long_horizon_days for g in groups)
    rows += _pooled_means(ok, long_horizon_days, left_out_note(long_out, minimum))
    rows += _pooled_deltas(ok, references, long_horizon_days, left_out_note(long_out, minimum))
    rows += _pooled_gaps(ok, long_horizon_days, left_out_note(len(groups) - len(ok), minimum))
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["horizon_days"] = out["horizon_days"].astype("int64")
    return out.sort_values(["scope", "statistic", "reference", "task", "horizon_days", "recipe"], kind="stable")
