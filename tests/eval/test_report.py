import duckdb
import pandas as pd

from ehr_assets.eval import report
from ehr_assets.warehouse import replace_partition


def test_report_csv_and_table(tmp_path, capsys):
    db = tmp_path / "w.duckdb"
    rows = pd.DataFrame(
        {
            "cohort": ["msk", "msk"],
            "recipe": ["sft", "sft"],
            "task": ["mortality", "survival"],
            "horizon_days": [90, 0],
            "metric": ["auroc", "c_index"],
            "value": [0.71234, 0.65],
            "ci_low": [0.6, 0.6],
            "ci_high": [0.8, 0.7],
            "n": [100, 120],
            "n_pos": [10, 30],
            "note": ["", ""],
        }
    )
    with duckdb.connect(str(db)) as c:
        replace_partition(c, "probe_metrics", rows, {"cohort": "msk", "recipe": "sft"})
    assert report.main(["--format", "csv", "--warehouse", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "cohort,recipe,task,horizon_days,metric,value,ci_low,ci_high,n,n_pos,too_few"
    assert out[1] == "msk,sft,mortality,90,auroc,0.7123,0.6000,0.8000,100,10,False"
    assert report.main(["--format", "table", "--warehouse", str(db), "--recipe", "sft"]) == 0
    assert "0.712" in capsys.readouterr().out


def test_report_without_warehouse_is_a_clear_error(tmp_path, capsys):
    assert report.main(["--warehouse", str(tmp_path / "none.duckdb")]) == 2
    assert "no warehouse yet" in capsys.readouterr().err


def columns(text: str) -> dict[str, list[str]]:
    """The columns of a per-cohort report block split into column blocks: each block's header (the line after
    ``== cohort ==`` or after an empty line) and its rows, merged by column name (cells without spaces)."""
    out: dict[str, list[str]] = {}
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("==")]
        if not lines:
            continue
        names = lines[0].split()
        for i, name in enumerate(names):
            out.setdefault(name, [ln.split()[i] for ln in lines[1:]])
    return out


def test_report_lists_baseline_recipes_and_oracle_and_the_gap_closed(tmp_path, capsys):
    db = tmp_path / "w.duckdb"
    values = {"count_baseline": 0.70, "sft": 0.75, "jepa": 0.80, "oracle_no_rate": 0.85, "oracle": 0.90}
    with duckdb.connect(str(db)) as c:
        for recipe, v in values.items():
            rows = pd.DataFrame(
                {
                    "cohort": "msk",
                    "recipe": recipe,
                    "task": ["mortality", "survival"],
                    "horizon_days": [730, 0],
                    "metric": ["auroc", "c_index"],
                    "value": [v, v - 0.1],
                    "ci_low": [v - 0.05, v - 0.15],
                    "ci_high": [v + 0.05, v - 0.05],
                    "n": [100, 120],
                    "n_pos": [30, 40],
                    "note": ["", ""],
                }
            )
            replace_partition(c, "probe_metrics", rows, {"cohort": "msk", "recipe": recipe})
    assert report.main(["--format", "wide", "--warehouse", str(db)]) == 0
    wide = columns(capsys.readouterr().out)
    assert list(wide)[3:] == ["count_baseline", "jepa", "sft", "oracle_no_rate", "oracle"]  # baseline 1st, oracles last
    assert report.main(["--format", "gap", "--warehouse", str(db)]) == 0
    out = capsys.readouterr().out
    gap = columns(out.split("Gap closed, pooled")[0])
    assert list(gap)[3:] == [
        "count_baseline",
        "jepa",
        "sft",
        "oracle_no_rate",
        "oracle",
        "closed:jepa",
        "closed:sft",
        "closed:oracle_no_rate",
    ]
    assert [gap[k][0] for k in ("task", "horizon_days", "metric")] == ["mortality", "730", "auroc"]
    assert [gap[f"closed:{r}"][0] for r in ("jepa", "sft", "oracle_no_rate")] == ["0.500", "0.250", "0.750"]
    assert "Gap closed, pooled" in out
    tail = out.split("Gap closed, pooled")[1].split("\n\n")[0].splitlines()[2:]
    pooled = {ln.split()[1]: ln.split()[2] for ln in tail if ln.strip()}
    assert pooled == {"jepa": "0.500", "oracle_no_rate": "0.750", "sft": "0.250"}
    assert out.rstrip().endswith("Probe fallbacks: none")


def test_report_delta_latent_and_seeds(tmp_path, capsys):
    """The evidence formats read the paired_differences and latent_dynamics tables the assets write."""
    from ehr_assets.eval.latent_probe import COLUMNS as LATENT_COLUMNS
    from ehr_assets.eval.paired import paired_differences

    from .test_paired import predictions

    db = tmp_path / "w.duckdb"
    preds = predictions(seed=5)
    table = paired_differences(preds, n_bootstrap=200).assign(cohort="msk")
    latent = pd.DataFrame(
        [
            ("sft", "burden", 0, 0.41, 0.30, 0.50, 90, 30, 10.0, ""),
            ("oracle", "burden", 0, 1.0, 1.0, 1.0, 90, 30, 0.1, ""),
        ],
        columns=LATENT_COLUMNS,
    ).assign(cohort="msk")
    metrics = pd.DataFrame(
        {
            "cohort": "msk",
            "recipe": ["sft", "sft_seed1", "jepa"],
            "task": "mortality",
            "horizon_days": 730,
            "metric": "auroc",
            "value": [0.70, 0.74, 0.72],
            "ci_low": 0.6,
            "ci_high": 0.8,
            "n": 100,
            "n_pos": 30,
            "note": ["", "", "fallback[tuning_undefined]: tuning split empty or single-class; C=1"],
        }
    )
    with duckdb.connect(str(db)) as c:
        replace_partition(c, "probe_metrics", metrics, {"cohort": "msk"})
    assert report.main(["--format", "delta", "--warehouse", str(db)]) == 2  # not materialized yet
    assert "no paired_differences table yet; materialize the asset 'paired_differences'" in capsys.readouterr().err
    with duckdb.connect(str(db)) as c:
        replace_partition(c, "paired_differences", table, {"cohort": "msk"})
        replace_partition(c, "latent_dynamics", latent, {"cohort": "msk"})
    assert report.main(["--format", "delta", "--warehouse", str(db)]) == 0
    out = capsys.readouterr().out
    pooled = table[(table["scope"] == "pooled_long") & (table["recipe"] == "jepa") & (table["reference"] == "sft")]
    r = pooled.iloc[0]
    assert any(
        ln.split()[:5] == ["delta", "pooled_long", "sft", "jepa", f"{r.estimate:+.3f}"]
        and f"[{r.ci_low:.2f}, {r.ci_high:.2f}]" in ln
        for ln in out.splitlines()
    )
    assert "recipe - count_baseline per task and horizon" in out and "recipe - sft per task and horizon" in out
    assert report.main(["--format", "latent", "--warehouse", str(db)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1] == "== msk ==" and lines[2].split() == ["variable", "offset_days", "sft", "oracle"]
    assert "0.410 [0.30, 0.50]" in out
    assert report.main(["--format", "seeds", "--warehouse", str(db)]) == 0
    out = capsys.readouterr().out
    assert "Pooled paired rows across training seeds" in out
    assert any(ln.split()[:7] == ["msk", "sft", "mortality", "730", "auroc", "2", "0.720"] for ln in out.splitlines())
    assert report.main(["--format", "gap", "--warehouse", str(db)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["jepa", "tuning_undefined", "1"]


def test_delta_cells_mark_a_ci_that_excludes_zero_on_either_side():
    from ehr_assets.eval.evidence import delta_wide

    rows = [("jepa", -0.04, -0.07, -0.01), ("hybrid", 0.03, 0.01, 0.05), ("jepa_only", 0.01, -0.02, 0.04)]
    table = pd.DataFrame(
        [
            dict(
                scope="task",
                task="mortality",
                horizon_days=730,
                metric="auroc",
                statistic="delta",
                recipe=r,
                reference="sft",
                estimate=e,
                ci_low=lo,
                ci_high=hi,
            )
            for r, e, lo, hi in rows
        ]
    )
    cells = delta_wide(table, "sft").iloc[0]
    assert cells["jepa"] == "-0.040 [-0.07, -0.01]*" and cells["hybrid"] == "+0.030 [0.01, 0.05]*"
    assert cells["jepa_only"] == "+0.010 [-0.02, 0.04]"
