"""Seeded synthetic cohorts through the package's real stages (events, validation, subjects, decision nodes), small
enough for a test: the fixtures the columnar rewrites are held to against the reference implementations."""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

from ehr_assets.data import cohort as cohort_stage
from ehr_assets.data import decision_nodes as nodes_stage
from ehr_assets.specs import load_project

from ..conftest import REPO


@cache
def seeded_cohort(name: str, subjects: int) -> SimpleNamespace:
    """The shipped cohort ``name`` (its profile, seed and splits) at ``subjects`` subjects: ``project``, validated
    ``events``, ``subjects`` and ``nodes``. Cached: treat the frames as read-only."""
    project = load_project(REPO)
    spec = project.cohorts[name]
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"subjects": subjects})})
    project = project.model_copy(update={"cohorts": {**project.cohorts, name: spec}})
    events = cohort_stage.validate_events(cohort_stage.cohort_events(project, name), name)
    subj = cohort_stage.subjects_table(project, name, events)
    nodes = nodes_stage.decision_nodes(project, name, events, subj)
    return SimpleNamespace(project=project, name=name, events=events, subjects=subj, nodes=nodes)
