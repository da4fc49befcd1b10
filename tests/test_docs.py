"""The documentation site's YAML reference: every declaration key is described and listed (no mkdocs build here)."""

from __future__ import annotations

import html
import re
import typing

from pydantic import BaseModel

from ehr_assets.specs import CohortSpec, ProbeSpec, Project, RecipeSpec, StudySpec
from ehr_assets.specs.reference import markdown

TOP = (CohortSpec, RecipeSpec, ProbeSpec, StudySpec, Project)


def _models_in(tp) -> list[type[BaseModel]]:
    """Every model class an annotation mentions (Annotated, unions, lists, dicts, tuples), found independently of
    the generator's own walk."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models_in(arg)]


def all_fields() -> dict[type[BaseModel], list[str]]:
    """model -> its field names, for every model reachable from the top-level specs."""
    out: dict[type[BaseModel], list[str]] = {}
    todo = list(TOP)
    while todo:
        model = todo.pop()
        if model in out:
            continue
        out[model] = list(model.model_fields)
        for info in model.model_fields.values():
            todo += _models_in(info.annotation)
    return out


def test_every_spec_field_has_a_description():
    missing = [
        f"{model.__module__}.{model.__name__}.{name}"
        for model, names in all_fields().items()
        for name in names
        if not (model.model_fields[name].description or "").strip()
    ]
    assert not missing, "spec fields without description= (the YAML reference prints it):\n" + "\n".join(missing)


def _rows_by_anchor(page: str) -> dict[str, list[str]]:
    """anchor of each section -> the keys of its table rows (the last dotted part of each key)."""
    rows: dict[str, list[str]] = {}
    anchor = None
    for line in page.splitlines():
        m = re.search(r'\{#([a-z0-9_]+)\}$|^<a id="([a-z0-9_]+)"></a>$', line)
        if m:
            anchor = m.group(1) or m.group(2)
            rows[anchor] = []
        m = re.match(r"\| `([^`]+)` \|", line)
        if m and anchor is not None:
            rows[anchor].append(re.split(r"[.\]]", m.group(1))[-1])
    return rows


def test_generated_reference_lists_every_field():
    page = html.unescape(markdown())
    rows = _rows_by_anchor(page)
    missing = []
    for model, names in all_fields().items():
        if model is Project:  # the project folder's parts: a table of its own
            missing += [f"Project.{n}" for n in names if f"| `{n}` |" not in page]
            continue
        listed = rows.get(model.__name__.lower(), [])
        missing += [f"{model.__name__}.{n}" for n in names if n not in listed]
    assert not missing, f"fields missing from the generated YAML reference: {missing}"
    undescribed = [
        f"{model.__name__}.{name}"
        for model, names in all_fields().items()
        for name in names
        if (model.model_fields[name].description or "").replace("|", "\\|") not in page
    ]
    assert not undescribed, f"descriptions missing from the generated YAML reference: {undescribed}"


def test_every_ui_command_in_the_docs_binds_to_localhost():
    """The pages moved out of the README keep its rule: a `dagster dev` a reader copies serves on 127.0.0.1 only."""
    from .conftest import REPO

    lines = [
        (page.relative_to(REPO), line)
        for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
        for line in page.read_text().splitlines()
        if re.search(r"\bdagster dev\b", line) and not line.lstrip().startswith(("#", "`dagster dev`"))
    ]
    assert lines, "no dagster dev command found in the docs"
    bad = [f"{page}: {line.strip()}" for page, line in lines if "dagster dev -" in line and "-h 127.0.0.1" not in line]
    assert not bad, "UI commands that do not bind to 127.0.0.1:\n" + "\n".join(bad)
