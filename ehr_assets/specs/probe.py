"""``probes/*.yaml``: a task family (outcome codes, kind, horizons) and the cohorts it is evaluated on; or, with
``kind: aces``, an ACES task config whose labels and prediction times ACES extracts (:mod:`.data.aces_tasks`); or,
with ``kind: meds_labels``, a MEDS label file or folder made by another tool (:mod:`.data.label_files`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel, check_name, check_regexes


class ProbeSpec(StrictModel):
    """A task family: one outcome, one kind, one or more horizons, evaluated on the listed cohorts."""

    name: str = Field(description="the task's name in metrics and label files; must equal the file name")
    description: str = Field(default="", description="free text for people; changes no output")
    kind: Literal["binary", "survival", "aces", "meds_labels"] = Field(
        description="binary: outcome within each horizon (logistic probe, AUROC); survival: time to the outcome "
        "(Cox probe, C-index); aces: labels and prediction times from an ACES task config; meds_labels: from a "
        "MEDS label file (labels)"
    )
    outcome_codes: list[str] = Field(default_factory=list, description="full-match regexes of the outcome event's code")
    horizons_days: list[int] = Field(
        default_factory=list, description="binary: one task per horizon (days after the node); none for survival, aces"
    )
    max_followup_days: int | None = Field(default=None, gt=0, description="survival: administrative censoring")
    exclude_prior: bool = Field(
        default=False, description="incident outcome: drop nodes whose context already holds an outcome event"
    )
    blanking_days: int = Field(
        default=0, ge=0, description="ignore outcomes in the first N days after the node (e.g. the index episode's own)"
    )
    cohorts: list[str] = Field(min_length=1, description="cohorts (partitions) the task is labelled and probed on")
    config: str | None = Field(default=None, description="aces: the ACES task config (YAML), relative to the project")
    predicates: str | None = Field(default=None, description="aces: an ACES predicates file overriding the config's")
    labels: str | None = Field(
        default=None,
        description="meds_labels: a MEDS label file (parquet, meds.LabelSchema) or a folder of them, relative to "
        "the project",
    )
    value: Literal["boolean", "integer", "float", "categorical"] | None = Field(
        default=None,
        description="meds_labels: the value column that is the label (<value>_value); default: the one the file fills",
    )
    positive_values: list[int | str] = Field(
        default_factory=list,
        description="meds_labels with an integer or categorical value: the values that count as positive",
    )
    threshold: float | None = Field(
        default=None, description="meds_labels with a float value: a value at or above it counts as positive"
    )

    _n = field_validator("name")(check_name)
    _v = field_validator("outcome_codes")(check_regexes)

    @model_validator(mode="after")
    def _label_file(self) -> ProbeSpec:
        if self.kind == "meds_labels":
            if self.labels is None:
                raise ValueError("labels: a task of kind meds_labels needs the path of its MEDS label file or folder")
            given = [
                k for k in ("outcome_codes", "horizons_days", "exclude_prior", "blanking_days") if getattr(self, k)
            ]
            if given:
                raise ValueError(f"{given[0]}: a meds_labels task takes its labels and times from its file")
            if self.value in ("integer", "categorical") and not self.positive_values:
                raise ValueError(f"positive_values: a {self.value} label needs the values that count as positive")
            if self.value == "float" and self.threshold is None:
                raise ValueError("threshold: a float label needs the value at or above which it is positive")
            if self.positive_values and self.value not in ("integer", "categorical"):
                raise ValueError("positive_values: only for value: integer or categorical")
            if self.threshold is not None and self.value != "float":
                raise ValueError("threshold: only for value: float")
        elif any(getattr(self, k) is not None for k in ("labels", "value", "threshold")) or self.positive_values:
            raise ValueError(f"labels: only a task of kind meds_labels reads a label file (this one is {self.kind})")
        return self

    @model_validator(mode="after")
    def _aces(self) -> ProbeSpec:
        if self.kind == "meds_labels":
            return self
        if self.kind == "aces":
            if self.config is None:
                raise ValueError("config: a task of kind aces needs the path of its ACES task config")
            given = [
                k for k in ("outcome_codes", "horizons_days", "exclude_prior", "blanking_days") if getattr(self, k)
            ]
            if given:
                raise ValueError(f"{given[0]}: an ACES task takes its labels and windows from its config")
        else:
            if self.config is not None or self.predicates is not None:
                raise ValueError(f"config: only a task of kind aces reads an ACES config (this one is {self.kind})")
            if not self.outcome_codes:
                raise ValueError("outcome_codes: at least one outcome code pattern is needed")
        return self

    @model_validator(mode="after")
    def _horizons(self) -> ProbeSpec:
        if self.kind == "binary" and not self.horizons_days:
            raise ValueError("horizons_days: a binary task needs at least one horizon")
        if any(h <= 0 for h in self.horizons_days):
            raise ValueError("horizons_days: horizons must be positive")
        if self.kind == "survival" and self.horizons_days:
            raise ValueError("horizons_days: a survival task has no horizons (use max_followup_days)")
        if self.blanking_days and any(h <= self.blanking_days for h in self.horizons_days):
            raise ValueError(
                f"blanking_days: every horizon must exceed the blanking period ({self.blanking_days} days)"
            )
        return self

    def horizons(self) -> list[int]:
        """Binary: the declared horizons. Survival: one pseudo-horizon 0 (time-to-event). ACES: 0 (the window is
        the config's)."""
        return list(self.horizons_days) if self.kind == "binary" else [0]

    @property
    def probe_kind(self) -> str:
        """How its labels are probed: ``binary`` (an ACES or label-file task's label is boolean) or ``survival``."""
        return "binary" if self.own_times else self.kind

    @property
    def own_times(self) -> bool:
        """The task brings its own prediction times (an ACES config, a MEDS label file), not the decision nodes."""
        return self.kind in ("aces", "meds_labels")
