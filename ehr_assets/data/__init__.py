"""The data stages: a cohort's declared source read into MEDS events, the validated cohort tables, the decision
nodes and the task labels (lineage: sources -> cohort -> decision_nodes -> labels).

    sources/          ``read_source``: a cohort's ``source:`` -> :class:`~ehr_assets.data.sources.base.SourceData`
      base.py           SourceData, SourceError (what every reader returns and raises)
      meds_dataset.py   ``kind: meds``: a MEDS dataset folder; ``place_static_rows``
      cbioportal/       ``kind: cbioportal``: a study folder (tsv.py: the file format; timeline.py: the
                        ``data_timeline_*.txt`` rules; patients.py: ids, birth, demographics, death)
    cohort.py         ``cohort_events`` (members concatenated), the validated ``cohort_table``, subject splits
    decision_nodes.py the prediction moments along each trajectory
    labels.py         task labels at decision nodes, in the MEDS label schema
    aces_tasks.py     ACES tasks (``kind: aces``): labels and prediction times from an es-aces run on the events
    aces_runner.py    the script that runs ACES in its own environment (imports only ACES; ``python -I``)

Import rules: this package imports neither torch nor dagster (a test enforces it); it may import
``ehr_assets.specs``, ``ehr_assets.constants`` and, lazily for ``kind: synthetic``, ``ehr_assets.synthetic``.
Nothing is re-exported here, so importing ``ehr_assets.data.sources`` does not load pandera through ``cohort``.
"""
