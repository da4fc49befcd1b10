"""The Dagster layer: the only package of ``ehr_assets`` that imports ``dagster``.

Every asset is a thin wrapper: it reads its inputs from the warehouse or the artifact store for *its* cohort
partition, calls the stage module that does the work (``data/``, ``text/``, ``train/``, ``embed``, ``eval/``),
writes one partition atomically and records metadata. One module per stage of the lineage graph:

* :mod:`.cohort` -- ``cohort_events``, ``cohort_table``, ``subjects``, ``decision_nodes``, ``task_labels``;
* :mod:`.sequences` -- ``tokenizer``, ``token_sequences``, ``node_contexts``, ``smb_v1_text``, ``<root>_tokens``;
* :mod:`.recipes` -- per recipe: ``<recipe>_checkpoint``, ``<recipe>_embeddings`` (trained or frozen) and its probes;
* :mod:`.evaluation` -- probe metrics (recipes, ``count_baseline``, oracles), ``cohort_latent``, ``benchmark_summary``;
* :mod:`.reporting` -- MEDS ``label_files`` / ``prediction_files`` exports and the ``cross_disease_report``;
* :mod:`.aces` / :mod:`.aces_checks` -- ACES tasks: ``aces_labels``, ``aces_node_contexts`` and their checks;
* :mod:`.checks` -- asset checks (thin wrappers over pure validators in the stage modules);
* :mod:`.k8s` -- a recipe's ``compute:`` as the ``dagster-k8s/config`` tag, and the ``k8s`` trainer's pod.

Shared pieces: :mod:`.resources` (warehouse is dagster-duckdb's; the artifact store; the trainer launcher), :mod:`.io`
(partition reads/writes, embeddings files), :mod:`.metadata` (tables, plots, small-count suppression).
:mod:`.definitions` wires everything (``ehr_assets.definitions`` forwards to it for ``dagster -m``); :mod:`.demo`
runs the whole graph.

No module here uses ``from __future__ import annotations``: Dagster inspects the ``context`` annotation.
"""
