import duckdb
import pandas as pd

from ehr_assets import report
from ehr_assets.warehouse import replace_partition


def test_report_csv_and_table(tmp_path, capsys):
    db = tmp_path / "w.duckdb"
    rows = pd.DataFrame(
        {
            "cohort": ["msk", "msk"], "recipe": ["sft", "sft"], "task": ["mortality", "survival"],
            "horizon_days": [90, 0], "metric": ["auroc", "c_index"], "value": [0.71234, 0.65],
            "ci_low": [0.6, 0.6], "ci_high": [0.8, 0.7], "n": [100, 120], "n_pos": [10, 30], "note": ["", ""],
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
