"""``study.yaml``: a declared experiment over the project's recipes -- its questions, each a set of paired
comparisons fixed before the first run, and the statistic that answers it.

A project folder with a ``study.yaml`` beside ``cohorts/``, ``models/`` and ``probes/`` gets a ``study_report`` asset
(:mod:`ehr_assets.eval.study`, :mod:`ehr_assets.defs.reporting`). Three kinds of question:

* ``delta``: ``recipe - reference`` of the held-out AUROC, averaged over the binary tasks at horizons >=
  ``long_horizon_days``, in each cohort of ``cohorts``; a seed replicate is paired with the same seed's reference;
* ``latent``: ``recipe - reference`` of the held-out R^2 of the latent-dynamics probe, over ``variables`` at
  ``offsets_days`` (every variable when empty);
* ``transfer``: the difference in differences ``(recipe on union - recipe on member) - (reference on union -
  reference on member)``, both scored on the member's held-out subjects (``member`` / ``union``).

``expect`` is the claim under test (``higher``: the recipe beats the reference; ``lower``; ``either``: no claim,
the question only asks whether they differ). Nothing here is tuned after a run: the verdicts follow from the CI.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel, check_name


class Comparison(StrictModel):
    """One paired comparison: ``recipe - reference`` on the same held-out patients."""

    recipe: str = Field(description="the recipe under test (a replicate is paired with the same seed's reference)")
    reference: str = Field(description="the recipe, count_baseline or oracle it is compared with")
    expect: Literal["higher", "lower", "either"] = Field(
        default="higher", description="the claim: recipe higher, lower, or either (no claim, only whether they differ)"
    )
    label: str = Field(default="", description='how the report names the pair ("": "recipe vs reference")')


class Question(StrictModel):
    """One question of the study, answered by its paired comparisons."""

    id: str = Field(description="short unique name of the question (q1, ...)")
    question: str = Field(description="the question in words, printed above its answer")
    kind: Literal["delta", "latent", "transfer"] = Field(
        default="delta",
        description="delta: AUROC difference over long-horizon binary tasks; latent: difference of the "
        "latent-dynamics R^2; transfer: difference in differences between a union cohort and a member",
    )
    cohorts: list[str] = Field(default_factory=list, description="delta / latent: where it is read ([]: every cohort)")
    comparisons: list[Comparison] = Field(min_length=1, description="the paired comparisons that answer it")
    variables: list[str] = Field(
        default_factory=list, description="latent: the variables pooled ([]: every one with an R^2)"
    )
    offsets_days: list[int] = Field(default_factory=list, description="latent: the offsets pooled ([]: all)")
    member: str | None = Field(default=None, description="transfer: the member cohort scored")
    union: str | None = Field(default=None, description="transfer: the union cohort trained on")

    _id = field_validator("id")(check_name)

    @model_validator(mode="after")
    def _transfer_names_cohorts(self):
        if self.kind == "transfer" and (self.member is None or self.union is None):
            raise ValueError(f"question {self.id!r}: a transfer question names its member and union cohorts")
        return self


class StudySpec(StrictModel):
    """``study.yaml`` at the project root: the study's settings and questions."""

    name: str = Field(description="the study's name; must equal the file name, study (defaults to it)")
    description: str = Field(default="", description="free text, printed at the top of the results")
    long_horizon_days: int = Field(default=365, gt=0, description="delta questions pool horizons >= this")
    n_bootstrap: int = Field(default=1000, ge=100, description="paired subject-bootstrap resamples per CI")
    seed: int = Field(default=0, description="seed of the bootstrap resamples")
    settings: dict[str, str] = Field(
        default_factory=dict, description="settings fixed before the run, printed at the top of the results"
    )
    questions: list[Question] = Field(min_length=1, description="the questions, each with its comparisons")

    _name = field_validator("name")(check_name)

    @field_validator("questions")
    @classmethod
    def _unique_ids(cls, v: list[Question]) -> list[Question]:
        ids = [q.id for q in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"question ids must be unique (repeated: {dup})")
        return v
