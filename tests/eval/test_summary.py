"""The answer in thirty seconds (``report --format summary``, the demo's ending) and report commands that behave:
every human format within 120 columns, unknown filters refused with the valid values, no warnings from the plots."""

from __future__ import annotations

import functools
import math
import warnings

import duckdb
import numpy as np
import pandas as pd
import pytest

from ehr_assets.eval import report
from ehr_assets.eval.paired import paired_differences
from ehr_assets.eval.render import REPORT_WIDTH, aligned, fit_columns
from ehr_assets.eval.summary import MAX_LINES, WIDTH, summary_text, verdict
from ehr_assets.warehouse import replace_partition

from .test_paired import predictions

COHORTS = ("msk", "inspect", "combined")
# the study's recipe set: more recipes than the demo's three, so the wide tables must split
MANY = ("sft", "jepa", "hybrid", "jepa_only", "jepa_mask025", "jepa_mask075", "jepa_tau_sched")


def paired_table(recipes=("sft", "jepa", "hybrid"), n_subjects: int = 60) -> pd.DataFrame:
    """``paired_differences`` of three cohorts: test_paired's predictions (count baseline, sft, jepa, oracle), every
    other recipe a noisy copy of jepa, and oracle_no_rate a copy of the oracle; 20 resamples (computed once)."""
    return _paired_table(tuple(recipes), n_subjects).copy()


@functools.cache
def _paired_table(recipes: tuple[str, ...], n_subjects: int) -> pd.DataFrame:
    frames = []
    for i, cohort in enumerate(COHORTS):
        p = predictions(seed=i, n_subjects=n_subjects)
        p = p[~p["recipe"].str.contains("_seed")]
        rng = np.random.default_rng(i)
        extra = [p[p["recipe"] == "oracle"].assign(recipe="oracle_no_rate")]
        for r in recipes:
            if r not in ("sft", "jepa"):
                noisy = p[p["recipe"] == "jepa"].assign(recipe=r)
                noisy["predicted_boolean_probability"] += rng.normal(0, 0.5, len(noisy))
                noisy["predicted_risk"] += rng.normal(0, 0.5, len(noisy))
                extra.append(noisy)
        frames.append(paired_differences(pd.concat([p, *extra]), n_bootstrap=20).assign(cohort=cohort))
    return pd.concat(frames, ignore_index=True)


def health_table(learned: dict[tuple[str, str], str]) -> pd.DataFrame:
    rows = [
        dict(cohort=c, recipe=r, jepa_loss_norm_end=0.5 if v == "yes" else 0.987, jepa_learned=v)
        for (c, r), v in learned.items()
    ]
    return pd.DataFrame(rows)


def _set_ci(table: pd.DataFrame, cohort: str, recipe: str, est: float, lo: float, hi: float) -> None:
    row = (
        (table["cohort"] == cohort)
        & (table["scope"] == "pooled_long")
        & (table["statistic"] == "delta")
        & (table["recipe"] == recipe)
        & (table["reference"] == "sft")
    )
    assert row.sum() == 1
    table.loc[row, ["estimate", "ci_low", "ci_high"]] = [est, lo, hi]


# ------------------------------------------------------------------------------------------------------- verdict
@pytest.mark.parametrize(
    "est, lo, hi, learned, start",
    [
        (0.03, 0.01, 0.05, "yes", "better than sft"),
        (-0.03, -0.05, -0.01, "yes", "worse than sft"),
        (0.01, -0.01, 0.03, "yes", "no difference resolved"),
        (0.03, 0.01, 0.05, "n/a", "better than sft"),  # no JEPA loss: nothing to withhold
        (0.03, 0.01, 0.05, "no", "no verdict: JEPA not learned (loss 0.987)"),
        (0.03, 0.01, 0.05, "unknown", "no verdict: JEPA health unknown"),
        (0.03, math.nan, math.nan, "yes", "no verdict: no CI"),
    ],
)
def test_the_verdict_follows_the_paired_ci_and_the_training_health(est, lo, hi, learned, start):
    assert verdict(est, lo, hi, learned, 0.987).startswith(start)


def test_the_summary_fits_forty_lines_of_a_hundred_and_says_what_each_ci_says():
    table = paired_table()
    _set_ci(table, "msk", "jepa", 0.031, 0.012, 0.052)  # the whole CI above 0
    _set_ci(table, "inspect", "jepa", -0.031, -0.052, -0.012)  # below 0
    _set_ci(table, "combined", "jepa", 0.004, -0.02, 0.03)  # spans 0
    learned = {(c, r): "yes" for c in COHORTS for r in ("jepa", "hybrid")} | {("combined", "hybrid"): "no"}
    text = summary_text(table, health_table(learned), {"sft": False, "jepa": True, "hybrid": True}, "res")
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES and max(map(len, lines)) <= WIDTH
    rows = {tuple(ln.split()[:2]): ln for ln in lines if ln.split()[:1] and ln.split()[0] in COHORTS}
    assert "+0.031 [0.01, 0.05]" in rows[("msk", "jepa")] and rows[("msk", "jepa")].endswith("(the whole CI above 0)")
    assert rows[("inspect", "jepa")].split("]")[-1].strip() == "worse than sft (the whole CI below 0)"
    assert rows[("combined", "jepa")].endswith("no difference resolved (the CI spans 0)")
    assert rows[("combined", "hybrid")].endswith("no verdict: JEPA not learned (loss 0.987)")
    # the level each recipe reaches: the mean long-horizon AUROC with its CI, the baseline first, the oracle last
    means = table[(table["statistic"] == "mean") & (table["cohort"] == "msk")].set_index("recipe")
    auroc = lines[lines.index(next(ln for ln in lines if ln.startswith("recipe"))) :]
    assert [ln.split()[0] for ln in auroc[1:7]] == [
        "count_baseline",
        "sft",
        "hybrid",
        "jepa",
        "oracle_no_rate",
        "oracle",
    ]
    r = means.loc["sft"]
    assert f"{r.estimate:.3f} [{r.ci_low:.2f}, {r.ci_high:.2f}]" in auroc[2]
    assert "make ui" in text and "http://127.0.0.1:3000" in text and "    res/" in lines


def test_a_bigger_project_still_fits_and_leaves_the_seeds_out():
    table = paired_table(MANY)  # (the same table as the report tests' warehouse)
    seed = table[table["recipe"] == "jepa"].assign(recipe="jepa_seed1")
    text = summary_text(pd.concat([table, seed]), None, {r: r != "sft" for r in MANY})
    lines = text.splitlines()
    assert max(map(len, lines)) <= WIDTH and "jepa_seed1" not in text and "(seed replicates left out" in text
    # health unknown: no JEPA recipe gets a verdict
    assert all("no verdict" in ln for ln in lines if ln.split()[:1] and ln.split()[0] in COHORTS)


def test_fit_columns_splits_a_wide_table_into_blocks_that_repeat_the_keys():
    df = pd.DataFrame(
        {"task": ["mortality", "survival"], **{f"recipe_{i}": ["0.712 [0.70, 0.73]"] * 2 for i in range(9)}}
    )
    text = fit_columns(df, ["task"], 60, render=aligned)
    blocks = text.split("\n\n")
    assert len(blocks) > 1 and all(b.startswith("task") for b in blocks)
    assert max(map(len, text.splitlines())) <= 60
    assert sum(b.splitlines()[0].count("recipe_") for b in blocks) == 9  # every column once


# ------------------------------------------------------------------------------------------------ report command
def warehouse(tmp_path, recipes=MANY) -> str:
    """A warehouse of three cohorts: probe metrics (two long task names, a survival task), paired differences and
    latent dynamics of ``recipes``, the count baseline and the oracles."""
    from ehr_assets.eval.latent_probe import COLUMNS as LATENT_COLUMNS

    db = tmp_path / "w.duckdb"
    names = ["count_baseline", *recipes, "oracle_no_rate", "oracle"]
    tasks = [("time_to_pulmonary_hypertension", 0, "c_index"), ("pulmonary_hypertension", 730, "auroc")]
    metrics = pd.DataFrame(
        [
            dict(cohort=c, recipe=r, task=t, horizon_days=h, metric=m, value=0.7, ci_low=0.65, ci_high=0.75, n=90)
            | dict(n_pos=30, note="")
            for c in COHORTS
            for r in names
            for t, h, m in tasks
        ]
    )
    latent = pd.DataFrame(
        [(r, "growth_rate", o, 0.4, 0.3, 0.5, 90, 30, 1.0, "") for r in names for o in (0, 365)],
        columns=LATENT_COLUMNS,
    )
    paired = paired_table(recipes)
    with duckdb.connect(str(db)) as c:
        for cohort in COHORTS:
            where = {"cohort": cohort}
            replace_partition(c, "probe_metrics", metrics[metrics["cohort"] == cohort], where)
            replace_partition(c, "paired_differences", paired[paired["cohort"] == cohort], where)
            replace_partition(c, "latent_dynamics", latent.assign(cohort=cohort), where)
    return str(db)


def test_every_human_format_fits_120_columns(tmp_path, capsys, monkeypatch):
    db = warehouse(tmp_path)
    monkeypatch.setenv("EHR_PROJECT_DIR", str(tmp_path))  # no project: health unknown, said on stderr
    for fmt in report.FORMATS:
        if fmt == "csv":
            continue
        assert report.main(["--format", fmt, "--warehouse", db]) == 0, fmt
        out = capsys.readouterr().out
        assert out.strip() and max(map(len, out.splitlines())) <= REPORT_WIDTH, fmt
    assert report.main(["--format", "wide", "--warehouse", db]) == 0
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if ln.startswith("==")] == ["== combined ==", "== inspect ==", "== msk =="]
    assert report.main(["--format", "markdown", "--warehouse", db, "--cohort", "msk"]) == 0
    md = capsys.readouterr().out
    assert "## msk" in md and "## inspect" not in md and "| task | horizon_days | metric |" in md


@pytest.mark.parametrize(
    "flag, value, valid",
    [
        ("--cohort", "nope", "combined, inspect, msk"),
        ("--recipe", "jepa_typo", "count_baseline, hybrid, jepa, oracle, oracle_no_rate, sft"),
        ("--task", "mortalty", "pulmonary_hypertension, time_to_pulmonary_hypertension"),
    ],
)
def test_an_unknown_cohort_recipe_or_task_exits_2_and_lists_the_valid_ones(tmp_path, capsys, flag, value, valid):
    db = warehouse(tmp_path, recipes=("sft", "jepa", "hybrid"))
    for fmt in ("table", "delta", "summary" if flag != "--task" else "wide"):
        assert report.main(["--format", fmt, "--warehouse", db, flag, value]) == 2
        err = capsys.readouterr().err
        assert f"unknown {flag[2:]} {value!r}; the warehouse has: {valid}" in err


def test_task_narrows_the_tables_and_is_refused_where_there_are_no_tasks(tmp_path, capsys):
    db = warehouse(tmp_path, recipes=("sft", "jepa"))
    assert report.main(["--format", "table", "--warehouse", db, "--task", "pulmonary_hypertension"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert rows and all(ln.split()[2] == "pulmonary_hypertension" for ln in rows)
    assert report.main(["--format", "latent", "--warehouse", db, "--task", "pulmonary_hypertension"]) == 2
    assert "--task does not apply to --format latent" in capsys.readouterr().err


def test_the_auroc_plot_of_a_task_at_horizon_zero_warns_nothing():
    """An ACES task is binary at horizon 0: no log-scaled axis for it (matplotlib warned on every partition)."""
    from ehr_assets.eval.benchmark import auroc_by_horizon_png

    metrics = pd.DataFrame(
        [
            dict(cohort="msk", recipe=r, task=t, horizon_days=h, metric="auroc", value=0.7, ci_low=0.6, ci_high=0.8)
            for r in ("count_baseline", "sft")
            for t, h in (("admission_mortality_1y", 0), ("mortality", 90), ("mortality", 365))
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert auroc_by_horizon_png(metrics, "msk")[:4] == b"\x89PNG"
