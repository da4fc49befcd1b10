"""``cohorts/*.yaml``: where a cohort's events come from, its decision-node rule and its splits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel, check_iso_date, check_name, check_regexes


class SyntheticSource(StrictModel):
    """Subjects from the built-in simulator with known disease dynamics (:mod:`ehr_assets.synthetic`)."""

    kind: Literal["synthetic"] = Field(description="the built-in simulator")
    profile: Literal["oncology", "pe"] = Field(
        description="which simulator: oncology (MSK-CHORD-like cancer timelines) or pe (INSPECT-like pulmonary "
        "embolism timelines)"
    )
    subjects: int = Field(gt=0, description="number of subjects to simulate")
    seed: int = Field(default=0, description="simulator seed: subject i draws from (seed, profile, i)")
    id_start: int | None = Field(default=None, ge=0, description="first subject_id; default depends on the profile")


class MedsSource(StrictModel):
    """A MEDS dataset folder (``data/**/*.parquet``, optional ``metadata/``), e.g. the INSPECT release."""

    kind: Literal["meds"] = Field(description="a MEDS dataset folder")
    path: str = Field(min_length=1, description="dataset folder; a relative path resolves against the project root")
    subject_splits: bool = Field(default=True, description="use metadata/subject_splits.parquet when present")
    max_subjects: int | None = Field(default=None, gt=0, description="keep the N smallest subject_ids (dev runs)")


class TableRule(StrictModel):
    """A row whose ``column`` full-matches ``pattern`` (case-insensitive) gets ``table`` (e.g. radiation rows of a
    TREATMENT file are procedures)."""

    column: str = Field(min_length=1, description="timeline column the rule reads")
    pattern: str = Field(min_length=1, description="regex the cell must full-match (case-insensitive)")
    table: str = Field(min_length=1, description="the event's category when the pattern matches")

    _p = field_validator("pattern")(lambda v: check_regexes([v])[0])


class TimelineRule(StrictModel):
    """How rows of one cBioPortal timeline EVENT_TYPE become MEDS events (``ehr_assets.data.sources.cbioportal``)."""

    code_columns: list[str] = Field(default_factory=list, description="columns appended to EVENT_TYPE in the code")
    value_column: str | None = Field(default=None, description="number -> numeric_value, else text_value")
    unit_column: str | None = Field(default=None, description="column whose value becomes the event's unit")
    table: str = Field(default="observation", min_length=1, description="the event's category (SMB-v1 table)")
    table_by: list[TableRule] = Field(default_factory=list, description="first matching rule sets the table")
    stop_event: bool = Field(default=False, description="also emit CODE/STOP at STOP_DATE when it is after START_DATE")


class CbioportalSource(StrictModel):
    """A cBioPortal study folder (e.g. MSK-CHORD): patient and timeline files found through its meta files, else by
    name (``data_clinical_patient.txt``, ``data_timeline*.txt``)."""

    kind: Literal["cbioportal"] = Field(description="a cBioPortal study folder")
    path: str = Field(min_length=1, description="study folder; a relative path resolves against the project root")
    anchor_date: str = Field(default="2000-01-01", description="calendar date of every patient's day 0")
    age_column: str | None = Field(
        default=None,
        description="patient column with age in years; default: AGE_AT_DIAGNOSIS, AGE, or MSK-CHORD's "
        "CURRENT_AGE_DEID (measured at last follow-up); none: no birth row",
    )
    age_at: Literal["anchor", "last_follow_up"] | None = Field(
        default=None, description="when age_column was measured: at day 0, or at OS_MONTHS after it"
    )
    demographics: list[str] | None = Field(default=None, description="patient columns that become person codes")
    event_types: dict[str, TimelineRule] = Field(default_factory=dict, description="rules by EVENT_TYPE (overrides)")
    on_malformed: Literal["report", "error"] = Field(
        default="report",
        description="report: skip malformed rows and count them per file and reason; error: refuse the first one "
        "(file:line, PATIENT_ID, reason)",
    )

    _d = field_validator("anchor_date", mode="before")(check_iso_date)

    @model_validator(mode="after")
    def _age(self) -> CbioportalSource:
        if self.age_at is not None and self.age_column is None:
            raise ValueError("age_at: set age_column too")
        return self


Source = Annotated[SyntheticSource | MedsSource | CbioportalSource, Field(discriminator="kind")]


class DecisionNodeRule(StrictModel):
    """Decision nodes are events whose code matches one of ``codes`` (full-match regexes)."""

    codes: list[str] = Field(min_length=1, description="full-match regexes of the codes that make a decision node")
    max_per_subject: int = Field(default=3, gt=0, description="keep at most this many nodes per subject, the earliest")
    min_context_events: int = Field(default=3, ge=1, description="events at or before the node, birth included")
    first_occurrence_only: bool = Field(default=False, description="keep only a code's first occurrence per subject")

    _v = field_validator("codes")(check_regexes)


class Splits(StrictModel):
    """Subject-level split fractions (they must sum to 1), used when the source gives no splits of its own."""

    train: float = Field(default=0.7, gt=0, lt=1, description="fraction of subjects the models and probes fit on")
    tuning: float = Field(default=0.1, ge=0, lt=1, description="fraction used to choose the probes' regularization")
    held_out: float = Field(default=0.2, gt=0, lt=1, description="fraction every reported metric is scored on")
    seed: int = Field(default=0, description="seed of the random assignment of subjects to splits")

    @model_validator(mode="after")
    def _sum_to_one(self) -> Splits:
        total = self.train + self.tuning + self.held_out
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + tuning + held_out must be 1.0, got {total:.4f}")
        return self


EventsAfterDeath = Literal["clip", "drop", "keep", "error"]
EVENTS_AFTER_DEATH_DEFAULT: EventsAfterDeath = "clip"


class CohortSpec(StrictModel):
    """One file of ``cohorts/``: one cohort partition of every cohort-dependent asset."""

    name: str = Field(description="the partition key; must equal the file name (defaults to it)")
    description: str = Field(default="", description="free text for people; changes no output")
    source: Source | None = Field(
        default=None, description="where the events come from (by kind: synthetic, meds, cbioportal); or union"
    )
    union: list[str] | None = Field(default=None, description="names of cohorts whose union this cohort is")
    decision_nodes: DecisionNodeRule | None = Field(
        default=None, description="which events are prediction points; required with source, refused with union"
    )
    splits: Splits | None = Field(
        default=None, description="split fractions when the source has none (default 0.7 / 0.1 / 0.2); not for unions"
    )
    events_after_death: EventsAfterDeath | None = Field(
        default=None,
        description="events later than the subject's MEDS_DEATH (deaths recorded by day): clip (default: the death "
        "moves to the end of its day, after that day's events; events on later days are dropped), drop (every "
        "later event is dropped), keep (kept; follow-up and outcomes end at the death) or error (refuse the "
        "cohort); every affected row is counted in the source report",
    )

    _n = field_validator("name")(check_name)

    @model_validator(mode="after")
    def _source_xor_union(self) -> CohortSpec:
        if (self.source is None) == (self.union is None):
            raise ValueError("declare exactly one of 'source' or 'union'")
        if self.union is not None:
            if len(self.union) < 2:
                raise ValueError("union: list at least two cohorts")
            if self.decision_nodes is not None or self.splits is not None or self.events_after_death is not None:
                raise ValueError(
                    "a union cohort inherits decision_nodes, splits and events_after_death from its members; "
                    "remove them"
                )
        else:
            if self.decision_nodes is None:
                raise ValueError("decision_nodes: required for a cohort with a source")
        return self

    @property
    def is_union(self) -> bool:
        return self.union is not None

    @property
    def after_death(self) -> EventsAfterDeath:
        """The declared policy for events after MEDS_DEATH, else the default (``clip``)."""
        return self.events_after_death or EVENTS_AFTER_DEATH_DEFAULT
