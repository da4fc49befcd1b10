"""Training health beside every result: per cohort and recipe, did its JEPA objective beat the mean predictor and do
its node embeddings clear the effective-rank floor (the two WARN checks of :mod:`ehr_assets.defs.checks`, same rules:
:mod:`ehr_assets.stats`)?

* :func:`health_row` -- one recipe in one cohort, from its ``train_log.json`` and its node embeddings;
* :func:`training_health` -- every recipe and cohort found under an artifact root (:data:`COLUMNS`);
* :func:`not_learned` -- the (cohort, recipe) pairs whose JEPA objective was not learned or cannot be shown to be:
  the study withholds the verdicts that read them (:mod:`ehr_assets.eval.study`);
* :func:`health_report` -- the text the demo, the report command and the assets' metadata show.

``jepa_learned``: ``yes`` (normalized JEPA loss over the last fifth of the logged steps under
:data:`~ehr_assets.stats.JEPA_NORM_CEILING`), ``no``, ``unknown`` (a JEPA recipe without a training log, or one
whose log has no normalized JEPA loss), ``n/a`` (no JEPA loss). Nothing here imports Dagster or torch.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from .. import keys
from ..specs import Project, RecipeSpec
from ..stats import JEPA_NORM_CEILING, effective_rank_problems, jepa_mean_predictor_problems
from ..warehouse import artifact_dir

__all__ = ["COLUMNS", "health_report", "health_row", "not_learned", "training_health", "uses_jepa"]

COLUMNS = [
    "cohort",
    "recipe",
    "jepa_loss_norm_end",
    "jepa_learned",
    "effective_rank",
    "rank_floor",
    "rank_ok",
    "health",
]


def health_row(cohort: str, recipe: RecipeSpec, train_log: dict | None, emb: np.ndarray | None) -> dict:
    """The :data:`COLUMNS` row of ``recipe`` in ``cohort`` from its training log (None: none found) and its node
    embeddings (None: not materialized)."""
    end, learned, notes = float("nan"), "n/a", []
    if recipe.uses_jepa:
        curve = (train_log or {}).get("loss_curve", [])
        problems, md = jepa_mean_predictor_problems(curve)
        end = float(md["normalized_jepa_loss_end"])
        if not np.isfinite(end):
            learned = "unknown"
            notes.append("JEPA health unknown (no log)")
        elif problems:
            learned = "no"
            notes.append(f"JEPA not learned ({end:.3f} >= {JEPA_NORM_CEILING})")
        else:
            learned = "yes"
    rank = floor = float("nan")
    rank_ok = "unknown"
    if emb is not None:
        problems, md = effective_rank_problems(emb, recipe.embedding.min_effective_rank)
        rank, floor = float(md["effective_rank"]), float(md["floor"])
        rank_ok = "no" if problems else "yes"
        if problems:
            notes.append(f"rank {rank:.2f} < floor {floor:.2f}")
    return dict(
        cohort=cohort,
        recipe=recipe.name,
        jepa_loss_norm_end=end,
        jepa_learned=learned,
        effective_rank=rank,
        rank_floor=floor,
        rank_ok=rank_ok,
        health="; ".join(notes) or "ok",
    )


def _embeddings(folder: Path) -> np.ndarray | None:
    f = folder / "embeddings.safetensors"
    if not f.is_file():
        return None
    from safetensors.numpy import load_file

    return load_file(str(f))["embeddings"]


def training_health(project: Project, artifact_root: str | Path, cohorts=None) -> pd.DataFrame:
    """:data:`COLUMNS` for every recipe of ``project`` and every cohort (default: all partitions) with a checkpoint
    or embeddings under ``artifact_root``; a pair with neither is left out (never materialized)."""
    rows = []
    for cohort in cohorts or project.partition_keys:
        for name, recipe in project.recipes.items():
            log = artifact_dir(artifact_root, keys.checkpoint(name), cohort) / "train_log.json"
            emb = _embeddings(artifact_dir(artifact_root, keys.embeddings(name), cohort))
            train_log = json.loads(log.read_text()) if log.is_file() else None
            if train_log is None and emb is None:
                continue
            rows.append(health_row(cohort, recipe, train_log, emb))
    return pd.DataFrame(rows, columns=COLUMNS)


def uses_jepa(project: Project, name: str) -> bool:
    """Whether run ``name`` (a recipe or a seed replicate of one) trains with a JEPA loss."""
    r = project.recipes.get(name) or project.recipes.get(keys.parse_replicate(name)[0])
    return r is not None and r.uses_jepa


def not_learned(project: Project, health: pd.DataFrame | None, cohorts, recipes) -> list[str]:
    """``recipe@cohort`` for each of ``recipes`` (any names: replicates, the count baseline) with a JEPA loss whose
    objective was not shown to be learned in one of ``cohorts``: ``jepa_learned`` ``no``, or ``unknown`` / no row
    (``health`` None: nothing was checked)."""
    learned = {}
    if health is not None and len(health):
        learned = dict(zip(zip(health["cohort"], health["recipe"]), health["jepa_learned"]))
    out = []
    for cohort in cohorts:
        for name in dict.fromkeys(recipes):
            if uses_jepa(project, name) and learned.get((cohort, name)) != "yes":
                out.append(f"{name}@{cohort}")
    return out


def health_report(health: pd.DataFrame) -> str:
    """The table people read (at most 100 columns but for long recipe names): per cohort and recipe the normalized
    JEPA loss at the end, whether it beat the mean predictor, the effective rank against its floor, and the verdict
    of both checks; a warning line naming the JEPA runs that did not learn their objective."""
    if health is None or health.empty:
        return "(no checkpoints or embeddings found: training health unknown)"
    t = health.copy()
    t["jepa_norm_end"] = t["jepa_loss_norm_end"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    t["eff_rank"] = [
        "" if pd.isna(r) else f"{r:.1f} (floor {f:.1f})" for r, f in zip(t["effective_rank"], t["rank_floor"])
    ]
    t = t.rename(columns={"jepa_learned": "learned"})
    cols = ["cohort", "recipe", "jepa_norm_end", "learned", "eff_rank", "health"]
    head = (
        "Training health. jepa_norm_end: normalized JEPA loss at the end (last fifth of the steps;\n"
        f"1.0 = predicting the targets' mean); learned: under {JEPA_NORM_CEILING} "
        "(WARN check jepa_beats_mean_predictor);\n"
        "eff_rank: effective rank of the node embeddings (WARN check effective_rank_floor):"
    )
    text = head + "\n" + t[cols].to_string(index=False)
    failed = t[~t["learned"].isin(["yes", "n/a"])]
    if len(failed):
        runs = ", ".join(f"{r}@{c}" for c, r in zip(failed["cohort"], failed["recipe"]))
        warning = (
            f"WARNING: the JEPA objective was not learned (or not shown to be) in {len(failed)} of "
            f"{int((t['learned'] != 'n/a').sum())} JEPA runs ({runs}): a comparison of those runs with sft "
            "compares SFT with SFT plus a loss that taught the encoder next to nothing about the masked future."
        )
        text += "\n" + "\n".join(textwrap.wrap(warning, 100, break_on_hyphens=False))
    return text
