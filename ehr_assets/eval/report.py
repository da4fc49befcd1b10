"""Print the latest probe metrics and the evidence that compares recipes, from the warehouse.

    python -m ehr_assets.report --format summary|table|csv|wide|gap|delta|latent|seeds|health|markdown
                                [--cohort msk] [--recipe sft] [--task mortality] [--warehouse PATH]
                                [--artifacts DIR]

``summary``: the answer in 30 seconds (:mod:`ehr_assets.eval.summary`, the demo's ending): per cohort each recipe's
mean long-horizon AUROC with its CI, the gap to the oracle closed, each recipe minus ``sft`` with its paired CI and
a verdict that respects the training health, and where to look next. ``table`` and ``csv``: one row per (cohort
partition, recipe, task, horizon_days, metric); columns ``cohort,recipe,task,horizon_days,metric,value,ci_low,
ci_high,n,n_pos,too_few`` (``too_few``: below the project's small-sample minimum,
:mod:`ehr_assets.eval.small_samples`; the table prints no value there). ``wide``: per cohort, the headline metric of
every task (AUROC for binary tasks, Harrell's C for survival) with one column per recipe, the count baseline first
and the oracles last (``too few (p+/q-)`` where too few were held out). ``gap``: per cohort, the headline values
and, per recipe, the fraction of the baseline-to-oracle gap it closes (``closed:<recipe>``), then
each recipe's pooled gap closed over all tasks and over horizons >= 365 days (see :mod:`ehr_assets.eval.benchmark`)
and the number of probes that fell back (:mod:`ehr_assets.eval.fallbacks`). ``delta``: the ``paired_differences``
table -- pooled rows first (each recipe's mean long-horizon AUROC, each recipe minus the count baseline and minus
``sft`` over the long horizons, the gap closed), then per cohort, task and horizon, with paired subject-bootstrap
CIs (:mod:`ehr_assets.eval.paired`). ``latent``: per cohort, the ``latent_dynamics`` table, held-out R^2 of the
hidden state now and later (:mod:`ehr_assets.eval.latent_probe`). ``seeds``: mean and spread across training seeds
of the recipes with ``replicate_seeds`` (:mod:`ehr_assets.eval.replicates`). ``health``: per cohort and recipe,
whether its JEPA objective beat the mean predictor and its embeddings' effective rank cleared the floor
(:mod:`ehr_assets.eval.health`, from the checkpoints' training logs and the embeddings under the artifact root,
default: ``artifacts/`` beside the warehouse); ``gap`` and ``delta`` end with the same table when the artifacts
are there. ``markdown``: per cohort the headline table and the pooled paired rows, then the training health, as
Markdown tables (for notes). Every format but ``csv`` fits :data:`~ehr_assets.eval.render.REPORT_WIDTH` columns
(wide tables are split into column blocks). An unknown ``--cohort``, ``--recipe`` or ``--task`` exits with status 2
and lists the valid ones. The warehouse is opened read-only.

:func:`ehr_assets.eval.results.write_results` writes every table and plot to a folder (the demo's ``results/``
beside the warehouse).
The command is ``python -m ehr_assets.report`` (a forwarding module); the first line of this docstring is its
``--help`` description. :func:`markdown_table` is the small Markdown rendering the Dagster layer uses for metadata
tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import pandas as pd

from .. import keys
from ..warehouse import default_warehouse, read_partition, table_exists
from .benchmark import HEADLINE_METRICS, benchmark_wide, gap_summary, gap_table, recipe_order
from .evidence import delta_report, latent_report, pooled_table, seeds_report
from .fallbacks import count_fallbacks
from .health import health_report, training_health, uses_jepa
from .render import fit_columns, per_cohort
from .small_samples import cell as too_few_cell
from .summary import results_dir, summary_text

__all__ = [
    "COLUMNS",
    "FORMATS",
    "UnknownFilter",
    "format_table",
    "gap_report",
    "load_health",
    "load_metrics",
    "load_table",
    "main",
    "markdown_report",
    "markdown_table",
    "project_or_none",
    "summary",
    "wide_table",
]

COLUMNS = ["cohort", "recipe", "task", "horizon_days", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "too_few"]
FORMATS = ["summary", "table", "csv", "wide", "gap", "delta", "latent", "seeds", "health", "markdown"]
TASKLESS = ("summary", "latent", "seeds", "health")  # formats with no task rows: --task is an error there
ROW_KEYS = ["task", "horizon_days", "metric"]  # the key columns every column block of a pivoted table repeats


class UnknownFilter(LookupError):
    """A ``--cohort``, ``--recipe`` or ``--task`` that names nothing in the warehouse (the message lists what does)."""


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
    with duckdb.connect(str(path), read_only=True) as conn:
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


def project_or_none():
    """The project of the current folder ($EHR_PROJECT_DIR or the repository), or None (said on stderr) when its
    declarations do not load: the recipes decide which runs have a JEPA loss."""
    from ..specs import SpecError, default_project_dir, load_project

    try:
        return load_project(default_project_dir())
    except SpecError as e:
        print(f"note: training health not shown ({e})", file=sys.stderr)
        return None


def load_health(
    warehouse: str | Path,
    artifacts: str | Path | None = None,
    cohort: str | None = None,
    recipe: str | None = None,
    project=None,
) -> pd.DataFrame | None:
    """The training health (:func:`ehr_assets.eval.health.training_health`) of the runs of ``project`` (default:
    the current project) under ``artifacts`` (default: ``artifacts/`` beside the warehouse, the layout of a Dagster
    home), optionally of one cohort and one recipe; None when there is no artifact root or no run in it."""
    root = Path(artifacts) if artifacts else Path(warehouse).parent / "artifacts"
    if not root.is_dir():
        return None
    project = project or project_or_none()
    if project is None:
        return None
    cohorts = [cohort] if cohort else None
    health = training_health(project, root, cohorts)
    if recipe:
        health = health[health["recipe"] == recipe]
    return health if len(health) else None


def format_table(df: pd.DataFrame) -> str:
    """The rows as plain text, values and CI bounds to three decimals (column blocks when wider than
    :data:`~ehr_assets.eval.render.REPORT_WIDTH`)."""
    fmt = df.copy()
    for c in ("value", "ci_low", "ci_high"):
        fmt[c] = fmt[c].map(lambda v: "nan" if pd.isna(v) else f"{v:.3f}")
    if "too_few" in fmt:  # no point estimate where too few were held out (eval/small_samples)
        few = fmt["too_few"].fillna(False).astype(bool).to_numpy()
        fmt.loc[few, ["value", "ci_low", "ci_high"]] = ["too few", "", ""]
    return fit_columns(fmt, ["cohort", "recipe", *ROW_KEYS])


def _headline_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Headline metrics pivoted: rows (cohort, task, horizon_days, metric), one ``value [ci_low, ci_high]`` column
    per recipe (the count baseline first, the oracles last)."""
    head = df[df["metric"].isin(HEADLINE_METRICS)].copy()
    if head.empty:
        return pd.DataFrame(columns=["cohort", *ROW_KEYS])

    def cell(r) -> str:
        if getattr(r, "too_few", False):
            return too_few_cell(r.n, r.n_pos)
        if pd.isna(r.value):
            return "nan"
        ci = "" if pd.isna(r.ci_low) else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"
        return f"{r.value:.3f}{ci}"

    head["cell"] = [cell(r) for r in head.itertuples()]
    wide = head.pivot_table(index=["cohort", *ROW_KEYS], columns="recipe", values="cell", aggfunc="first")
    return wide[recipe_order(wide.columns)].reset_index().rename_axis(columns=None).fillna("")


def wide_table(df: pd.DataFrame) -> str:
    """Headline metrics per cohort: rows (task, horizon_days, metric), one ``value [ci_low, ci_high]`` column per
    recipe, in column blocks that fit :data:`~ehr_assets.eval.render.REPORT_WIDTH`."""
    wide = _headline_cells(df)
    if wide.empty:
        return "(no AUROC or C-index rows)"
    return per_cohort(wide, lambda d: fit_columns(d.dropna(axis=1, how="all"), ROW_KEYS))


def gap_report(df: pd.DataFrame) -> str:
    """Per cohort, headline values with each recipe's gap closed; then the pooled gap closed per cohort and recipe
    and the probe fallbacks."""
    if benchmark_wide(df).empty:
        return "(no AUROC or C-index rows)"
    summary = gap_summary(gap_table(df))
    blocks = []
    for cohort in sorted(df["cohort"].unique()):
        wide = benchmark_wide(df, cohort).drop(columns=["cohort"])
        blocks.append(f"== {cohort} ==\n" + fit_columns(wide, ROW_KEYS, render=_three_decimals))
    text = "\n\n".join(blocks)
    fallbacks = count_fallbacks(df) if "note" in df else pd.DataFrame()
    tail = (
        "\n\nProbe fallbacks (probes whose metrics' note records one; see the note column):\n"
        + fit_columns(fallbacks, ["cohort", "recipe"])
        if len(fallbacks)
        else "\n\nProbe fallbacks: none"
    )
    if summary.empty:
        return text + "\n\n(no oracle rows: the gap closed is undefined)" + tail
    pooled = summary.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    return text + "\n\nGap closed, pooled (sum of recipe - baseline over sum of oracle - baseline):\n" + pooled + tail


def _three_decimals(df: pd.DataFrame) -> str:
    """``df`` as plain text, the values of every column but the row keys to three decimals (blank for NaN)."""
    fmt = {c: (lambda v: "" if pd.isna(v) else f"{v:.3f}") for c in df.columns if c not in ROW_KEYS}
    return df.to_string(index=False, formatters=fmt)


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


def markdown_report(metrics: pd.DataFrame, paired: pd.DataFrame | None, health: pd.DataFrame | None) -> str:
    """``--format markdown``: per cohort the headline metrics and the pooled paired rows, then the training health,
    as Markdown tables of at most :data:`~ehr_assets.eval.render.REPORT_WIDTH` columns (wide ones split)."""
    out = ["# Probe results", ""]
    wide = _headline_cells(metrics)
    for cohort in dict.fromkeys(wide["cohort"]):
        head = wide[wide["cohort"] == cohort].drop(columns=["cohort"]).dropna(axis=1, how="all")
        out += [f"## {cohort}", "", "Held-out AUROC (binary) or Harrell's C (survival), 95 % bootstrap CIs:", ""]
        out += [fit_columns(head, ROW_KEYS, render=markdown_table), ""]
        if paired is not None and len(paired):
            pooled = pooled_table(paired[paired["cohort"] == cohort])
            if len(pooled):
                out += ["Pooled paired differences (paired subject-bootstrap 95 % CIs; * = CI excludes 0):", ""]
                out += [fit_columns(pooled, ["statistic", "scope", "reference", "recipe"], render=markdown_table), ""]
    if health is not None and len(health):
        cols = ["cohort", "recipe", "jepa_loss_norm_end", "jepa_learned", "effective_rank", "rank_floor", "health"]
        out += ["## Training health", "", fit_columns(health[cols], ["cohort", "recipe"], render=markdown_table), ""]
    return "\n".join(out)


def summary(warehouse, artifacts=None, project=None, cohort=None, recipe=None, results: Path | None = None) -> str:
    """``--format summary`` (and the demo's ending) for the warehouse: :func:`ehr_assets.eval.summary.summary_text`
    of its ``paired_differences`` with the training health of ``project``'s runs (default: the current project)."""
    paired = load_table(warehouse, keys.PAIRED_DIFFERENCES, cohort, recipe)
    project = project or project_or_none()
    health = load_health(warehouse, artifacts, cohort, project=project) if project is not None else None
    jepa = {r: uses_jepa(project, r) for r in paired["recipe"].unique()} if project is not None else None
    order = list(project.recipes) if project is not None else None
    return summary_text(paired, health, jepa, results, order)


def _valid(wh: Path) -> dict[str, list[str]] | None:
    """The cohorts, recipes and tasks the warehouse's ``probe_metrics`` holds (None when it has none yet)."""
    path = Path(wh)
    if not path.exists():
        return None
    with duckdb.connect(str(path), read_only=True) as conn:
        if not table_exists(conn, "probe_metrics"):
            return None
        return {
            col: [v for (v,) in conn.execute(f"SELECT DISTINCT {col} FROM probe_metrics ORDER BY 1").fetchall()]
            for col in ("cohort", "recipe", "task")
        }


def check_filters(wh: Path, fmt: str, cohort: str | None, recipe: str | None, task: str | None) -> None:
    """Raise :class:`UnknownFilter` (listing the valid values) for a ``--cohort``, ``--recipe`` or ``--task`` the
    warehouse does not hold, or a ``--task`` given to a format without tasks."""
    if task and fmt in TASKLESS:
        raise UnknownFilter(f"--task does not apply to --format {fmt} (it does to {', '.join(_task_formats())})")
    valid = _valid(wh)
    if valid is None:
        return
    for name, value in (("cohort", cohort), ("recipe", recipe), ("task", task)):
        if value and value not in valid[name]:
            raise UnknownFilter(f"unknown {name} {value!r}; the warehouse has: {', '.join(map(str, valid[name]))}")


def _task_formats() -> list[str]:
    return [f for f in FORMATS if f not in TASKLESS]


def main(argv: list[str] | None = None) -> int:
    """The ``python -m ehr_assets.report`` command; returns the exit status (2: no warehouse or no metrics yet, or
    an unknown cohort, recipe or task)."""
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.report", description=__doc__.splitlines()[0])
    ap.add_argument("--format", choices=FORMATS, default="table")
    ap.add_argument(
        "--warehouse", type=Path, default=None, help="DuckDB file (default: $DAGSTER_HOME/warehouse.duckdb)"
    )
    ap.add_argument("--cohort", help="one cohort partition")
    ap.add_argument("--recipe", help="one recipe (or the count baseline, an oracle)")
    ap.add_argument("--task", help=f"one task (formats {', '.join(_task_formats())})")
    ap.add_argument(
        "--artifacts", type=Path, default=None, help="artifact root (default: artifacts/ beside the warehouse)"
    )
    args = ap.parse_args(argv)
    wh = args.warehouse or default_warehouse()
    try:
        check_filters(wh, args.format, args.cohort, args.recipe, args.task)
        print(_render(args.format, wh, args.cohort, args.recipe, args.artifacts, args.task), end="")
    except (FileNotFoundError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _of_task(df: pd.DataFrame, task: str | None) -> pd.DataFrame:
    return df if not task else df[df["task"] == task].reset_index(drop=True)


def _render(
    fmt: str, wh: Path, cohort: str | None, recipe: str | None, artifacts: Path | None = None, task: str | None = None
) -> str:
    """The text of one ``--format``."""
    if fmt == "health":
        return health_report(load_health(wh, artifacts, cohort, recipe)) + "\n"
    if fmt == "summary":
        res = results_dir(wh)
        return summary(wh, artifacts, None, cohort, recipe, res if res.is_dir() else None) + "\n"
    health = load_health(wh, artifacts, cohort, recipe) if fmt in ("gap", "delta", "markdown") else None
    tail = "" if health is None else "\n" + health_report(health) + "\n"
    if fmt == "delta":
        return delta_report(_of_task(load_table(wh, keys.PAIRED_DIFFERENCES, cohort, recipe), task)) + "\n" + tail
    if fmt == "latent":
        return latent_report(load_table(wh, keys.LATENT_DYNAMICS, cohort, recipe)) + "\n"
    df = _of_task(load_metrics(wh, cohort, recipe), task)
    if fmt == "seeds":
        return seeds_report(df, load_table(wh, keys.PAIRED_DIFFERENCES, cohort, optional=True)) + "\n"
    if fmt == "csv":
        return df[COLUMNS].to_csv(index=False, float_format="%.4f")
    if fmt == "wide":
        return wide_table(df) + "\n"
    if fmt == "gap":
        return gap_report(df) + "\n" + tail
    if fmt == "markdown":
        paired = load_table(wh, keys.PAIRED_DIFFERENCES, cohort, recipe, optional=True)
        return markdown_report(df, None if paired is None else _of_task(paired, task), health) + "\n"
    return format_table(df[COLUMNS]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
