"""``project.yaml`` (optional, at the project root): settings that hold for the whole project.

small_samples:
  min_positives: 10   # held-out positives (events, for a survival task) a metric needs to be scored
  min_negatives: 10   # held-out negatives (censored rows, for a survival task) it needs
"""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel


class SmallSamples(StrictModel):
    """Below these held-out counts a metric is *too few to score* (:mod:`ehr_assets.eval.small_samples`)."""

    min_positives: int = Field(
        default=10, ge=1, description="held-out positives (survival: events) a metric needs to be scored"
    )
    min_negatives: int = Field(
        default=10, ge=1, description="held-out negatives (survival: rows without the event) a metric needs"
    )


class ProjectSettings(StrictModel):
    """``project.yaml``: optional; settings that hold for every cohort, recipe and task of the project."""

    name: str = Field(default="project", description="the file's name (project); set by the loader")
    small_samples: SmallSamples = Field(
        default_factory=SmallSamples, description="the minimum held-out sample a metric needs to be reported"
    )
