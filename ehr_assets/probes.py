"""Compatibility shim: moved to :mod:`ehr_assets.eval.probes` (types, binary probe), :mod:`ehr_assets.eval.survival`
(Cox probe), :mod:`ehr_assets.eval.metrics` (scores, bootstrap) and :mod:`ehr_assets.eval.baseline` (count
features); removed once the Dagster layer imports the new modules.

The underscored names are the old private names that tests/test_probes.py still reads as ``probes._name``.
"""

from .eval.baseline import count_features, select_count_vocab
from .eval.metrics import auprc as _auprc
from .eval.metrics import auprc_fast as _auprc_fast
from .eval.metrics import auroc as _auroc
from .eval.metrics import auroc_fast as _auroc_fast
from .eval.metrics import bootstrap_ci
from .eval.metrics import brier as _brier
from .eval.metrics import brier_fast as _brier_fast
from .eval.metrics import harrell as _harrell
from .eval.metrics import harrell_fast as _harrell_fast
from .eval.metrics import ibs as _ibs
from .eval.metrics import ibs_fast as _ibs_fast
from .eval.metrics import td_auc as _td_auc
from .eval.metrics import td_auc_fast as _td_auc_fast
from .eval.metrics import to_structured as _structured
from .eval.probes import BINARY_METRICS, SURVIVAL_METRICS, Metric, ProbeResult, Split, binary_probe
from .eval.survival import survival_at as _survival_at
from .eval.survival import survival_probe

__all__ = [
    "Metric",
    "ProbeResult",
    "Split",
    "binary_probe",
    "survival_probe",
    "bootstrap_ci",
    "select_count_vocab",
    "count_features",
    "BINARY_METRICS",
    "SURVIVAL_METRICS",
    "_auprc",
    "_auprc_fast",
    "_auroc",
    "_auroc_fast",
    "_brier",
    "_brier_fast",
    "_harrell",
    "_harrell_fast",
    "_ibs",
    "_ibs_fast",
    "_structured",
    "_survival_at",
    "_td_auc",
    "_td_auc_fast",
]
