"""Load and validate the project's declarations: ``cohorts/*.yaml``, ``models/*.yaml``, ``probes/*.yaml``.

This is the only place YAML is read. Every model forbids unknown keys and checks types strictly (pydantic, which
Dagster already depends on), and every error names the file and the dotted key path, e.g.::

    SpecError: models/sft.yaml: lora.rank: Input should be a valid integer (got 'eight')

Cross-file rules (``init_from`` names an existing recipe and has no cycle, a union names existing non-union cohorts,
a probe names existing cohorts) are checked in :func:`load_project`.

Modules: :mod:`.base` (strict base model, validators, :class:`SpecError`), :mod:`.cohort`, :mod:`.recipe`,
:mod:`.probe` (one per declaration folder),
:mod:`.study` (``study.yaml``, optional) and :mod:`.project` (reading files, ``extends:``, cross-file rules).
"""

from .base import NAME_RE, SpecError, StrictModel
from .cohort import (
    CbioportalSource,
    CohortSpec,
    DecisionNodeRule,
    MedsSource,
    Source,
    Splits,
    SyntheticSource,
    TableRule,
    TimelineRule,
)
from .probe import ProbeSpec
from .project import (
    NOT_INHERITED,
    Project,
    default_project_dir,
    load_project,
    load_spec,
    resolve_backbone_paths,
)
from .recipe import (
    ALL_LINEAR,
    Backbone,
    Compute,
    Embedding,
    Jepa,
    Lora,
    LossWeights,
    Optimizer,
    RecipeSpec,
    TinyBackboneConfig,
    Training,
)
from .settings import ProjectSettings, SmallSamples
from .study import Comparison, Question, StudySpec

__all__ = [
    "ALL_LINEAR",
    "NAME_RE",
    "NOT_INHERITED",
    "Backbone",
    "CbioportalSource",
    "CohortSpec",
    "Comparison",
    "Compute",
    "DecisionNodeRule",
    "Embedding",
    "Jepa",
    "Lora",
    "LossWeights",
    "MedsSource",
    "Optimizer",
    "ProbeSpec",
    "ProjectSettings",
    "Question",
    "SmallSamples",
    "Project",
    "RecipeSpec",
    "Source",
    "SpecError",
    "Splits",
    "StrictModel",
    "StudySpec",
    "SyntheticSource",
    "TableRule",
    "TimelineRule",
    "TinyBackboneConfig",
    "Training",
    "default_project_dir",
    "load_project",
    "load_spec",
    "resolve_backbone_paths",
]
