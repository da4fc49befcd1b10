"""Print the latest probe metrics and the evidence that compares recipes, from the warehouse.

    python -m ehr_assets.report --format table|csv|wide|gap|delta|latent|seeds|health [--warehouse PATH]
                                [--cohort msk] [--recipe sft] [--artifacts DIR]

``table`` and ``csv``: one row per (cohort partition, recipe, task, horizon_days, metric); columns
``cohort,recipe,task,horizon_days,metric,value,ci_low,ci_high,n,n_pos,too_few`` (``too_few``: below the project's
small-sample minimum, :mod:`ehr_assets.eval.small_samples`; the table prints no value there). ``wide``: the headline
metric of every task (AUROC for binary tasks, Harrell's C for survival) with one column per recipe, the count
baseline first and the oracles last (``too few (p+/q-)`` where too few were held out). ``gap``: the headline values
and, per recipe, the fraction of the baseline-to-oracle gap it closes (``closed:<recipe>``), then each recipe's
pooled gap closed over all tasks and over horizons >= 365 days (see :mod:`ehr_assets.eval.benchmark`) and the number
of probes that fell back (:mod:`ehr_assets.eval.fallbacks`). ``delta``: the ``paired_differences`` table -- pooled
rows first (each recipe minus the count baseline and minus ``sft`` over the long horizons, the gap closed), then per
task and horizon, with paired subject-bootstrap CIs (:mod:`ehr_assets.eval.paired`). ``latent``: the
``latent_dynamics`` table, held-out R^2 of the hidden state now and later (:mod:`ehr_assets.eval.latent_probe`).
``seeds``: mean and spread across training seeds of the recipes with ``replicate_seeds``
(:mod:`ehr_assets.eval.replicates`). ``health``: per cohort and recipe, whether its JEPA objective beat the mean
predictor and its embeddings' effective rank cleared the floor (:mod:`ehr_assets.eval.health`, from the checkpoints'
training logs and the embeddings under the artifact root, default: ``artifacts/`` beside the warehouse); ``gap`` and
``delta`` end with the same table when the artifacts are there. The warehouse is opened read-only.

The command is ``python -m ehr_assets.report`` (a forwarding module); the first line of this docstring is its
``--help`` description. :func:`markdown_table` is the small Markdown rendering the Dagster layer uses for metadata
tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .. import keys
from ..warehouse import connect, default_warehouse, read_partition, table_exists
from .benchmark import HEADLINE_METRICS, benchmark_wide, gap_summary, gap_table, recipe_order
from .evidence import delta_report, latent_report, seeds_report
from .fallbacks import count_fallbacks
from .health import health_report, training_health
from .small_samples import cell as too_few_cell

__all__ = [
    "COLUMNS",
    "format_table",
    "gap_report",
    "load_health",
    "load_metrics",
    "load_table",
    "main",
    "markdown_table",
    "wide_table",
]

COLUMNS = ["cohort", "recipe", "task", "horizon_days", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "too_few"]


def load_table(
    warehouse: str | Path,
    table: str,
    cohort: str | None = None,
    recipe: str | None = None,
    columns: list[str] | None = None,
    optional: bool = False,
) -> pd.DataFrame | None:
    """The rows of ``table``, optionally of one cohort partition and one recipe. A missing warehouse raises; so does
    a missing table (naming the asset to materialize) unless ``optional``, which gives None."""
    path = Path(warehouse)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no warehouse yet; run `make demo` or materialize the *_probe_metrics assets")
    with connect(path, read_only=True) as conn:
        if not table_exists(conn, table):
            if optional:
                return None
            raise LookupError(f"{path}: no {table} table yet; materialize the asset {table!r}")
        where = {k: v for k, v in (("cohort", cohort), ("recipe", recipe)) if v}
        return read_partition(conn, table, where, columns=columns)


def load_metrics(warehouse: str | Path, cohort: str | None = None, recipe: str | None = None) -> pd.DataFrame:
    """The :data:`COLUMNS` of the ``probe_metrics`` table (and ``note``), optionally of one cohort partition and one
    recipe, sorted by cohort, recipe, task, horizon and metric. A missing warehouse or table raises with what to run
    first."""
    try:
        df = load_table(warehouse, "probe_metrics", cohort, recipe)
    except LookupError:
        raise LookupError(f"{warehouse}: no probe_metrics table yet; materialize a *_probe_metrics asset") from None
    df = df.reindex(columns=[*COLUMNS, "note"])  # a table written before n_pos / too_few existed lacks them
    df["too_few"] = df["too_few"].astype("boolean").fillna(False).astype(bool)
    df = df.sort_values(["cohort", "recipe", "task", "horizon_days", "metric"], kind="stable").reset_index(drop=True)
    return df


def load_health(
    warehouse: str | Path, artifacts: str | Path | None = None, cohort: str | None = None, recipe: str | None = None
) -> pd.DataFrame | None:
    """The training health (:func:`ehr_assets.eval.health.training_health`) of the runs under ``artifacts``
    (default: ``artifacts/`` beside the warehouse, the layout of a Dagster home), optionally of one cohort and one
    recipe; None when there is no artifact root or no run in it."""
    from ..specs import SpecError, default_project_dir, load_project

    root = Path(artifacts) if artifacts else Path(warehouse).parent / "artifacts"
    if not root.is_dir():
        return None
    try:
        project = load_project(default_project_dir())
    except SpecError as e:  # the recipes decide which runs have a JEPA loss: without them, no health to show
        print(f"note: training health not shown ({e})", file=sys.stderr)
        return None
    cohorts = [cohort] if cohort else None
    health = training_health(project, root, cohorts)
    if recipe:
        health = health[health["recipe"] == recipe]
    return health if len(health) else None


def format_table(df: pd.DataFrame) -> str:
    """The rows as plain text, values and CI bounds to three decimals."""
    fmt = df.copy()
    for c in ("value", "ci_low", "ci_high"):
        fmt[c] = fmt[c].map(lambda v: "nan" if pd.isna(v) else f"{v:.3f}")
    if "too_few" in fmt:  # no point estimate where too few were held out (eval/small_samples)
        few = fmt["too_few"].fillna(False).astype(bool).to_numpy()
        fmt.loc[few, ["value", "ci_low", "ci_high"]] = ["too few", "", ""]
    return fmt.to_string(index=False)


def wide_table(df: pd.DataFrame) -> str:
    """Headline metrics, rows (cohort, task, horizon_days, metric), one ``value [ci_low, ci_high]`` column per
    recipe."""
    head = df[df["metric"].isin(HEADLINE_METRICS)].copy()
    if head.empty:
        return "(no AUROC or C-index rows)"

    def cell(r) -> str:
        if getattr(r, "too_few", False):
            return too_few_cell(r.n, r.n_pos)
        if pd.isna(r.value):
            return "nan"
        ci = "" if pd.isna(r.ci_low) else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"
        return f"{r.value:.3f}{ci}"

    head["cell"] = [cell(r) for r in head.itertuples()]
    wide = head.pivot_table(
        index=["cohort", "task", "horizon_days", "metric"], columns="recipe", values="cell", aggfunc="first"
    )
    recipes = recipe_order(wide.columns)  # the count baseline first, the oracles last
    return wide[recipes].reset_index().rename_axis(columns=None).to_string(index=False)


def gap_report(df: pd.DataFrame) -> str:
    """Headline values with each recipe's gap closed, then the pooled gap closed per cohort and recipe."""
    wide = benchmark_wide(df)
    if wide.empty:
        return "(no AUROC or C-index rows)"
    summary = gap_summary(gap_table(df))
    fmt = {
        c: (lambda v: "" if pd.isna(v) else f"{v:.3f}")
        for c in wide.columns
        if c not in ("cohort", "task", "horizon_days", "metric")
    }
    text = wide.to_string(index=False, formatters=fmt)
    fallbacks = count_fallbacks(df) if "note" in df else pd.DataFrame()
    tail = (
        "\n\nProbe fallbacks (probes whose metrics' note records one; see the note column):\n"
        + fallbacks.to_string(index=False)
        if len(fallbacks)
        else "\n\nProbe fallbacks: none"
    )
    if summary.empty:
        return text + "\n\n(no oracle rows: the gap closed is undefined)" + tail
    return (
        text
        + "\n\nGap closed, pooled (sum of recipe - baseline over sum of oracle - baseline):\n"
        + summary.to_string(index=False, float_format=lambda v: f"{v:.3f}")
        + tail
    )


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3f}", nan: str = "nan") -> str:
    """A small markdown rendering (no tabulate dependency); a NaN float is written as ``nan``."""
    cols = list(map(str, df.columns))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [
            (floatfmt.format(v) if v == v else nan) if isinstance(v, float) else ("" if v is None else str(v))
            for v in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The ``python -m ehr_assets.report`` command; returns the exit status (2: no warehouse or no metrics yet)."""
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.report", description=__doc__.splitlines()[0])
    formats = ["table", "csv", "wide", "gap", "delta", "latent", "seeds", "health"]
    ap.add_argument("--format", choices=formats, default="table")
    ap.add_argument(
        "--warehouse", type=Path, default=None, help="DuckDB file (default: $DAGSTER_HOME/warehouse.duckdb)"
    )
    ap.add_argument("--cohort")
    ap.add_argument("--recipe")
    ap.add_argument(
        "--artifacts", type=Path, default=None, help="artifact root (default: artifacts/ beside the warehouse)"
    )
    args = ap.parse_args(argv)
    wh = args.warehouse or default_warehouse()
    try:
        print(_render(args.format, wh, args.cohort, args.recipe, args.artifacts), end="")
    except (FileNotFoundError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _render(fmt: str, wh: Path, cohort: str | None, recipe: str | None, artifacts: Path | None = None) -> str:
    """The text of one ``--format``."""
    if fmt == "health":
        return health_report(load_health(wh, artifacts, cohort, recipe)) + "\n"
    health = load_health(wh, artifacts, cohort, recipe) if fmt in ("gap", "delta") else None
    tail = "" if health is None else "\n" + health_report(health) + "\n"
    if fmt == "delta":
        return delta_report(load_table(wh, keys.PAIRED_DIFFERENCES, cohort, recipe)) + "\n" + tail
    if fmt == "latent":
        return latent_report(load_table(wh, keys.LATENT_DYNAMICS, cohort, recipe)) + "\n"
    df = load_metrics(wh, cohort, recipe)
    if fmt == "seeds":
        return seeds_report(df, load_table(wh, keys.PAIRED_DIFFERENCES, cohort, optional=True)) + "\n"
    if fmt == "csv":
        return df[COLUMNS].to_csv(index=False, float_format="%.4f")
    if fmt == "wide":
        return wide_table(df) + "\n"
    if fmt == "gap":
        return gap_report(df) + "\n" + tail
    return format_table(df[COLUMNS]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
