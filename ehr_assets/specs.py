"""Load and validate the project's declarations: ``cohorts/*.yaml``, ``models/*.yaml``, ``probes/*.yaml``.

This is the only place YAML is read. Every model forbids unknown keys and checks types strictly (pydantic, which
Dagster already depends on), and every error names the file and the dotted key path, e.g.::

    SpecError: models/sft.yaml: lora.rank: Input should be a valid integer (got 'eight')

Cross-file rules (``init_from`` names an existing recipe and has no cycle, a union names existing non-union cohorts,
a probe names existing cohorts) are checked in :func:`load_project`.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import keys

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class SpecError(ValueError):
    """A declaration file is invalid. The message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_name(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(f"{v!r} is not a valid name (lowercase letters, digits, '_', starting with a letter)")
    return v


def _check_regexes(v: list[str]) -> list[str]:
    for pat in v:
        try:
            re.compile(pat)
        except re.error as e:
            raise ValueError(f"invalid regular expression {pat!r}: {e}") from None
    return v


# --------------------------------------------------------------------------------------------------------- cohorts
class SyntheticSource(_Strict):
    kind: Literal["synthetic"]
    profile: Literal["oncology", "pe"]
    subjects: int = Field(gt=0)
    seed: int = 0
    id_start: int | None = Field(default=None, ge=0, description="first subject_id; default depends on the profile")


def _check_iso_date(v):
    """YAML reads an unquoted 2000-01-01 as a date; accept it and a quoted ISO string alike."""
    import datetime as _dt

    if isinstance(v, _dt.date):
        return v.isoformat()
    if isinstance(v, str):
        try:
            _dt.date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an ISO date (YYYY-MM-DD)") from None
    return v


class MedsSource(_Strict):
    """A MEDS dataset folder (``data/**/*.parquet``, optional ``metadata/``), e.g. the INSPECT release."""

    kind: Literal["meds"]
    path: str = Field(min_length=1, description="dataset folder; a relative path resolves against the project root")
    subject_splits: bool = Field(default=True, description="use metadata/subject_splits.parquet when present")
    max_subjects: int | None = Field(default=None, gt=0, description="keep the N smallest subject_ids (dev runs)")


class TimelineRule(_Strict):
    """How rows of one cBioPortal timeline EVENT_TYPE become MEDS events (see ``ehr_assets.sources``)."""

    code_columns: list[str] = Field(default_factory=list, description="columns appended to EVENT_TYPE in the code")
    value_column: str | None = Field(default=None, description="number -> numeric_value, else text_value")
    unit_column: str | None = None
    table: str = Field(default="observation", min_length=1, description="the event's category (SMB-v1 table)")
    stop_event: bool = Field(default=False, description="also emit CODE/STOP at STOP_DATE when it is after START_DATE")


class CbioportalSource(_Strict):
    """A cBioPortal study folder: ``data_clinical_patient.txt`` and ``data_timeline_*.txt`` (e.g. MSK-CHORD)."""

    kind: Literal["cbioportal"]
    path: str = Field(min_length=1, description="study folder; a relative path resolves against the project root")
    anchor_date: str = Field(default="2000-01-01", description="calendar date of every patient's day 0")
    age_column: str | None = Field(default=None, description="patient column with age in years; default: see README")
    age_at: Literal["anchor", "last_follow_up"] | None = Field(
        default=None, description="when age_column was measured: at day 0, or at OS_MONTHS after it"
    )
    demographics: list[str] | None = Field(default=None, description="patient columns that become person codes")
    event_types: dict[str, TimelineRule] = Field(default_factory=dict, description="rules by EVENT_TYPE (overrides)")
    on_malformed: Literal["report", "error"] = "report"

    _d = field_validator("anchor_date", mode="before")(_check_iso_date)

    @model_validator(mode="after")
    def _age(self) -> CbioportalSource:
        if self.age_at is not None and self.age_column is None:
            raise ValueError("age_at: set age_column too")
        return self


Source = Annotated[SyntheticSource | MedsSource | CbioportalSource, Field(discriminator="kind")]


class DecisionNodeRule(_Strict):
    """Decision nodes are events whose code matches one of ``codes`` (full-match regexes)."""

    codes: list[str] = Field(min_length=1)
    max_per_subject: int = Field(default=3, gt=0)
    min_context_events: int = Field(default=3, ge=1, description="events at or before the node, birth included")
    first_occurrence_only: bool = Field(default=False, description="keep only a code's first occurrence per subject")

    _v = field_validator("codes")(_check_regexes)


class Splits(_Strict):
    train: float = Field(default=0.7, gt=0, lt=1)
    tuning: float = Field(default=0.1, ge=0, lt=1)
    held_out: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sum_to_one(self) -> Splits:
        total = self.train + self.tuning + self.held_out
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + tuning + held_out must be 1.0, got {total:.4f}")
        return self


class CohortSpec(_Strict):
    name: str
    description: str = ""
    source: Source | None = None
    union: list[str] | None = Field(default=None, description="names of cohorts whose union this cohort is")
    decision_nodes: DecisionNodeRule | None = None
    splits: Splits | None = None

    _n = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _source_xor_union(self) -> CohortSpec:
        if (self.source is None) == (self.union is None):
            raise ValueError("declare exactly one of 'source' or 'union'")
        if self.union is not None:
            if len(self.union) < 2:
                raise ValueError("union: list at least two cohorts")
            if self.decision_nodes is not None or self.splits is not None:
                raise ValueError("a union cohort inherits decision_nodes and splits from its members; remove them")
        else:
            if self.decision_nodes is None:
                raise ValueError("decision_nodes: required for a cohort with a source")
        return self

    @property
    def is_union(self) -> bool:
        return self.union is not None


# --------------------------------------------------------------------------------------------------------- recipes
class TinyBackboneConfig(_Strict):
    """A small transformer made from a config (random weights); the vocabulary comes from the cohort's tokenizer."""

    hidden_size: int = Field(default=64, gt=0)
    num_hidden_layers: int = Field(default=2, gt=0)
    num_attention_heads: int = Field(default=4, gt=0)
    num_key_value_heads: int = Field(default=2, gt=0)
    intermediate_size: int = Field(default=128, gt=0)
    max_position_embeddings: int = Field(default=4096, gt=0)
    head_dim: int | None = None

    @model_validator(mode="after")
    def _heads(self) -> TinyBackboneConfig:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads (or set head_dim)")
        return self


class Backbone(_Strict):
    architecture: Literal["llama", "qwen3"] = "llama"
    config: TinyBackboneConfig | None = None
    path: str | None = Field(default=None, description="local Hugging Face model folder (never downloaded)")
    tokenizer: str | None = Field(
        default=None,
        description="local tokenizer folder; default: the path folder's own tokenizer, or (config) the cohort's "
        "word-level tokenizer",
    )

    @model_validator(mode="after")
    def _one(self) -> Backbone:
        if (self.config is None) == (self.path is None):
            raise ValueError("declare exactly one of 'config' (tiny model from a config) or 'path' (local HF folder)")
        return self


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Lora(_Strict):
    rank: int = Field(default=8, gt=0)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_LINEAR), min_length=1)
    modules_to_save: list[str] = Field(
        default_factory=lambda: ["embed_tokens", "lm_head"],
        description="fully trained modules; the new EHR vocabulary needs trainable embeddings",
    )


class Jepa(_Strict):
    mask_ratio: float = Field(default=0.5, gt=0, lt=1)
    ema_tau: float = Field(default=0.996, ge=0, le=1)
    ema_tau_end: float | None = Field(default=None, ge=0, le=1, description="cosine schedule of tau toward this value")
    predictor_depth: int = Field(default=2, ge=1)
    predictor_width: int | None = Field(default=None, gt=0, description="default: the backbone's hidden size")
    max_future_tokens: int | None = Field(default=None, gt=0, description="default: half the sequence length")


class LossWeights(_Strict):
    sft: float = Field(default=1.0, ge=0)
    jepa: float = Field(default=1.0, ge=0)


class Optimizer(_Strict):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = Field(default=10, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)

    @field_validator("betas", mode="before")
    @classmethod
    def _list_to_tuple(cls, v):  # YAML has no tuples
        return tuple(v) if isinstance(v, list) else v


class Training(_Strict):
    steps: int = Field(default=200, gt=0)
    batch_size: int = Field(default=8, gt=0)
    seq_len: int = Field(default=256, ge=16)
    grad_accum: int = Field(default=1, gt=0)
    gradient_checkpointing: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    log_every: int = Field(default=10, gt=0)
    checkpoint_every: int = Field(default=0, ge=0, description="0: no step checkpoints (and nothing to resume from)")
    keep_checkpoints: int = Field(default=2, gt=0, description="step checkpoints kept for resume (the latest ones)")
    resume: bool = Field(default=True, description="resume from the latest matching step checkpoint of a killed run")
    monitor_every: int = Field(default=0, ge=0, description="collapse monitor interval in steps; 0: log_every")
    monitor_nodes: int = Field(default=64, ge=0, description="decision-node contexts the collapse monitor embeds")


class Embedding(_Strict):
    pool: Literal["last", "mean"] = "last"
    batch_size: int = Field(default=32, gt=0)
    max_tokens: int | None = Field(default=None, gt=0, description="context tokens embedded; default training.seq_len")


class RecipeSpec(_Strict):
    name: str
    description: str = ""
    extends: str | None = Field(default=None, description="inherit every key of this recipe, then override")
    format: Literal["delimited", "smb_v1"] = "delimited"
    backbone: Backbone
    lora: Lora = Lora()
    objective: Literal["sft", "jepa", "hybrid", "frozen"]
    init_from: str | None = None
    jepa: Jepa = Jepa()
    loss_weights: LossWeights = LossWeights()
    optimizer: Optimizer = Optimizer()
    training: Training = Training()
    embedding: Embedding = Embedding()

    _n = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _format_and_frozen(self) -> RecipeSpec:
        if self.format == "smb_v1" and self.tokenizer_path is None:
            raise ValueError("format: smb_v1 is plain text for a subword tokenizer; set backbone.path or backbone.tokenizer")
        if self.objective == "frozen":
            if self.backbone.path is None:
                raise ValueError("objective: frozen embeds with a given model; set backbone.path (a local HF folder)")
            if self.init_from is not None:
                raise ValueError("init_from: a frozen recipe trains nothing and starts from no checkpoint")
        return self

    @property
    def is_frozen(self) -> bool:
        """No training: embed with the backbone folder as it is."""
        return self.objective == "frozen"

    @property
    def tokenizer_path(self) -> str | None:
        """The subword tokenizer folder this recipe reads with; None: the cohort's word-level ``tokenizer`` asset."""
        return self.backbone.tokenizer or self.backbone.path

    @property
    def tokenization(self) -> tuple[str, str | None]:
        """(format, tokenizer folder): recipes with equal keys see the same token ids."""
        return (self.format, self.tokenizer_path)

    @property
    def default_tokenization(self) -> bool:
        """The shared cohort path: delimited text, word-level tokenizer fitted per cohort (``token_sequences``)."""
        return self.tokenization == ("delimited", None)

    @property
    def embed_tokens(self) -> int:
        return self.embedding.max_tokens or self.training.seq_len

    @property
    def uses_jepa(self) -> bool:
        return self.objective in ("jepa", "hybrid") and self.loss_weights.jepa > 0

    @property
    def uses_sft(self) -> bool:
        return self.objective == "sft" or (self.objective in ("jepa", "hybrid") and self.loss_weights.sft > 0)


# ---------------------------------------------------------------------------------------------------------- probes
class ProbeSpec(_Strict):
    """A task family: one outcome, one kind, one or more horizons, evaluated on the listed cohorts."""

    name: str
    description: str = ""
    kind: Literal["binary", "survival"]
    outcome_codes: list[str] = Field(min_length=1, description="full-match regexes of the outcome event's code")
    horizons_days: list[int] = Field(default_factory=list)
    max_followup_days: int | None = Field(default=None, gt=0, description="survival: administrative censoring")
    exclude_prior: bool = Field(
        default=False, description="incident outcome: drop nodes whose context already holds an outcome event"
    )
    blanking_days: int = Field(
        default=0, ge=0, description="ignore outcomes in the first N days after the node (e.g. the index episode's own)"
    )
    cohorts: list[str] = Field(min_length=1)

    _n = field_validator("name")(_check_name)
    _v = field_validator("outcome_codes")(_check_regexes)

    @model_validator(mode="after")
    def _horizons(self) -> ProbeSpec:
        if self.kind == "binary" and not self.horizons_days:
            raise ValueError("horizons_days: a binary task needs at least one horizon")
        if any(h <= 0 for h in self.horizons_days):
            raise ValueError("horizons_days: horizons must be positive")
        if self.kind == "survival" and self.horizons_days:
            raise ValueError("horizons_days: a survival task has no horizons (use max_followup_days)")
        if self.blanking_days and any(h <= self.blanking_days for h in self.horizons_days):
            raise ValueError(f"blanking_days: every horizon must exceed the blanking period ({self.blanking_days} days)")
        return self

    def horizons(self) -> list[int]:
        """Binary: the declared horizons. Survival: one pseudo-horizon 0 (time-to-event)."""
        return list(self.horizons_days) if self.kind == "binary" else [0]


# --------------------------------------------------------------------------------------------------------- project
def _read_yaml(path: Path) -> dict:
    try:
        with path.open() as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("synthetic", "meds", "cbioportal"))) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{path}: {loc}: {msg}")
    return "\n".join(lines)


def _deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


NOT_INHERITED = ("name", "description", "extends")


def _resolve_extends(path: Path, data: dict, chain: tuple[str, ...] = ()) -> dict:
    """A recipe may declare ``extends: <other recipe in the same folder>``: it inherits every key of that recipe
    (recursively) except name and description, and overrides what it declares. Ablations stay one-line diffs."""
    parent = data.get("extends")
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise SpecError(f"{path}: extends: must be the name of a recipe in {path.parent} (got {parent!r})")
    if parent in chain or parent == path.stem:
        raise SpecError(f"{path}: extends: cycle {' -> '.join((*chain, path.stem, parent))}")
    ppath = path.parent / f"{parent}.yaml"
    if not ppath.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if p != path)
        raise SpecError(f"{path}: extends: unknown recipe {parent!r} (known: {known})")
    pdata = _resolve_extends(ppath, _read_yaml(ppath), (*chain, path.stem))
    inherited = {k: v for k, v in pdata.items() if k not in NOT_INHERITED}
    return _deep_merge(inherited, data)


def load_spec(path: str | Path, model: type[BaseModel]):
    path = Path(path)
    data = _read_yaml(path)
    data.setdefault("name", path.stem)
    if data["name"] != path.stem:
        raise SpecError(f"{path}: name: {data['name']!r} must equal the file name {path.stem!r}")
    if "extends" in data and model is RecipeSpec:
        data = _resolve_extends(path, data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_errors(path, e)) from None


class Project(BaseModel):
    """All declarations of one project folder, cross-checked."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    root: Path
    cohorts: dict[str, CohortSpec]
    recipes: dict[str, RecipeSpec]  # in dependency order: a recipe comes after its init_from
    probes: dict[str, ProbeSpec]

    @cached_property
    def partition_keys(self) -> list[str]:
        return list(self.cohorts)

    def members(self, cohort: str) -> list[str]:
        """The source cohorts a cohort is made of (itself for a source cohort)."""
        spec = self.cohorts[cohort]
        return list(spec.union) if spec.is_union else [cohort]

    def tasks_for(self, cohort: str) -> list[ProbeSpec]:
        return [p for p in self.probes.values() if cohort in p.cohorts]

    def tokens_asset(self, recipe: str) -> str | None:
        """The asset holding ``recipe``'s token ids when they are not the shared default (``token_sequences``):
        ``<root>_tokens``, root = the first recipe of its ``init_from`` chain (a chain shares one tokenization)."""
        r = self.recipes[recipe]
        if r.default_tokenization:
            return None
        while r.init_from is not None:
            r = self.recipes[r.init_from]
        return keys.tokens(r.name)

    def uses_format(self, fmt: str) -> bool:
        return any(r.format == fmt for r in self.recipes.values())


def _topo_recipes(recipes: dict[str, RecipeSpec], folder: Path) -> dict[str, RecipeSpec]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join(chain[chain.index(name) :] + [name])
            raise SpecError(f"{folder / (name + '.yaml')}: init_from: cycle {cycle}")
        state[name] = 1
        parent = recipes[name].init_from
        if parent is not None:
            if parent not in recipes:
                raise SpecError(
                    f"{folder / (name + '.yaml')}: init_from: unknown recipe {parent!r} (known: {sorted(recipes)})"
                )
            visit(parent, chain + [name])
        state[name] = 2
        order.append(name)

    for n in sorted(recipes):
        visit(n, [])
    return {n: recipes[n] for n in order}


def load_project(root: str | Path) -> Project:
    root = Path(root).resolve()
    dirs = {k: root / k for k in ("cohorts", "models", "probes")}
    for k, d in dirs.items():
        if not d.is_dir():
            raise SpecError(f"{d}: folder missing (a project needs cohorts/, models/ and probes/)")

    def load_all(d: Path, model):
        return {p.stem: load_spec(p, model) for p in sorted(d.glob("*.yaml"))}

    cohorts = load_all(dirs["cohorts"], CohortSpec)
    recipes = load_all(dirs["models"], RecipeSpec)
    probes = load_all(dirs["probes"], ProbeSpec)
    if not cohorts:
        raise SpecError(f"{dirs['cohorts']}: no cohort declared (*.yaml)")

    for name, c in cohorts.items():
        if c.is_union:
            for m in c.union:
                if m not in cohorts:
                    raise SpecError(f"{dirs['cohorts'] / (name + '.yaml')}: union: unknown cohort {m!r}")
                if cohorts[m].is_union:
                    raise SpecError(f"{dirs['cohorts'] / (name + '.yaml')}: union: {m!r} is itself a union")
    cohorts = {n: _resolve_source_path(c, root) for n, c in cohorts.items()}
    recipes = {n: resolve_backbone_paths(r, root) for n, r in recipes.items()}
    for name, r in recipes.items():
        parent = recipes.get(r.init_from) if r.init_from else None
        if parent is not None and parent.is_frozen:
            raise SpecError(
                f"{dirs['models'] / (name + '.yaml')}: init_from: {r.init_from!r} is a frozen recipe (no checkpoint)"
            )
        if parent is not None and parent.tokenization != r.tokenization:
            raise SpecError(
                f"{dirs['models'] / (name + '.yaml')}: format/backbone.tokenizer: must equal those of init_from "
                f"{r.init_from!r} ({parent.tokenization} vs {r.tokenization}): token ids would differ"
            )
        if r.objective == "sft" and r.loss_weights.sft == 0:
            raise SpecError(f"{dirs['models'] / (name + '.yaml')}: loss_weights.sft: an sft recipe needs sft > 0")
        if r.objective in ("jepa", "hybrid") and r.loss_weights.jepa == 0:
            raise SpecError(f"{dirs['models'] / (name + '.yaml')}: loss_weights.jepa: must be > 0 for {r.objective}")
    for name, p in probes.items():
        for c in p.cohorts:
            if c not in cohorts:
                raise SpecError(f"{dirs['probes'] / (name + '.yaml')}: cohorts: unknown cohort {c!r}")
    return Project(root=root, cohorts=cohorts, recipes=_topo_recipes(recipes, dirs["models"]), probes=probes)


def _abs(path: str, root: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def _resolve_source_path(spec: CohortSpec, root: Path) -> CohortSpec:
    """A relative source path resolves against the project root (not the working directory)."""
    src = spec.source
    if src is None or not hasattr(src, "path"):
        return spec
    return spec.model_copy(update={"source": src.model_copy(update={"path": _abs(src.path, root)})})


def resolve_backbone_paths(recipe: RecipeSpec, root: Path) -> RecipeSpec:
    """``recipe`` with relative ``backbone.path`` / ``backbone.tokenizer`` resolved against the project ``root``."""
    bb = recipe.backbone
    upd = {k: _abs(getattr(bb, k), root) for k in ("path", "tokenizer") if getattr(bb, k) is not None}
    return recipe.model_copy(update={"backbone": bb.model_copy(update=upd)}) if upd else recipe


def default_project_dir() -> Path:
    """The project folder: $EHR_PROJECT_DIR, else the repository this package lives in."""
    import os

    env = os.environ.get("EHR_PROJECT_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent
