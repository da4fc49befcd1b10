"""The data stages: a cohort's declared source read into MEDS events, the validated cohort tables, the decision
nodes and the task labels (lineage: sources -> cohort -> decision_nodes -> labels).

    sources/          one reader per ``source: kind:`` (MEDS dataset folder, cBioPortal study), the dispatch and
                      the :class:`~ehr_assets.data.sources.SourceData` they all return
    cohort.py         ``cohort_events`` (members concatenated), the validated ``cohort_table``, subject splits
    decision_nodes.py the prediction moments along each trajectory
    labels.py         task labels at decision nodes, in the MEDS label schema

Import rules: this package imports neither torch nor dagster (a test enforces it); it may import
``ehr_assets.specs``, ``ehr_assets.constants`` and, lazily for ``kind: synthetic``, ``ehr_assets.synthetic``.
Nothing is re-exported here, so importing ``ehr_assets.data.sources`` does not load pandera through ``cohort``.
"""
