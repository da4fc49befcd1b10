"""The results folder: every table of ``python -m ehr_assets.report`` (text, Markdown, CSV) and the plots of every
cohort as files, with a ``README.txt`` saying what each holds. The demo writes it to ``results/`` beside the
warehouse (:func:`ehr_assets.eval.summary.results_dir`) and names it in its ending. Nothing here imports Dagster.
"""

from __future__ import annotations

from pathlib import Path

from .. import keys
from ..warehouse import atomic_dir
from .evidence import delta_report, latent_report, seeds_report
from .health import health_report
from .report import (
    COLUMNS,
    gap_report,
    load_health,
    load_metrics,
    load_table,
    markdown_report,
    project_or_none,
    summary,
    wide_table,
)
from .summary import results_dir

__all__ = ["RESULT_FILES", "write_results"]

RESULT_FILES = {
    "summary.txt": "the summary the demo ends with (python -m ehr_assets.report --format summary)",
    "report.md": "per cohort the headline metrics and pooled paired rows, the training health (Markdown)",
    "wide.txt": "the headline metric of every task and horizon per recipe, with CIs (--format wide)",
    "gap.txt": "the same values and the gap to the oracle each recipe closes (--format gap)",
    "delta.txt": "paired differences: pooled, then per task and horizon (--format delta)",
    "latent.txt": "the hidden state read from each recipe's embeddings (--format latent)",
    "health.txt": "did each JEPA objective learn; effective rank of the embeddings (--format health)",
    "seeds.txt": "spread across training seeds, when recipes declare replicate_seeds (--format seeds)",
    "probe_metrics.csv": "every metric: cohort, recipe, task, horizon, metric, value, CI, n (--format csv)",
    "paired_differences.csv": "the paired_differences table, every column",
    "latent_dynamics.csv": "the latent_dynamics table, every column",
    "auroc_by_horizon_<cohort>.png": "held-out AUROC against the horizon, a panel per binary task",
    "paired_<cohort>.png": "pooled paired differences with their CIs (forest plot)",
    "latent_r2_<cohort>.png": "held-out R^2 of the hidden state by offset, a panel per variable",
}


def write_results(warehouse: str | Path, artifacts=None, project=None, out: Path | None = None) -> Path:
    """Every table of the report (text, Markdown, CSV) and the plots of every cohort into ``out`` (default:
    :func:`results_dir`), replaced as a whole, with ``README.txt`` saying what each file holds; returns ``out``."""
    from .benchmark import auroc_by_horizon_png
    from .plots import latent_r2_png, paired_forest_png

    out = Path(out) if out else results_dir(warehouse)
    metrics = load_metrics(warehouse)
    paired = load_table(warehouse, keys.PAIRED_DIFFERENCES, optional=True)
    latent = load_table(warehouse, keys.LATENT_DYNAMICS, optional=True)
    project = project or project_or_none()
    health = load_health(warehouse, artifacts, project=project) if project is not None else None
    with atomic_dir(out) as tmp:
        texts = {
            "wide.txt": wide_table(metrics),
            "gap.txt": gap_report(metrics) + ("" if health is None else "\n\n" + health_report(health)),
            "health.txt": health_report(health),
            "report.md": markdown_report(metrics, paired, health),
        }
        if paired is not None:
            texts["summary.txt"] = summary(warehouse, artifacts, project, results=out)
            texts["delta.txt"] = delta_report(paired)
            paired.to_csv(tmp / "paired_differences.csv", index=False)
        if latent is not None:
            texts["latent.txt"] = latent_report(latent)
            latent.to_csv(tmp / "latent_dynamics.csv", index=False)
        seeds = seeds_report(metrics, paired)
        if not seeds.startswith("(no recipe"):
            texts["seeds.txt"] = seeds
        for name, text in texts.items():
            (tmp / name).write_text(text.rstrip("\n") + "\n")
        metrics[COLUMNS].to_csv(tmp / "probe_metrics.csv", index=False, float_format="%.4f")
        for c in sorted(metrics["cohort"].unique()):
            (tmp / f"auroc_by_horizon_{c}.png").write_bytes(auroc_by_horizon_png(metrics, c))
            if paired is not None and (paired["cohort"] == c).any():
                (tmp / f"paired_{c}.png").write_bytes(paired_forest_png(paired[paired["cohort"] == c], c))
            if latent is not None and (latent["cohort"] == c).any():
                (tmp / f"latent_r2_{c}.png").write_bytes(latent_r2_png(latent[latent["cohort"] == c], c))
        written = {f.name for f in tmp.iterdir()}
        index = [f"Results of the warehouse {warehouse}, written by python -m ehr_assets.report / the demo:", ""]
        for name, what in RESULT_FILES.items():
            present = sorted(f for f in written if _matches(name, f))
            if present:
                index.append(f"{name:<30}  {what}")
        (tmp / "README.txt").write_text("\n".join(index) + "\n")
    return out


def _matches(pattern: str, name: str) -> bool:
    head, _, tail = pattern.partition("<cohort>")
    return name == pattern if not tail else name.startswith(head) and name.endswith(tail)
