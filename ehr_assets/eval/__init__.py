"""Evaluation: what a frozen representation is worth, measured the same way for every recipe.

Where each step lives (each module's docstring says why it is shaped the way it is):

* :mod:`~ehr_assets.eval.metrics` -- scoring functions (AUROC, AUPRC, Brier; Harrell's C, time-dependent AUC,
  integrated Brier score), their fast numpy replicas, and the subject-level bootstrap CI;
* :mod:`~ehr_assets.eval.probes` -- the linear probes on frozen features (logistic regression, Cox PH);
* :mod:`~ehr_assets.eval.baseline` -- the count-feature baseline (the floor);
* :mod:`~ehr_assets.eval.oracle` -- the synthetic cohorts' hidden state at each node (the ceiling);
* :mod:`~ehr_assets.eval.probe_metrics` -- every task and horizon of a cohort probed: the ``probe_metrics`` and
  ``probe_predictions`` rows;
* :mod:`~ehr_assets.eval.benchmark` -- each recipe placed between the floor and the ceiling (gap closed);
* :mod:`~ehr_assets.eval.exports` -- labels and predictions as MEDS files for other tools;
* :mod:`~ehr_assets.eval.report` -- the text tables of ``python -m ehr_assets.report``.

Import rules: nothing in this package imports torch or dagster (the Dagster assets in ``ehr_assets.defs`` call these
functions); besides numpy, pandas, scikit-learn and scikit-survival it may import the project's ``specs``,
``keys``, ``constants``, ``warehouse`` and ``synthetic`` modules. The package ``__init__`` re-exports nothing, so
importing one module loads only what that module needs.
"""
