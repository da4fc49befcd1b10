"""Reading the declaration files: YAML -> validated models, ``extends:`` inheritance, the cross-file rules of a
project (see the package docstring), and the resolution of relative paths against the project root."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import keys
from .base import SpecError
from .cohort import CohortSpec
from .probe import ProbeSpec
from .recipe import RecipeSpec
from .settings import ProjectSettings
from .study import StudySpec


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
        loc = (
            ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("synthetic", "meds", "cbioportal")))
            or "(top level)"
        )
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


NOT_INHERITED = ("name", "description", "extends", "replicate_seeds")  # an ablation does not multiply its compute


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

    root: Path = Field(description="the project folder (EHR_PROJECT_DIR; default the repository root)")
    cohorts: dict[str, CohortSpec] = Field(description="cohorts/*.yaml by name: the partitions")
    recipes: dict[str, RecipeSpec] = Field(
        description="models/*.yaml by name, seed replicates added, in dependency order (after their init_from)"
    )
    probes: dict[str, ProbeSpec] = Field(description="probes/*.yaml by name: the tasks")
    study: StudySpec | None = Field(default=None, description="study.yaml, when the project declares one")
    settings: ProjectSettings = Field(
        default=ProjectSettings(), description="project.yaml, when the project declares one (e.g. small_samples)"
    )

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
        base = keys.parse_replicate(r.name)[0]  # a seed replicate reads the ids of the recipe it replicates
        return keys.tokens(base if base in self.recipes else r.name)

    def uses_format(self, fmt: str) -> bool:
        return any(r.format == fmt for r in self.recipes.values())


def _replicate(r: RecipeSpec, seed: int, recipes: dict[str, RecipeSpec], folder: Path) -> RecipeSpec:
    """Recipe ``r`` trained with ``training.seed = seed``; its ``init_from`` is the parent's replicate of the same
    seed, or the parent itself when that is the parent's own training seed."""
    file = folder / f"{r.name}.yaml"
    parent = recipes.get(r.init_from) if r.init_from else None
    init_from = r.init_from
    if parent is not None and parent.training.seed != seed:
        if seed not in parent.replicate_seeds:
            raise SpecError(
                f"{file}: replicate_seeds: seed {seed} starts from init_from {parent.name!r}, which has no replicate "
                f"of seed {seed}: add {seed} to replicate_seeds of {folder / (parent.name + '.yaml')}"
            )
        init_from = keys.replicate(parent.name, seed)
    return r.model_copy(
        update={
            "name": keys.replicate(r.name, seed),
            "description": f"{r.name} with training.seed {seed} (a replicate). {r.description}".strip(),
            "replicate_seeds": [],
            "init_from": init_from,
            "training": r.training.model_copy(update={"seed": seed}),
        }
    )


def expand_replicates(recipes: dict[str, RecipeSpec], folder: Path) -> dict[str, RecipeSpec]:
    """``recipes`` plus ``<name>_seed<k>`` for each declared replicate seed (:func:`ehr_assets.keys.replicate`).
    A declared name that looks like a replicate, a replicate of a frozen recipe (nothing is trained) or a replicate
    seed equal to the recipe's own training seed is an error naming the file and key."""
    out = dict(recipes)
    for name, r in recipes.items():
        file = folder / f"{name}.yaml"
        if keys.parse_replicate(name)[1] is not None:
            raise SpecError(f"{file}: name: {name!r} ends like a seed replicate (<recipe>_seed<k>); choose another")
        if not r.replicate_seeds:
            continue
        if r.is_frozen:
            raise SpecError(f"{file}: replicate_seeds: a frozen recipe trains nothing; no seed changes it")
        if r.training.seed in r.replicate_seeds:
            raise SpecError(f"{file}: replicate_seeds: {r.training.seed} is the recipe's own training.seed")
        for seed in r.replicate_seeds:
            out[keys.replicate(name, seed)] = _replicate(r, seed, recipes, folder)
    return out


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
    for d in dirs.values():
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
    recipes = expand_replicates(recipes, dirs["models"])  # <recipe>_seed<k>: recipes like the others from here on
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
        if parent is not None and parent.finetune != r.finetune:
            raise SpecError(
                f"{dirs['models'] / (name + '.yaml')}: finetune: {r.finetune!r} cannot continue init_from "
                f"{r.init_from!r} ({parent.finetune!r}): its checkpoint holds other weights"
            )
        if r.objective == "sft" and r.loss_weights.sft == 0:
            raise SpecError(f"{dirs['models'] / (name + '.yaml')}: loss_weights.sft: an sft recipe needs sft > 0")
        if r.objective in ("jepa", "hybrid") and r.loss_weights.jepa == 0:
            raise SpecError(f"{dirs['models'] / (name + '.yaml')}: loss_weights.jepa: must be > 0 for {r.objective}")
    for name, p in probes.items():
        for c in p.cohorts:
            if c not in cohorts:
                raise SpecError(f"{dirs['probes'] / (name + '.yaml')}: cohorts: unknown cohort {c!r}")
    probes = {n: _resolve_aces_paths(p, root, dirs["probes"] / f"{n}.yaml") for n, p in probes.items()}
    study = _load_study(root / "study.yaml", cohorts, recipes)
    recipes = _topo_recipes(recipes, dirs["models"])
    settings_file = root / "project.yaml"
    settings = load_spec(settings_file, ProjectSettings) if settings_file.is_file() else ProjectSettings()
    return Project(root=root, cohorts=cohorts, recipes=recipes, probes=probes, study=study, settings=settings)


STUDY_REFERENCES = (keys.COUNT_BASELINE, "oracle")  # feature sets a study may compare that are not recipes


def _load_study(path: Path, cohorts: dict[str, CohortSpec], recipes: dict[str, RecipeSpec]) -> StudySpec | None:
    """``study.yaml`` (None when absent), its recipes and cohorts checked against the project's."""
    if not path.is_file():
        return None
    study = load_spec(path, StudySpec)
    for i, q in enumerate(study.questions):
        where = f"{path}: questions.{i} ({q.id})"
        for j, c in enumerate(q.comparisons):
            for field in ("recipe", "reference"):
                name = getattr(c, field)
                if name not in recipes and name not in STUDY_REFERENCES:
                    raise SpecError(f"{where}: comparisons.{j}.{field}: unknown recipe {name!r}")
        for c in q.cohorts:
            if c not in cohorts:
                raise SpecError(f"{where}: cohorts: unknown cohort {c!r}")
        if q.kind == "transfer":
            union = cohorts.get(q.union)
            if union is None or not union.is_union:
                raise SpecError(f"{where}: union: {q.union!r} is not a union cohort of this project")
            if q.member not in union.union:
                raise SpecError(f"{where}: member: {q.member!r} is not a member of {q.union!r} {list(union.union)}")
    return study


def _abs(path: str, root: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def _resolve_source_path(spec: CohortSpec, root: Path) -> CohortSpec:
    """A relative source path resolves against the project root (not the working directory)."""
    src = spec.source
    if src is None or not hasattr(src, "path"):
        return spec
    return spec.model_copy(update={"source": src.model_copy(update={"path": _abs(src.path, root)})})


def _resolve_aces_paths(probe: ProbeSpec, root: Path, file: Path) -> ProbeSpec:
    """An ACES task's ``config`` / ``predicates`` (a missing file is an error) and a label-file task's ``labels``
    resolved against the project root."""
    upd = {k: _abs(getattr(probe, k), root) for k in ("config", "predicates") if getattr(probe, k) is not None}
    for k, path in upd.items():
        if not Path(path).is_file():
            raise SpecError(f"{file}: {k}: ACES file {path} not found (paths are relative to the project {root})")
    if probe.labels is not None:  # a MEDS label file or folder (read, and its absence reported, by the label stage)
        upd["labels"] = _abs(probe.labels, root)
    return probe.model_copy(update=upd) if upd else probe


def resolve_backbone_paths(recipe: RecipeSpec, root: Path) -> RecipeSpec:
    """``recipe`` with relative ``backbone.path`` / ``backbone.tokenizer`` resolved against the project ``root``."""
    bb = recipe.backbone
    upd = {k: _abs(getattr(bb, k), root) for k in ("path", "tokenizer") if getattr(bb, k) is not None}
    return recipe.model_copy(update={"backbone": bb.model_copy(update=upd)}) if upd else recipe


def default_project_dir() -> Path:
    """The project folder: $EHR_PROJECT_DIR, else the repository this package lives in."""
    import os

    env = os.environ.get("EHR_PROJECT_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2]
