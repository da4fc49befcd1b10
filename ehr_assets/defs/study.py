"""The ``study_report`` asset: the answers to the questions of ``study.yaml`` (:mod:`ehr_assets.specs.study`), over
every cohort partition, as ``study.md`` with its plots under the artifact root, the ``study_answers`` table and the
asset's metadata (per question its table and verdict). Exists only when the project declares a study."""

import json

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from .. import keys
from ..eval import plots
from ..eval.benchmark import auroc_by_horizon_png
from ..eval.health import training_health
from ..eval.study import answer_study, score_cohorts
from ..eval.study_report import (
    recipe_overview,
    seed_mean_latent,
    seed_mean_metrics,
    sft_loss_table,
    study_markdown,
    verdict_sentence,
)
from ..specs import Project
from ..versions import digest, frame_version, study_declaration
from ..warehouse import atomic_dir, ident, table_exists
from .metadata import meta_table, png_md
from .reporting import require_metrics
from .resources import ArtifactStore
from .versioning import FOLLOWS_DECLARATIONS, code_version, data_version

STUDY_REPORT = "study_report"
STUDY_ANSWERS = "study_answers"


def _read_all(warehouse: DuckDBResource, table: str) -> pd.DataFrame | None:
    """Every row of ``table`` (all cohorts), None when the table does not exist."""
    with warehouse.get_connection() as conn:
        return conn.execute(f"SELECT * FROM {ident(table)}").df() if table_exists(conn, table) else None


def sft_curves(project: Project, artifacts: ArtifactStore) -> tuple[dict, dict]:
    """The SFT loss curve of every next-token-only run per cohort (``train_log.json`` of its checkpoint), and the
    step each continued run starts at."""
    curves, start = {}, {}
    for name, r in project.recipes.items():
        if r.objective != "sft":
            continue
        parent = project.recipes.get(r.init_from) if r.init_from else None
        start[name] = parent.training.steps if parent is not None else 0
        for cohort in project.cohorts:
            log = artifacts.path(keys.checkpoint(name), cohort) / "train_log.json"
            if log.is_file():
                curves[(cohort, name)] = json.loads(log.read_text()).get("loss_curve", [])
    return curves, start


def _pngs(project: Project, metrics: pd.DataFrame, latent, curves, start) -> dict[str, tuple[bytes, str]]:
    """File name -> (PNG, caption) of every plot of the report."""
    out = {"study_sft_loss.png": (plots.sft_loss_png(curves, start), "SFT loss by step, every seed")}
    mean = seed_mean_metrics(metrics)
    for cohort in project.cohorts:
        caption = f"{cohort}: held-out AUROC by horizon (mean over seeds)"
        out[f"study_auroc_by_horizon_{cohort}.png"] = (auroc_by_horizon_png(mean, cohort), caption)
    if latent is not None and len(latent):
        lmean = seed_mean_latent(latent)
        for cohort in sorted(lmean["cohort"].unique()):
            caption = f"{cohort}: latent-dynamics R^2 (mean over seeds)"
            out[f"study_latent_r2_{cohort}.png"] = (
                plots.latent_r2_png(lmean[lmean["cohort"] == cohort], cohort),
                caption,
            )
    return out


def study_report_built_at() -> float | None:
    """When ``study_report`` was last materialized on the current instance (``DAGSTER_HOME``), None if never."""
    last = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey(STUDY_REPORT))
    return None if last is None else last.timestamp


def study_report_asset(project: Project, deps: list[str]) -> dg.AssetsDefinition | None:
    """None when the project declares no study."""
    if project.study is None:
        return None
    checkpoints = [keys.checkpoint(n) for n, r in project.recipes.items() if r.objective == "sft"]

    @dg.asset(
        name=STUDY_REPORT,
        group_name="reports",
        kinds={"duckdb", "markdown"},
        deps=[*deps, keys.LATENT_DYNAMICS, *checkpoints],
        code_version=code_version(
            "reports",
            {"study": study_declaration(project), "small_samples": project.settings.small_samples.model_dump()},
        ),
        automation_condition=FOLLOWS_DECLARATIONS,
    )
    def study_report(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        """The study's answers: per question of study.yaml, paired seed-averaged differences with CIs, the spread
        across seeds, the resolvable difference and a verdict; study.md and its plots in the artifact root."""
        require_metrics(project, warehouse, deps, STUDY_REPORT)
        preds = _read_all(warehouse, "probe_predictions")
        metrics = _read_all(warehouse, "probe_metrics")
        latent = _read_all(warehouse, keys.LATENT_DYNAMICS)
        latent_reps = _read_all(warehouse, keys.LATENT_REPLICATES)
        scored = score_cohorts(project, preds)
        context.log.info(f"scored {sum(map(len, scored.values()))} long-horizon tasks over {len(scored)} cohorts")
        health = training_health(project, artifacts.root)  # a JEPA run that did not learn gets no verdict
        rows = answer_study(project, preds, latent, latent_reps, scored=scored, health=health)
        overview = recipe_overview(project, scored, latent, latent_reps, health)
        curves, start = sft_curves(project, artifacts)
        loss = sft_loss_table(curves)
        pngs = _pngs(project, metrics, latent, curves, start)
        text = study_markdown(project, rows, overview, loss, {n: cap for n, (_, cap) in pngs.items()}, health)
        dest = artifacts.path(STUDY_REPORT, project.study.name)
        with atomic_dir(dest) as tmp:
            (tmp / "study.md").write_text(text)
            rows.to_csv(tmp / "study_answers.csv", index=False)
            for name, (png, _) in pngs.items():
                (tmp / name).write_bytes(png)
        with warehouse.get_connection() as conn:
            conn.register("__answers", rows)
            conn.execute(f"CREATE OR REPLACE TABLE {STUDY_ANSWERS} AS SELECT * FROM __answers")
        questions = project.study.questions
        md = {
            "dagster/row_count": len(rows),
            "report": dg.MetadataValue.path(str(dest / "study.md")),
            "answers": dg.MetadataValue.md("\n".join(f"- {verdict_sentence(q, rows)}" for q in questions)),
            "recipes": meta_table(overview),
            "sft_loss": meta_table(loss),
            "training_health": meta_table(health),
        }
        for q in project.study.questions:
            md[q.id] = meta_table(rows[rows["question"] == q.id].drop(columns=["question"]))
        md["sft_loss_plot"] = png_md(pngs["study_sft_loss.png"][0], "SFT loss")
        return dg.MaterializeResult(data_version=data_version(digest([frame_version(rows), text])), metadata=md)

    return study_report
