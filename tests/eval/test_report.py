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
    assert out[0] == "cohort,recipe,task,horizon_days,metric,value,ci_low,ci_high,n"
    assert out[1] == "msk,sft,mortality,90,auroc,0.7123,0.6000,0.8000,100"
    assert report.main(["--format", "table", "--warehouse", str(db), "--recipe", "sft"]) == 0
    assert "0.712" in capsys.readouterr().out


def test_report_without_warehouse_is_a_clear_error(tmp_path, capsys):
    assert report.main(["--warehouse", str(tmp_path / "none.duckdb")]) == 2
    assert "no warehouse yet" in capsys.readouterr().err


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
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[4:] == ["count_baseline", "jepa", "sft", "oracle_no_rate", "oracle"]  # baseline first, oracles last
    assert report.main(["--format", "gap", "--warehouse", str(db)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[4:] == [
        "count_baseline",
        "jepa",
        "sft",
        "oracle_no_rate",
        "oracle",
        "closed:jepa",
        "closed:sft",
        "closed:oracle_no_rate",
    ]
    row = lines[1].split()
    assert row[:4] == ["msk", "mortality", "730", "auroc"] and row[9:] == ["0.500", "0.250", "0.750"]
    assert "Gap closed, pooled" in out
    tail = out.split("Gap closed, pooled")[1].splitlines()[2:]
    pooled = {ln.split()[1]: ln.split()[2] for ln in tail if ln.strip()}
    assert pooled == {"jepa": "0.500", "oracle_no_rate": "0.750", "sft": "0.250"}
