"""Prediction files as meds-evaluation (PyPI ``meds-evaluation``, a test dependency) reads them: its own
``PredictionSchema`` accepts them, and its scorer computes the same AUROC as ``probe_metrics`` because the project
scores exactly the float32 values it writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from meds_evaluation.evaluate import evaluate_binary_classification
from meds_evaluation.schema import PredictionSchema as MedsEvaluationPredictionSchema
from sklearn.metrics import roc_auc_score

from ehr_assets.eval import exports
from ehr_assets.eval.probes import Split, binary_probe


def test_our_prediction_schema_is_meds_evaluations():
    ours, theirs = exports.PredictionSchema.schema(), MedsEvaluationPredictionSchema.schema()
    assert ours.names == theirs.names
    assert [f.type for f in ours] == [f.type for f in theirs]  # float32 probability, bool value


def _probe_with_a_float32_tie():
    """A held-out set where two probabilities differ by ~1e-10: distinct in float64, one value in float32. With
    the positive of the pair below the negative, AUROC is 0.75 on the float64 scores and 0.875 on the float32 ones."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    train = Split(X=x[:, None], groups=np.arange(200), y=(x + 0.5 * rng.normal(size=200) > 0).astype(int))
    test = Split(X=np.array([[0.0], [1e-9], [-1.0], [1.0]]), groups=np.arange(4), y=np.array([1, 0, 0, 1]))
    return binary_probe(train, Split(X=np.zeros((0, 1)), groups=np.zeros(0)), test, n_bootstrap=0), test


def test_the_project_auroc_is_the_auroc_of_the_values_written(tmp_path):
    res, test = _probe_with_a_float32_tie()
    auroc = next(m.value for m in res.metrics if m.metric == "auroc")
    assert auroc == 0.875
    preds = pd.DataFrame(
        {
            "recipe": "sft",
            "task": "mortality",
            "horizon_days": 365,
            "subject_id": np.arange(4, dtype=np.int64),
            "prediction_time": pd.Timestamp("2020-01-01"),
            "boolean_value": test.y.astype(bool),
            "predicted_boolean_probability": res.test_scores,
        }
    )
    exports.write_prediction_files(preds, tmp_path)
    table = pq.read_table(tmp_path / "sft" / "mortality_365d.parquet")
    MedsEvaluationPredictionSchema.validate(table)
    assert MedsEvaluationPredictionSchema.align(table).schema == table.schema  # nothing to cast: already its types
    df = table.to_pandas()
    assert roc_auc_score(df["boolean_value"], df["predicted_boolean_probability"]) == auroc
    theirs = evaluate_binary_classification(pl.from_arrow(table))["samples_equally_weighted"]
    assert theirs["roc_auc_score"] == auroc
    assert df["predicted_boolean_value"].tolist() == (df["predicted_boolean_probability"] > 0.5).tolist()


def test_a_file_missing_the_value_column_is_what_meds_evaluation_cannot_score(tmp_path):
    """Why ``predicted_boolean_value`` is written: meds-evaluation's scorer reads both columns."""
    res, test = _probe_with_a_float32_tie()
    exports.write_prediction_files(
        pd.DataFrame(
            {
                "recipe": "r",
                "task": "t",
                "horizon_days": 1,
                "subject_id": np.arange(4, dtype=np.int64),
                "prediction_time": pd.Timestamp("2020-01-01"),
                "boolean_value": test.y.astype(bool),
                "predicted_boolean_probability": res.test_scores,
            }
        ),
        tmp_path,
    )
    table = pq.read_table(tmp_path / "r" / "t_1d.parquet").drop(["predicted_boolean_value"])
    with pytest.raises(Exception, match="predicted_boolean_value"):
        evaluate_binary_classification(pl.from_arrow(table))
