"""Evaluation: what a frozen representation is worth, measured the same way for every recipe.

Where each step lives (each module's docstring says why it is shaped the way it is), in import order -- a module
imports only modules above it:

* :mod:`~ehr_assets.eval.metrics` -- scoring functions (AUROC, AUPRC, Brier; Harrell's C, time-dependent AUC,
  integrated Brier score), their fast numpy replicas, and the subject-level bootstrap CI;
* :mod:`~ehr_assets.eval.probes` -- what a probe takes and returns (``Split``, ``Metric``, ``ProbeResult``) and the
  binary probe (logistic regression);
* :mod:`~ehr_assets.eval.survival` -- the survival probe (PCA + ridge Cox PH), step by step;
* :mod:`~ehr_assets.eval.fallbacks` -- a probe's departures from its protocol, written into its metrics' notes;
* :mod:`~ehr_assets.eval.probe_metrics` -- ``evaluate``: every task and horizon of a cohort probed, giving the
  ``probe_metrics`` and ``probe_predictions`` rows;
* :mod:`~ehr_assets.eval.baseline` -- the count-feature baseline (the floor);
* :mod:`~ehr_assets.eval.oracle` -- the synthetic cohorts' hidden state at each node (the ceiling);
* :mod:`~ehr_assets.eval.benchmark` -- each recipe placed between the floor and the ceiling (gap closed, plot);
* :mod:`~ehr_assets.eval.resample` -- the subject bootstrap as weights shared by every recipe (paired draws);
* :mod:`~ehr_assets.eval.paired` -- recipe minus baseline / sft per task, pooled, and the gap closed, with CIs;
* :mod:`~ehr_assets.eval.chance` -- trained recipes above chance where the baseline is (the embedding path's test);
* :mod:`~ehr_assets.eval.latent_probe` -- ridge read-outs of the hidden state now and 180 / 365 days later;
* :mod:`~ehr_assets.eval.replicates` -- mean and spread across training seeds;
* :mod:`~ehr_assets.eval.render` -- tables as text that fits a terminal (per-cohort and column blocks);
* :mod:`~ehr_assets.eval.evidence`, :mod:`~ehr_assets.eval.plots` -- those tables as text and as pictures;
* :mod:`~ehr_assets.eval.exports` -- labels and predictions as MEDS files for other tools;
* :mod:`~ehr_assets.eval.summary` -- the answer in thirty seconds (the demo's ending, ``--format summary``);
* :mod:`~ehr_assets.eval.report` -- the text tables of ``python -m ehr_assets.report`` and ``markdown_table``;
* :mod:`~ehr_assets.eval.results` -- every table and plot as files (the demo's ``results/`` folder).

Import rules: nothing in this package imports torch or dagster (the Dagster assets call these functions). Besides
numpy, pandas, pyarrow, scikit-learn, scikit-survival, meds, duckdb and matplotlib it imports only the project's
``constants``, ``keys``, ``specs``, ``warehouse`` and ``synthetic`` modules, none of which imports back. This
``__init__`` re-exports nothing, so importing one module loads only what that module needs.
"""
