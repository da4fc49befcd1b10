"""The study's statistics: every comparison of ``study.yaml`` (:mod:`ehr_assets.specs.study`) as one paired estimate
over the training seeds, its 95 % CI, the spread across seeds, the difference it could resolve and a verdict.

For a comparison ``recipe`` vs ``reference`` in one cohort:

* each training seed ``k`` gives a paired statistic: ``recipe_seed<k> - reference_seed<k>`` (seed 0 is the recipe
  itself; a reference without replicates, the count baseline, is the same for every seed);
* ``delta``: the mean over the binary tasks at horizons >= ``long_horizon_days`` of the held-out AUROC difference;
  ``latent``: the mean over the chosen latent variables and offsets of the held-out R^2 difference; ``transfer``:
  the mean over the same tasks of ``(recipe on union - recipe on member) - (reference on union - reference on
  member)``, all on the member's held-out subjects;
* the estimate is the mean over seeds; its replicates are the mean over seeds of each seed's replicates under ONE
  draw of held-out subjects shared by every recipe (:mod:`ehr_assets.eval.resample`), so the CI is paired; it holds
  the subject sampling, the seed spread (``seed_sd``) is reported beside it;
* ``resolvable``: the smallest true difference the study would detect with 80 % power at a two-sided 5 % level,
  ``2.8 x sqrt(se_subjects^2 + seed_sd^2 / seeds)`` (``se_subjects`` the bootstrap standard deviation);
* verdict (:func:`verdict`): ``supported`` when the CI lies on the claimed side of 0 and every seed agrees,
  ``contradicted`` when it lies on the other side and every seed agrees, else ``not resolved``; a comparison without
  a claim (``expect: either``) is ``higher`` / ``lower`` / ``no difference resolved``.

Nothing here imports Dagster; :mod:`ehr_assets.eval.study_report` writes the tables and plots.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..specs import Comparison, Project, Question, StudySpec
from .paired import PooledDifference, ScoredTask, mean_difference, reference_for, score_tasks
from .replicates import seed_groups
from .resample import bootstrap_p_value, percentile_ci

__all__ = ["COLUMNS", "answer_rows", "answer_study", "score_cohorts", "seed_pairs", "verdict"]

COLUMNS = [
    "question",
    "cohort",
    "comparison",
    "recipe",
    "reference",
    "expect",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "seeds",
    "seed_values",
    "seed_sd",
    "resolvable",
    "recipe_value",
    "reference_value",
    "n_terms",
    "verdict",
]
POWER_Z = 2.8  # z(0.975) + z(0.80): a true difference this many standard errors away is detected 80 % of the time


def seed_pairs(recipe: str, reference: str, names) -> list[tuple[str, str]]:
    """``(recipe_seed<k>, its reference)`` for the recipe and each of its replicates present in ``names``."""
    names = set(names)
    members = seed_groups(names).get(recipe, [recipe])
    out = []
    for m in members:
        if m not in names:
            continue
        ref = reference_for(m, reference, names)
        if ref is not None:
            out.append((m, ref))
    return out


def verdict(lo: float, hi: float, seed_values: list[float], expect: str) -> str:
    """The verdict of one comparison from its CI and its per-seed estimates (see the module docstring)."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or not seed_values:
        return "not resolved (CI undefined)"
    up = lo > 0 and all(v > 0 for v in seed_values)
    down = hi < 0 and all(v < 0 for v in seed_values)
    if expect == "either":
        return "higher" if up else "lower" if down else "no difference resolved"
    claimed, other = (up, down) if expect == "higher" else (down, up)
    return "supported" if claimed else "contradicted" if other else "not resolved"


def _row(q: Question, cohort: str, c: Comparison, seeds: list[PooledDifference]) -> dict:
    """One :data:`COLUMNS` row from the per-seed statistics of a comparison."""
    base = dict(question=q.id, cohort=cohort, comparison=c.label or f"{c.recipe} vs {c.reference}")
    base |= dict(recipe=c.recipe, reference=c.reference, expect=c.expect, seeds=len(seeds))
    if not seeds:
        undefined = dict.fromkeys(["estimate", "ci_low", "ci_high", "p_value", "seed_sd", "resolvable"], np.nan)
        undefined |= dict.fromkeys(["recipe_value", "reference_value"], np.nan)
        return base | undefined | dict(seed_values="", n_terms=0, verdict="not resolved (no pairs)")
    values = [s.estimate for s in seeds]
    reps = np.mean(np.vstack([s.reps for s in seeds]), axis=0)
    lo, hi, _ = percentile_ci(reps)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    se = float(np.nanstd(reps, ddof=1)) if np.isfinite(reps).sum() > 1 else float("nan")
    return base | dict(
        estimate=float(np.mean(values)),
        ci_low=lo,
        ci_high=hi,
        p_value=bootstrap_p_value(reps),
        seed_values=" ".join(f"{v:+.3f}" for v in values),
        seed_sd=sd,
        resolvable=POWER_Z * float(np.sqrt(se**2 + sd**2 / len(values))),
        recipe_value=float(np.mean([s.recipe_value for s in seeds])),
        reference_value=float(np.mean([s.reference_value for s in seeds])),
        n_terms=int(min(s.n_terms for s in seeds)),
        verdict=verdict(lo, hi, values, c.expect),
    )


def _long_binary(preds: pd.DataFrame, long_days: int) -> pd.DataFrame:
    """The rows of binary tasks at horizons >= ``long_days``."""
    return preds[preds["predicted_boolean_probability"].notna() & (preds["horizon_days"] >= long_days)]


def _delta(groups: list[ScoredTask], recipe: str, ref: str) -> PooledDifference | None:
    """Mean AUROC difference over the scored tasks where both were scored."""
    pairs = [(g, ref) for g in groups if recipe in g.point and ref in g.point]
    return mean_difference(pairs, recipe) if pairs else None


def _delta_rows(q: Question, scored: dict[str, list[ScoredTask]]) -> list[dict]:
    rows = []
    for cohort in q.cohorts or list(scored):
        groups = scored.get(cohort, [])
        names = {n for g in groups for n in g.point}
        for c in q.comparisons:
            seeds = [_delta(groups, r, f) for r, f in seed_pairs(c.recipe, c.reference, names)]
            rows.append(_row(q, cohort, c, [s for s in seeds if s is not None]))
    return rows


def _latent_pair(points: pd.DataFrame, reps: pd.DataFrame, recipe: str, ref: str) -> PooledDifference | None:
    """Mean R^2 difference over the (variable, offset) cells both recipes have an R^2 for."""
    cell = ["variable", "offset_days"]
    a, b = (points[points["recipe"] == n].set_index(cell)["r2"] for n in (recipe, ref))
    both = a.index.intersection(b.index)
    both = both[np.isfinite(a[both].to_numpy()) & np.isfinite(b[both].to_numpy())]
    if len(both) == 0:
        return None
    wide = reps[reps["recipe"].isin([recipe, ref])].pivot_table(
        index=["recipe", *cell], columns="replicate", values="r2", aggfunc="first"
    )
    diff = np.vstack([wide.loc[(recipe, *k)].to_numpy() - wide.loc[(ref, *k)].to_numpy() for k in both])
    est = float(np.mean(a[both].to_numpy() - b[both].to_numpy()))
    return PooledDifference(est, diff.mean(axis=0), float(a[both].mean()), float(b[both].mean()), len(both))


def _latent_rows(q: Question, latent: pd.DataFrame, latent_reps: pd.DataFrame) -> list[dict]:
    rows = []
    for cohort in q.cohorts or sorted(latent["cohort"].unique()):
        pts = latent[latent["cohort"] == cohort]
        rep = latent_reps[latent_reps["cohort"] == cohort]
        if q.variables:
            pts, rep = pts[pts["variable"].isin(q.variables)], rep[rep["variable"].isin(q.variables)]
        if q.offsets_days:
            pts, rep = pts[pts["offset_days"].isin(q.offsets_days)], rep[rep["offset_days"].isin(q.offsets_days)]
        names = set(pts["recipe"])
        for c in q.comparisons:
            seeds = [_latent_pair(pts, rep, r, f) for r, f in seed_pairs(c.recipe, c.reference, names)]
            rows.append(_row(q, cohort, c, [s for s in seeds if s is not None]))
    return rows


def _transfer_rows(study: StudySpec, q: Question, preds: pd.DataFrame) -> list[dict]:
    """Difference in differences on the member's held-out subjects, one draw shared by both trainings."""
    member = _long_binary(preds[preds["cohort"] == q.member], study.long_horizon_days)
    union = preds[(preds["cohort"] == q.union) & (preds["source_cohort"] == q.member)]
    union = _long_binary(union, study.long_horizon_days)
    both = pd.concat(
        [member.assign(recipe=member["recipe"] + "@member"), union.assign(recipe=union["recipe"] + "@union")]
    )
    groups = score_tasks(both, study.n_bootstrap, study.seed)
    names = {n.rsplit("@", 1)[0] for g in groups for n in g.point}
    rows = []
    for c in q.comparisons:
        seeds = []
        for r, f in seed_pairs(c.recipe, c.reference, names):
            gain_r, gain_f = _delta(groups, f"{r}@union", f"{r}@member"), _delta(groups, f"{f}@union", f"{f}@member")
            if gain_r is None or gain_f is None:
                continue
            est = gain_r.estimate - gain_f.estimate
            n = min(gain_r.n_terms, gain_f.n_terms)
            seeds.append(PooledDifference(est, gain_r.reps - gain_f.reps, gain_r.estimate, gain_f.estimate, n))
        rows.append(_row(q, q.member, c, seeds))
    return rows


def score_cohorts(project: Project, preds: pd.DataFrame) -> dict[str, list[ScoredTask]]:
    """Per cohort, the long-horizon binary tasks of ``preds`` scored for every recipe under one shared draw."""
    study = project.study
    out = {}
    for cohort in project.cohorts:
        rows = _long_binary(preds[preds["cohort"] == cohort], study.long_horizon_days)
        out[cohort] = score_tasks(rows.drop(columns=["cohort"]), study.n_bootstrap, study.seed)
    return out


def answer_rows(
    project: Project, q: Question, scored: dict, latent=None, latent_reps=None, preds: pd.DataFrame | None = None
) -> list[dict]:
    """The :data:`COLUMNS` rows of one question: ``scored`` (:func:`score_cohorts`) for a delta question,
    ``latent`` / ``latent_reps`` for a latent one (None: not resolved), ``preds`` for a transfer one."""
    if q.kind == "delta":
        return _delta_rows(q, scored)
    if q.kind == "latent":
        empty = pd.DataFrame(columns=["cohort", "recipe", "variable", "offset_days", "r2", "replicate"])
        return _latent_rows(q, empty if latent is None else latent, empty if latent_reps is None else latent_reps)
    if preds is None:
        raise ValueError(f"question {q.id!r}: a transfer question needs the predictions")
    return _transfer_rows(project.study, q, preds)


def answer_study(
    project: Project,
    preds: pd.DataFrame,
    latent: pd.DataFrame | None,
    latent_reps: pd.DataFrame | None,
    scored: dict | None = None,
) -> pd.DataFrame:
    """The :data:`COLUMNS` table: one row per question, cohort and comparison of ``project.study``. ``preds``: the
    ``probe_predictions`` rows of every cohort; ``latent`` / ``latent_reps``: ``latent_dynamics`` and
    ``latent_replicates`` of every cohort (None when not materialized: latent questions are then not resolved);
    ``scored``: :func:`score_cohorts` when the caller has it."""
    if project.study is None:
        raise ValueError(f"{project.root}: the project declares no study (study.yaml)")
    scored = score_cohorts(project, preds) if scored is None else scored
    rows = [r for q in project.study.questions for r in answer_rows(project, q, scored, latent, latent_reps, preds)]
    return pd.DataFrame(rows, columns=COLUMNS)
