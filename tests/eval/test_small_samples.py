"""Small samples told honestly: the too-few rule, its flag in the metrics, the paired differences, the gap closed and
the human tables, and the project-level minimum (``project.yaml``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_assets.eval import benchmark, paired, report, small_samples
from ehr_assets.specs import SmallSamples, SpecError, load_project


def test_the_rule_counts_positives_and_negatives_held_out():
    assert not small_samples.too_few(20, 10)
    assert small_samples.too_few(20, 9) and small_samples.too_few(19, 10)  # 9 positives; 9 negatives
    assert small_samples.too_few(np.nan, 3) and small_samples.too_few(10, np.nan)
    assert list(small_samples.too_few(np.array([8, 40]), np.array([4, 20]), SmallSamples(min_positives=4))) == [
        True,
        False,
    ]  # 4 negatives < 10
    assert not small_samples.too_few(8, 4, SmallSamples(min_positives=4, min_negatives=4))
    assert small_samples.cell(10, 3) == "too few (3+/7-)"


def predictions(n_pos: dict[str, int], n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Held-out predictions of count_baseline, sft and oracle for binary tasks at 365 d, one row per subject,
    ``n_pos[task]`` positives each; the oracle knows the label, sft half knows it."""
    rng = np.random.default_rng(seed)
    frames = []
    for task, pos in n_pos.items():
        y = np.zeros(n, dtype=bool)
        y[:pos] = True
        for recipe, signal in (("count_baseline", 0.2), ("sft", 0.8), ("oracle", 3.0)):
            frames.append(
                pd.DataFrame(
                    {
                        "recipe": recipe,
                        "task": task,
                        "horizon_days": 365,
                        "subject_id": np.arange(n),
                        "prediction_time": pd.Timestamp("2020-01-01"),
                        "boolean_value": y,
                        "float_value": np.nan,
                        "predicted_boolean_probability": signal * y + rng.normal(size=n),
                        "predicted_risk": np.nan,
                        "source_cohort": "m",
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_paired_differences_leave_too_few_out_and_say_how_many():
    table = paired.paired_differences(predictions({"big": 20, "tiny": 3}), n_bootstrap=50)
    tiny = table[table["task"] == "tiny"]
    assert len(tiny) and tiny["too_few"].all() and tiny["estimate"].isna().all() and tiny["ci_low"].isna().all()
    assert (tiny["n_pos"] == 3).all() and tiny["note"].str.startswith("too few (3+/37-) to score").all()
    assert set(tiny["statistic"]) == {"delta"}  # no gap-closed row for it
    big = table[table["task"] == "big"]
    assert not big["too_few"].any() and big["estimate"].notna().all() and (big["n_pos"] == 20).all()
    pooled = table[table["scope"] != "task"]
    assert len(pooled) and (pooled["n"] == 1).all()  # pooled over the one task that could be scored
    assert pooled["note"].str.contains("1 task x horizon pair\\(s\\) left out: too few").all()
    lenient = paired.paired_differences(
        predictions({"big": 20, "tiny": 3}), n_bootstrap=50, minimum=SmallSamples(min_positives=3)
    )
    assert not lenient["too_few"].any() and (lenient.loc[lenient["scope"] != "task", "n"] == 2).all()


def metric_rows(too_few_task: str) -> pd.DataFrame:
    rows = []
    for recipe, v in (("count_baseline", 0.6), ("sft", 0.7), ("oracle", 0.9)):
        for task, n_pos in (("big", 30), (too_few_task, 2)):
            few = small_samples.too_few(100, n_pos)
            rows.append(("m", recipe, task, 365, "auroc", v, v - 0.1, v + 0.1, 100, n_pos, few, ""))
    return pd.DataFrame(rows, columns=[*report.COLUMNS, "note"])


def test_gap_closed_and_human_tables_show_no_estimate_for_too_few():
    metrics = metric_rows("tiny")
    gaps = benchmark.gap_table(metrics)
    assert gaps.loc[gaps["task"] == "tiny", "gap_closed"].isna().all()
    assert gaps.loc[(gaps["task"] == "big") & (gaps["recipe"] == "sft"), "gap_closed"].item() == pytest.approx(1 / 3)
    summary = benchmark.gap_summary(gaps)
    assert summary.set_index("recipe").loc["sft", ["n_all", "n_too_few"]].tolist() == [1, 1]
    wide = benchmark.benchmark_wide(metrics)
    assert wide.loc[wide["task"] == "tiny", ["count_baseline", "sft", "oracle"]].isna().all(axis=None)
    text = report.wide_table(metrics)
    assert "too few (2+/98-)" in text and "0.700" in text and "0.7" + "00 [" in text
    assert "too few" in report.format_table(metrics[report.COLUMNS])


def test_the_minimum_is_a_project_setting(tiny_project):
    (tiny_project / "project.yaml").unlink()  # the tiny project declares a lenient one
    assert load_project(tiny_project).settings.small_samples == SmallSamples()
    (tiny_project / "project.yaml").write_text("small_samples: {min_positives: 5, min_negatives: 3}\n")
    assert load_project(tiny_project).settings.small_samples == SmallSamples(min_positives=5, min_negatives=3)
    (tiny_project / "project.yaml").write_text("small_samples: {min_positive: 5}\n")
    with pytest.raises(SpecError, match="project.yaml: small_samples.min_positive"):
        load_project(tiny_project)


def test_every_metric_row_carries_its_held_out_counts_and_flag():
    from ehr_assets.eval.probe_metrics import evaluate

    from .test_fallbacks import KINDS, cohort

    X, nodes, labels = cohort(120)
    m, _ = evaluate("c", "r", X, nodes, labels, KINDS, n_bootstrap=0)
    held = labels[labels["split"] == "held_out"].groupby(["task", "horizon_days"])["boolean_value"]
    counts = pd.DataFrame({"n": held.size(), "n_pos": held.sum()}).reset_index()
    got = m.merge(counts, on=["task", "horizon_days"], suffixes=("", "_held"))
    assert (got["n"] == got["n_held"]).all() and (got["n_pos"] == got["n_pos_held"]).all()
    want = small_samples.too_few(got["n"].to_numpy(), got["n_pos"].to_numpy())
    assert (got["too_few"].to_numpy() == want).all() and m["too_few"].dtype == bool
    strict = evaluate("c", "r", X, nodes, labels, KINDS, n_bootstrap=0, minimum=SmallSamples(min_positives=1000))[0]
    assert strict["too_few"].all()
