"""The package's house rules (ehr_assets/README.md), checked on the source so that a change that breaks one fails:

* which packages may import torch / dagster (statically, every import statement, and at run time: importing the
  torch-free and dagster-free packages must not load them);
* no import cycle between the package's modules, counting imports inside functions;
* no ``_private`` name of one module used by another;
* modules of at most 400 lines, functions of at most 80 (a nested function counts inside its parent).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "ehr_assets"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# top-level packages that only some parts of ehr_assets may import
DAGSTER = ("dagster", "dagster_duckdb", "dagster_webserver", "dagster_k8s")  # dagster_pipes is standalone
TORCH = ("torch", "peft", "accelerate")
# module-name prefixes (relative to ehr_assets) allowed to import each group
ALLOWED = {
    DAGSTER: ("defs.",),
    TORCH: ("model.", "train.", "embed"),
}
TORCH_FREE = [
    "ehr_assets.specs",
    "ehr_assets.data",
    "ehr_assets.text",
    "ehr_assets.eval",
    "ehr_assets.synthetic",
    "ehr_assets.warehouse",
    "ehr_assets.keys",
    "ehr_assets.constants",
    "ehr_assets.stats",
    "ehr_assets.threads",
    "ehr_assets.progress",
]
DAGSTER_FREE = [*TORCH_FREE, "ehr_assets.model", "ehr_assets.train", "ehr_assets.embed"]


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}
TREES = {m: ast.parse(p.read_text(), filename=str(p)) for m, p in MODULES.items()}


def is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def resolve(mod: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (``from ..x import y`` inside ``mod``)."""
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_package(mod) else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mod: str):
    """(imported module, names, node) for every import statement of ``mod``, at any depth."""
    for node in ast.walk(TREES[mod]):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node
        elif isinstance(node, ast.ImportFrom):
            yield resolve(mod, node), [a.name for a in node.names], node


def internal_edges(mod: str) -> set[str]:
    out = set()
    for target, names, _ in imports(mod):
        if not target.startswith("ehr_assets"):
            continue
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        out.update(subs)
        if len(subs) < len(names) or not names:
            out.add(target)
    out.discard(mod)
    return {m for m in out if m in MODULES}


def test_third_party_import_rules():
    bad = []
    for mod in MODULES:
        rel = mod.removeprefix("ehr_assets.") + "."
        for target, _, node in imports(mod):
            top = target.split(".")[0]
            for group, prefixes in ALLOWED.items():
                if top in group and not rel.startswith(prefixes):
                    bad.append(f"{mod}:{node.lineno} imports {target}")
    assert not bad, "imports outside their allowed packages:\n" + "\n".join(bad)


@pytest.mark.parametrize("mods, banned", [(TORCH_FREE, ("torch", "dagster")), (DAGSTER_FREE, ("dagster",))])
def test_importing_a_layer_does_not_load_what_it_must_not_use(mods, banned):
    code = (
        f"import sys, importlib\nfor m in {mods!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {banned!r})\nprint(' '.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"importing {mods} loaded {out.stdout.strip()[:300]}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycles():
    graph = {m: internal_edges(m) for m in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def private_uses(mod: str) -> list[str]:
    bad = []
    aliases: dict[str, str] = {}  # local name -> ehr_assets module
    for target, _names, node in imports(mod):
        if not target.startswith("ehr_assets"):
            continue
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                full = f"{target}.{a.name}"
                if full in MODULES:
                    aliases[a.asname or a.name] = full
                elif a.name.startswith("_") and not a.name.startswith("__") and target != mod:
                    bad.append(f"{mod}:{node.lineno} imports {target}.{a.name}")
        else:
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(TREES[mod]):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            bad.append(f"{mod}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return bad


def test_no_private_names_across_modules():
    bad = [b for m in MODULES for b in private_uses(m)]
    assert not bad, "private names used outside their module:\n" + "\n".join(bad)


def test_module_and_function_sizes():
    long_modules = [
        f"{m}: {n} lines" for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    long_functions = []
    for m, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{m}:{node.lineno} {node.name}: {n} lines")
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)
