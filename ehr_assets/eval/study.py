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
  a claim (``expect: either``) is ``higher`` / ``lower`` / ``no difference resolved``;
* training health first (:mod:`ehr_assets.eval.health`): when a recipe of the comparison (either side, any seed,
  any cohort it reads) has a JEPA loss whose objective was not learned -- its normalized JEPA loss ended at or above
  the ``jepa_beats_mean_predictor`` ceiling -- or cannot be shown to be (no training log, no health table), the
  comparison gets no verdict: ``withheld: JEPA objective not learned (...)``. Its estimate and CI stay in the table,
  but they compare an objective that did not learn. ``jepa_health`` names the runs.

Nothing here imports Dagster; :mod:`ehr_assets.eval.study_report` writes the tables and plots.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..specs import Comparison, Project, Question, StudySpec
from .health import not_learned, uses_jepa
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
    "left_out",
    "jepa_health",
    "verdict",
]
WITHHELD = "withheld: JEPA objective not learned"
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


def health_note(failed: list[str], jepa_runs: list[str]) -> str:
    """The ``jepa_health`` cell: the JEPA runs a comparison reads that did not learn (or are unknown), else
    ``learned`` when it reads JEPA runs, else empty."""
    if failed:
        return "not learned: " + ", ".join(failed)
    return "learned" if jepa_runs else ""


def _jepa_runs(project: Project, pairs: list[tuple[str, str]], cohorts) -> list[str]:
    return [f"{n}@{c}" for c in cohorts for n in dict.fromkeys(x for p in pairs for x in p) if uses_jepa(project, n)]


def _row(
    q: Question,
    cohort: str,
    c: Comparison,
    seeds: list[PooledDifference],
    failed: list[str] | None = None,
    jepa_runs: list[str] | None = None,
    left_out: int = 0,
) -> dict:
    """One :data:`COLUMNS` row from the per-seed statistics of a comparison; ``failed``: the JEPA runs it reads
    whose objective was not learned (the verdict is withheld), ``jepa_runs``: all the JEPA runs it reads."""
    failed = failed or []
    base = dict(question=q.id, cohort=cohort, comparison=c.label or f"{c.recipe} vs {c.reference}")
    base |= dict(recipe=c.recipe, reference=c.reference, expect=c.expect, seeds=len(seeds), left_out=left_out)
    base |= dict(jepa_health=health_note(failed, jepa_runs or []))
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
        verdict=f"{WITHHELD} ({', '.join(failed)})" if failed else verdict(lo, hi, values, c.expect),
    )


def _long_binary(preds: pd.DataFrame, long_days: int) -> pd.DataFrame:
    """The rows of binary tasks at horizons >= ``long_days``."""
    return preds[preds["predicted_boolean_probability"].notna() & (preds["horizon_days"] >= long_days)]


def _delta(groups: list[ScoredTask], recipe: str, ref: str) -> PooledDifference | None:
    """Mean AUROC difference over the scored tasks where both were scored (a task with too few held-out positives
    or negatives is left out: :mod:`.small_samples`)."""
    pairs = [(g, ref) for g in groups if not g.too_few and recipe in g.point and ref in g.point]
    return mean_difference(pairs, recipe) if pairs else None


def _health_args(project: Project, health, pairs: list[tuple[str, str]], cohorts) -> tuple[list[str], list[str]]:
    """(failed, jepa runs) of the seed pairs of a comparison read in ``cohorts``."""
    runs = [n for p in pairs for n in p]
    return not_learned(project, health, cohorts, runs), _jepa_runs(project, pairs, cohorts)


def _delta_rows(project: Project, q: Question, scored: dict[str, list[ScoredTask]], health) -> list[dict]:
    rows = []
    for cohort in q.cohorts or list(scored):
        groups = scored.get(cohort, [])
        names = {n for g in groups for n in g.point}
        for c in q.comparisons:
            pairs = seed_pairs(c.recipe, c.reference, names)
            seeds = [_delta(groups, r, f) for r, f in pairs]
            h = _health_args(project, health, pairs, [cohort])
            left = sum(g.too_few for g in groups)
            rows.append(_row(q, cohort, c, [s for s in seeds if s is not None], *h, left_out=left))
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


def _latent_rows(project: Project, q: Question, latent: pd.DataFrame, latent_reps: pd.DataFrame, health):
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
            pairs = seed_pairs(c.recipe, c.reference, names)
            seeds = [_latent_pair(pts, rep, r, f) for r, f in pairs]
            h = _health_args(project, health, pairs, [cohort])
            rows.append(_row(q, cohort, c, [s for s in seeds if s is not None], *h))
    return rows


def _transfer_rows(project: Project, q: Question, preds: pd.DataFrame, health) -> list[dict]:
    """Difference in differences on the member's held-out subjects, one draw shared by both trainings (the
    health of both trainings, member and union, decides whether it gets a verdict)."""
    study: StudySpec = project.study
    member = _long_binary(preds[preds["cohort"] == q.member], study.long_horizon_days)
    union = preds[(preds["cohort"] == q.union) & (preds["source_cohort"] == q.member)]
    union = _long_binary(union, study.long_horizon_days)
    both = pd.concat(
        [member.assign(recipe=member["recipe"] + "@member"), union.assign(recipe=union["recipe"] + "@union")]
    )
    groups = score_tasks(both, study.n_bootstrap, study.seed, project.settings.small_samples)
    names = {n.rsplit("@", 1)[0] for g in groups for n in g.point}
    rows = []
    for c in q.comparisons:
        seeds = []
        pairs = seed_pairs(c.recipe, c.reference, names)
        for r, f in pairs:
            gain_r, gain_f = _delta(groups, f"{r}@union", f"{r}@member"), _delta(groups, f"{f}@union", f"{f}@member")
            if gain_r is None or gain_f is None:
                continue
            est = gain_r.estimate - gain_f.estimate
            n = min(gain_r.n_terms, gain_f.n_terms)
            seeds.append(PooledDifference(est, gain_r.reps - gain_f.reps, gain_r.estimate, gain_f.estimate, n))
        h = _health_args(project, health, pairs, [q.member, q.union])
        rows.append(_row(q, q.member, c, seeds, *h, left_out=sum(g.too_few for g in groups)))
    return rows


def score_cohorts(project: Project, preds: pd.DataFrame) -> dict[str, list[ScoredTask]]:
    """Per cohort, the long-horizon binary tasks of ``preds`` scored for every recipe under one shared draw."""
    study = project.study
    out = {}
    for cohort in project.cohorts:
        rows = _long_binary(preds[preds["cohort"] == cohort], study.long_horizon_days)
        minimum = project.settings.small_samples
        out[cohort] = score_tasks(rows.drop(columns=["cohort"]), study.n_bootstrap, study.seed, minimum)
    return out


def answer_rows(
    project: Project,
    q: Question,
    scored: dict,
    latent=None,
    latent_reps=None,
    preds: pd.DataFrame | None = None,
    health: pd.DataFrame | None = None,
) -> list[dict]:
    """The :data:`COLUMNS` rows of one question: ``scored`` (:func:`score_cohorts`) for a delta question,
    ``latent`` / ``latent_reps`` for a latent one (None: not resolved), ``preds`` for a transfer one; ``health``
    (:func:`ehr_assets.eval.health.training_health`; None: unknown, every JEPA comparison is withheld)."""
    if q.kind == "delta":
        return _delta_rows(project, q, scored, health)
    if q.kind == "latent":
        empty = pd.DataFrame(columns=["cohort", "recipe", "variable", "offset_days", "r2", "replicate"])
        lat, reps = empty if latent is None else latent, empty if latent_reps is None else latent_reps
        return _latent_rows(project, q, lat, reps, health)
    if preds is None:
        raise ValueError(f"question {q.id!r}: a transfer question needs the predictions")
    return _transfer_rows(project, q, preds, health)


def answer_study(
    project: Project,
    preds: pd.DataFrame,
    latent: pd.DataFrame | None,
    latent_reps: pd.DataFrame | None,
    scored: dict | None = None,
    health: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The :data:`COLUMNS` table: one row per question, cohort and comparison of ``project.study``. ``preds``: the
    ``probe_predictions`` rows of every cohort; ``latent`` / ``latent_reps``: ``latent_dynamics`` and
    ``latent_replicates`` of every cohort (None when not materialized: latent questions are then not resolved);
    ``scored``: :func:`score_cohorts` when the caller has it; ``health``: the training health of every run
    (:func:`ehr_assets.eval.health.training_health`): a comparison reading a JEPA run that did not learn its
    objective, or whose health is unknown (None: nothing checked), gets no verdict."""
    if project.study is None:
        raise ValueError(f"{project.root}: the project declares no study (study.yaml)")
    scored = score_cohorts(project, preds) if scored is None else scored
    qs = project.study.questions
    rows = [r for q in qs for r in answer_rows(project, q, scored, latent, latent_reps, preds, health)]
    return pd.DataFrame(rows, columns=COLUMNS)
