"""The study's results as people read them: ``study.md`` and its plots, from the tables of :mod:`.study`.

* :func:`recipe_overview` -- per cohort, every recipe (seed-averaged) between the count baseline and the oracle:
  long-horizon AUROC, paired delta vs ``sft`` and vs the count baseline, and the latent R^2 of the latent question;
* :func:`seed_mean_metrics` / :func:`seed_mean_latent` -- probe metrics and latent R^2 averaged over each recipe's
  training seeds (the plots' lines);
* :func:`sft_loss_table` -- how flat the SFT loss is at the end of each SFT run;
* :func:`jepa_learned_cell` -- per cohort and recipe, in how many of its seeds the JEPA objective was learned;
* :func:`study_markdown` -- the whole file: settings, verdicts, the training health of every run, the SFT curve, per
  question its table and sentence.

Nothing here imports Dagster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import keys
from ..specs import Comparison, Project, Question
from .benchmark import BASELINE, ORACLE, recipe_order
from .health import health_report
from .report import markdown_table
from .study import answer_rows

__all__ = [
    "jepa_learned_cell",
    "loss_table_rows",
    "recipe_overview",
    "seed_mean_latent",
    "seed_mean_metrics",
    "sft_loss_table",
    "study_markdown",
    "verdict_sentence",
]


def _base(name: str) -> str:
    return keys.parse_replicate(name)[0]


def seed_mean_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """``probe_metrics`` rows with each recipe's replicates averaged into the recipe (value and CI bounds)."""
    m = metrics.assign(recipe=metrics["recipe"].map(_base))
    cols = ["cohort", "recipe", "task", "horizon_days", "metric"]
    return m.groupby(cols, as_index=False)[["value", "ci_low", "ci_high"]].mean()


def seed_mean_latent(latent: pd.DataFrame) -> pd.DataFrame:
    """``latent_dynamics`` rows with each recipe's replicates averaged into the recipe."""
    t = latent.assign(recipe=latent["recipe"].map(_base))
    cols = ["cohort", "recipe", "variable", "offset_days"]
    return t.groupby(cols, as_index=False)[["r2", "ci_low", "ci_high"]].mean()


def jepa_learned_cell(project: Project, health: pd.DataFrame | None, cohort: str, recipe: str) -> str:
    """``learned k/n``: in how many of the recipe's n seeds (replicates included) its JEPA objective was learned in
    ``cohort`` (``jepa_beats_mean_predictor``); ``?`` for seeds without a health row; empty without a JEPA loss."""
    r = project.recipes.get(recipe)
    if r is None or not r.uses_jepa:
        return ""
    names = [n for n in project.recipes if _base(n) == recipe]
    learned = {}
    if health is not None and len(health):
        h = health[health["cohort"] == cohort]
        learned = dict(zip(h["recipe"], h["jepa_learned"]))
    k = sum(learned.get(n) == "yes" for n in names)
    unknown = sum(learned.get(n) not in ("yes", "no") for n in names)
    return f"learned {k}/{len(names)}" + (f" ({unknown} unknown)" if unknown else "")


def recipe_overview(project: Project, scored: dict, latent, latent_reps, health=None) -> pd.DataFrame:
    """Per cohort and recipe (seed-averaged): long-horizon AUROC, delta vs ``sft`` and vs the count baseline with
    paired CIs, the mean latent R^2 over the cells of the study's first latent question, and whether its JEPA
    objective was learned (:func:`jepa_learned_cell`)."""
    recipes = [r for r in project.recipes if keys.parse_replicate(r)[1] is None] + [ORACLE]
    delta = Question(
        id="overview",
        question="",
        comparisons=[
            Comparison(recipe=r, reference=ref, expect="either") for r in recipes for ref in ("sft", BASELINE)
        ],
    )
    rows = pd.DataFrame(answer_rows(project, delta, scored, None, None))
    lq = next((q for q in project.study.questions if q.kind == "latent"), None)
    r2 = {}
    if lq is not None and latent is not None:
        lat = Question(
            **(lq.model_dump() | {"comparisons": [Comparison(recipe=r, reference=BASELINE) for r in recipes]})
        )
        for row in answer_rows(project, lat, scored, latent, latent_reps):
            r2[(row["cohort"], row["recipe"])] = row["recipe_value"]
            r2[(row["cohort"], BASELINE)] = row["reference_value"]
    out = []
    for cohort in dict.fromkeys(rows["cohort"]):
        c = rows[rows["cohort"] == cohort]
        vs_base = c[c["reference"] == BASELINE].set_index("recipe")
        vs_sft = c[c["reference"] == "sft"].set_index("recipe")
        base_auc = vs_base["reference_value"].dropna()
        order = recipe_order([BASELINE, *recipes])
        for r in order:
            auc = base_auc.iloc[0] if r == BASELINE and len(base_auc) else vs_base["recipe_value"].get(r, np.nan)
            out.append(
                dict(
                    cohort=cohort,
                    recipe=r,
                    seeds=int(vs_base["seeds"].get(r, 1 if r == BASELINE else 0)),
                    auroc_long=auc,
                    delta_vs_sft=_cell(vs_sft, r),
                    delta_vs_baseline=_cell(vs_base, r),
                    latent_r2=r2.get((cohort, r), np.nan),
                    jepa_objective=jepa_learned_cell(project, health, cohort, r),
                )
            )
    return pd.DataFrame(out)


def _cell(rows: pd.DataFrame, recipe: str) -> str:
    if recipe not in rows.index:
        return ""
    r = rows.loc[recipe]
    return _ci(r.estimate, r.ci_low, r.ci_high, mark=True)


def loss_table_rows(curve: list[dict], tail: float = 0.1) -> dict:
    """How flat one SFT loss curve is: the mean SFT loss over the last ``tail`` of the logged steps and over the
    ``tail`` before it, and the relative drop between them."""
    pts = [(p["step"], p["sft_loss"]) for p in curve if p.get("sft_loss") is not None and np.isfinite(p["sft_loss"])]
    if len(pts) < 4:
        return dict(steps=len(pts), loss_end=np.nan, loss_before=np.nan, relative_drop=np.nan)
    k = max(1, int(round(len(pts) * tail)))
    end = float(np.mean([v for _, v in pts[-k:]]))
    before = float(np.mean([v for _, v in pts[-2 * k : -k]]))
    return dict(steps=int(pts[-1][0]), loss_end=end, loss_before=before, relative_drop=(before - end) / before)


def sft_loss_table(curves: dict[tuple[str, str], list[dict]]) -> pd.DataFrame:
    """One row per (cohort, recipe) curve: :func:`loss_table_rows`."""
    rows = [dict(cohort=c, recipe=r, **loss_table_rows(curve)) for (c, r), curve in sorted(curves.items())]
    return pd.DataFrame(rows, columns=["cohort", "recipe", "steps", "loss_end", "loss_before", "relative_drop"])


def verdict_sentence(q: Question, rows: pd.DataFrame) -> str:
    """One plain sentence per question: for each comparison that makes a claim (all of them when none does), its
    verdict in each cohort where it was read."""
    claims = [c for c in q.comparisons if c.expect != "either"] or list(q.comparisons)
    parts = []
    for c in claims:
        r = rows[(rows["question"] == q.id) & (rows["recipe"] == c.recipe) & (rows["reference"] == c.reference)]
        label = c.label or f"{c.recipe} vs {c.reference}"
        if r.empty:
            parts.append(f"{label}: not resolved (nothing scored)")
            continue
        verdicts = dict(zip(r["cohort"], r["verdict"]))
        if len(set(verdicts.values())) == 1:
            parts.append(f"{label}: {next(iter(verdicts.values()))} on {', '.join(verdicts)}")
        else:
            parts.append(f"{label}: " + ", ".join(f"{v} on {k}" for k, v in verdicts.items()))
    return f"**{q.id}**: " + "; ".join(parts) + "."


def _md(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    """A markdown table of ``df`` with undefined values left empty."""
    return markdown_table(df, floats, nan="")


def _ci(est: float, lo: float, hi: float, mark: bool = False) -> str:
    """``+e [+lo, +hi]`` with three decimals (``*`` when ``mark`` and the CI excludes 0); empty when undefined."""
    if not np.isfinite(est):
        return ""
    if not np.isfinite(lo):
        return f"{est:+.3f}"
    star = "*" if mark and (lo > 0 or hi < 0) else ""
    return f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}]{star}"


def _question_table(rows: pd.DataFrame, qid: str) -> pd.DataFrame:
    r = rows[rows["question"] == qid].copy()
    r["delta [95% CI]"] = [
        f"{e:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        if np.isfinite(e) and np.isfinite(lo)
        else ("" if not np.isfinite(e) else f"{e:+.3f}")
        for e, lo, hi in zip(r["estimate"], r["ci_low"], r["ci_high"])
    ]
    cols = ["cohort", "comparison", "recipe_value", "reference_value", "delta [95% CI]", "p_value"]
    cols += ["seed_values", "seed_sd", "resolvable", "n_terms"]
    cols += ["left_out"] if "left_out" in r else []  # task x horizon pairs too few to score (eval/small_samples)
    return r[[*cols, "verdict"]]


def study_markdown(
    project: Project, rows: pd.DataFrame, overview: pd.DataFrame, loss: pd.DataFrame, pngs, health=None
) -> str:
    """The text of ``study.md``: ``rows`` (:func:`ehr_assets.eval.study.answer_study`), the recipe ``overview``, the
    SFT ``loss`` table, the names of the plot files beside it (``pngs``: file name -> caption) and the training
    ``health`` of every run (:func:`ehr_assets.eval.health.training_health`)."""
    study = project.study
    out = [f"# {study.description or study.name}", ""]
    out += ["## Settings (declared in study.yaml before the run)", ""]
    out += [f"- **{k}**: {v}" for k, v in study.settings.items()]
    out += ["", _md(_recipe_settings(project)), ""]
    out += ["## Answers", ""]
    out += [f"- {verdict_sentence(q, rows)}" for q in study.questions]
    out += ["", _READING, "", "## Training health of every run", ""]
    out += ["```", health_report(health), "```", ""]
    out += ["## The SFT loss", "", _md(loss, "{:.4f}"), ""]
    out += [f"![{cap}]({name})" for name, cap in pngs.items() if "sft_loss" in name]
    out += ["", "## Every recipe (mean over seeds; long horizons = binary tasks at >= "]
    out[-1] += f"{study.long_horizon_days} days)"
    out += ["", _md(overview), ""]
    for q in study.questions:
        out += [
            f"## {q.id}: {q.question}",
            "",
            _md(_question_table(rows, q.id)),
            "",
            verdict_sentence(q, rows),
            "",
        ]
    out += ["## Plots", ""]
    out += [f"![{cap}]({name})" for name, cap in pngs.items() if "sft_loss" not in name]
    return "\n".join(out) + "\n"


_READING = (
    "Reading the tables: `delta` is recipe minus reference, averaged over the training seeds (each seed paired "
    "with the same seed's reference); its 95 % CI is a paired bootstrap of held-out subjects (the same draws for "
    "every recipe); `seed_values` are the per-seed estimates and `seed_sd` their spread; `resolvable` is the smallest "
    "true difference this study detects with 80 % power (2.8 x the combined subject and seed standard error). "
    "A verdict needs the CI on one side of 0 *and* every seed on that side, and every JEPA run it reads (each seed, "
    "each cohort) must have learned its objective (`jepa_beats_mean_predictor`: normalized JEPA loss at the end "
    "under 0.9); otherwise the verdict is withheld (`jepa_health` names the runs): the difference would compare SFT "
    "with SFT plus a loss that taught the encoder nothing."
)


def _recipe_settings(project: Project) -> pd.DataFrame:
    rows = []
    for name, r in project.recipes.items():
        base, seed = keys.parse_replicate(name)
        if seed is not None:
            continue
        seeds = 1 + sum(
            1 for n in project.recipes if keys.parse_replicate(n) == (name, keys.parse_replicate(n)[1]) and n != name
        )
        jepa = r.jepa if r.objective != "sft" else None
        rows.append(
            dict(
                recipe=name,
                objective=r.objective,
                init_from=r.init_from or "",
                steps=r.training.steps,
                loss_weights=f"sft {r.loss_weights.sft:g}, jepa {r.loss_weights.jepa:g}" if jepa else "sft",
                mask_ratio=f"{jepa.mask_ratio:g}" if jepa else "",
                ema_tau=(f"{jepa.ema_tau:g}" + (f" -> {jepa.ema_tau_end:g}" if jepa.ema_tau_end else ""))
                if jepa
                else "",
                seeds=seeds,
            )
        )
    return pd.DataFrame(rows)
