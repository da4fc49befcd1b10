"""The YAML reference, generated from the declaration models themselves so it cannot drift from what they accept.

:func:`sections` walks a model's ``model_fields`` recursively (nested models, lists and mappings of models, the
members of a discriminated union) and gives one :class:`Section` per model class, each with a :class:`Row` per key:
its dotted path, type, allowed values, default, constraints and description. :func:`markdown` renders the whole
reference as one Markdown page (the documentation site builds ``reference/yaml.md`` from it through an MkDocs hook,
``docs/hooks/yaml_reference.py``). ``tests/test_docs.py`` fails when a field has no ``description=``.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .cohort import CohortSpec
from .probe import ProbeSpec
from .project import Project
from .recipe import RecipeSpec
from .settings import ProjectSettings
from .study import StudySpec

# (title, where the file lives, its model); the order of the page
FILES: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("Cohorts", "cohorts/<name>.yaml", CohortSpec),
    ("Recipes", "models/<name>.yaml", RecipeSpec),
    ("Tasks", "probes/<name>.yaml", ProbeSpec),
    ("Study", "study.yaml", StudySpec),
    ("Project settings", "project.yaml", ProjectSettings),
)

_CONSTRAINTS = ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<="))


@dataclass
class Row:
    key: str  # dotted path from the file's top level, e.g. source.profile, questions[].id
    type: str
    default: str
    constraints: str
    description: str


@dataclass
class Section:
    model: type[BaseModel]
    path: str  # dotted path of the mapping this model describes ("" at the top level)
    when: str = ""  # e.g. "kind: meds" for a member of a discriminated union
    rows: list[Row] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return self.model.__name__.lower()


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def type_name(tp: Any) -> str:
    """A reader's name for an annotation: ``list of str``, ``one of: a, b``, ``mapping (see ...)``, ``... or null``."""
    tp = _strip(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of: " + ", ".join(f"`{a}`" for a in args)
    if _is_union(tp):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is tuple:
        return f"list of {len(args)} {type_name(args[0])}" if len(set(args)) == 1 else "list"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if _is_model(tp):
        kind = tp.model_fields.get("kind")
        label = ", ".join(typing.get_args(_strip(kind.annotation))) if kind is not None else "mapping"
        return f"[{label}](#{tp.__name__.lower()})"
    if tp is Path:
        return "path"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _default(info) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value}`"


def _constraints(info) -> str:
    out = []
    for meta in info.metadata:
        for kind, attr, sign in _CONSTRAINTS:
            if isinstance(meta, kind):
                out.append(f"{sign} {getattr(meta, attr)}")
        if isinstance(meta, at.MinLen) and _strip(info.annotation) is str:
            out.append("not empty")
        elif isinstance(meta, at.MinLen):
            out.append(f"at least {meta.min_length} " + ("item" if meta.min_length == 1 else "items"))
    return ", ".join(out)


def _children(tp: Any, path: str) -> list[tuple[type[BaseModel], str, str]]:
    """The models nested in an annotation, with the dotted path of their keys and the union member's condition."""
    tp = _strip(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_model(tp):
        return [(tp, path, "")]
    if _is_union(tp):
        members = [_strip(a) for a in args if a is not type(None)]
        out = []
        for m in members:
            when = ""
            if _is_model(m) and len(members) > 1 and "kind" in m.model_fields:
                when = "kind: " + ", ".join(typing.get_args(_strip(m.model_fields["kind"].annotation)))
            out += [(c, p, when or w) for c, p, w in _children(m, path)]
        return out
    if origin is list:
        return _children(args[0], f"{path}[]")
    if origin is dict:
        return _children(args[1], f"{path}.<key>")
    return []


def sections(model: type[BaseModel], path: str = "", when: str = "") -> list[Section]:
    """One section for ``model`` (its keys under ``path``), then one per nested model, depth first."""
    sec = Section(model, path, when)
    nested: list[Section] = []
    for name, info in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        sec.rows.append(
            Row(key, type_name(info.annotation), _default(info), _constraints(info), info.description or "")
        )
        for child, cpath, cwhen in _children(info.annotation, key):
            nested += sections(child, cpath, cwhen)
    return [sec, *nested]


def _escape(text: str) -> str:
    """``<`` and ``>`` outside code spans as entities, so ``<name>_checkpoint`` is not read as an HTML tag."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _cell(text: str) -> str:
    return _escape(text).replace("|", "\\|").replace("\n", " ")


def _table(sec: Section) -> list[str]:
    lines = ["| key | type | default | constraints | description |", "|---|---|---|---|---|"]
    for r in sec.rows:
        cells = (f"`{r.key}`", r.type, r.default, r.constraints, r.description)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _doc(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    if not doc or doc.startswith(("Usage docs:", "A base class")):  # pydantic's own docstring
        return ""
    return _escape(
        " ".join(re.sub(r":(?:mod|func|class|data|meth):`\.*([^`]+)`", r"`\1`", doc).replace("``", "`").split())
    )


def _project_block() -> list[str]:
    lines = [
        "## The project folder",
        "",
        "A project is a folder (`EHR_PROJECT_DIR`, default the repository root) holding `cohorts/`, `models/`",
        "and `probes/`, and optionally `study.yaml`. It is loaded and cross-checked as a whole:",
        "",
        "| part | description |",
        "|---|---|",
    ]
    for name, info in Project.model_fields.items():
        lines.append(f"| `{name}` | {_cell(info.description or '')} |")
    return [*lines, ""]


def markdown() -> str:
    """The whole reference page."""
    out = [
        "# YAML reference",
        "",
        "<!-- Generated from the pydantic models in ehr_assets/specs/ by ehr_assets.specs.reference; do not edit. -->",
        "",
        "Every key a declaration file accepts, generated from the models that validate it (`ehr_assets/specs/`).",
        "Unknown keys and wrong types are errors that name the file and the key. *required* keys have no default;",
        "`null` is YAML's empty value. Keys of nested mappings are written with dots (`training.steps`); `[]` marks",
        "the items of a list and `<key>` the keys of a mapping you name yourself.",
        "",
        *_project_block(),
    ]
    for title, where, model in FILES:
        out += [f"## {title}: `{where}`", ""]
        for sec in sections(model):
            if sec.path:
                heading = f"### `{sec.path}`" + (f" ({sec.when})" if sec.when else "")
                out += [f"{heading} {{#{sec.anchor}}}", ""]
            else:
                out += [f'<a id="{sec.anchor}"></a>', ""]
            doc = _doc(sec.model)
            out += ([doc, ""] if doc else []) + _table(sec) + [""]
    return "\n".join(out)
