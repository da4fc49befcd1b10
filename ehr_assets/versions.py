"""Versions: what each asset's output depends on, reduced to short digests (no Dagster here).

Two kinds of input decide an asset partition's output, and each gets a version:

* **Declarations.** The resolved declaration an asset reads (after ``extends``, replicates and ``init_from``
  chains), plus the contents of the files a declaration points to (ACES configs, a backbone or tokenizer folder, a
  source dataset). A digest is taken of the *validated model*, never of the file's text, so comments, key order,
  whitespace and spelling a default out change nothing. Keys that decide nothing about an output (descriptions,
  the ``compute`` block, resume bookkeeping) are left out; :data:`RECIPE_KEYS_NOT_IN_OUTPUT` lists them.
  Declarations that differ per cohort partition (a cohort's source, splits and decision-node rule; the tasks that
  name a cohort) are digested per partition (:func:`partition_declarations`), so an edit marks only the partitions
  it touches; declarations that hold for every partition (a recipe, ``study.yaml``) are digested per asset.
* **Stage code.** Each stage of the lineage has a version in ``stage_versions.json`` beside this file, next to a
  fingerprint of the stage's source code (its syntax tree: comments and docstrings do not count). The suite fails
  when a stage's code changed but its fingerprint in the file did not (``tests/test_versions.py``): whoever changes
  a stage must say whether its output can change -- bump ``version`` if so -- and record the new fingerprint with
  ``python -m ehr_assets.versions --lock``. That is how the stage version is kept honest.

The data versions of what an asset wrote come from :func:`frame_version` (tables) and :func:`files_version`
(artifact folders): content digests, so a rebuild that wrote the same rows marks nothing below it out of date.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGE = Path(__file__).resolve().parent
LOCK_FILE = PACKAGE / "stage_versions.json"

# stage -> the package files and folders whose code decides the stage's output (paths relative to ehr_assets/)
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "cohort": ("data/cohort.py", "data/sources", "synthetic", "constants.py", "warehouse.py", "defs/cohort.py"),
    "decision_nodes": ("data/decision_nodes.py",),
    "labels": ("data/labels.py", "data/aces_tasks.py", "data/aces_runner.py", "data/label_files.py", "defs/aces.py"),
    "text": ("text", "defs/sequences.py"),
    "train": ("model", "train", "stats.py", "compute.py", "defs/recipes.py"),
    "embed": ("embed.py", "model/backbone.py", "model/base.py", "defs/recipes.py"),
    "probes": (
        "eval/probes.py",
        "eval/probe_metrics.py",
        "eval/metrics.py",
        "eval/baseline.py",
        "eval/oracle.py",
        "eval/cox.py",
        "eval/survival.py",
        "eval/bootstrap.py",
        "eval/fallbacks.py",
        "eval/chance.py",
        "eval/small_samples.py",
        "defs/evaluation.py",
    ),
    "benchmark": (
        "eval/benchmark.py",
        "eval/paired.py",
        "eval/resample.py",
        "eval/latent_probe.py",
        "eval/replicates.py",
        "defs/benchmark.py",
    ),
    "exports": ("eval/exports.py", "defs/reporting.py"),
    "reports": (
        "eval/report.py",
        "eval/study.py",
        "eval/study_report.py",
        "eval/plots.py",
        "eval/evidence.py",
        "eval/health.py",
        "eval/render.py",
        "eval/summary.py",
        "eval/results.py",
        "defs/study.py",
        "defs/reporting.py",
    ),
}

# recipe keys that decide no output: documentation, where the job runs, and how a killed run resumes
RECIPE_KEYS_NOT_IN_OUTPUT = ("name", "description", "extends", "replicate_seeds", "compute")
TRAINING_KEYS_NOT_IN_OUTPUT = ("checkpoint_every", "keep_checkpoints", "resume")
# the declared parts of a cohort partition, each read by one stage (``cohort_tasks``: the YAML tasks that name the
# partition; ``cohort_aces_tasks``: the tasks with their own prediction times -- ACES tasks and their config files'
# contents, MEDS label-file tasks and their files' contents)
PARTITION_DECLARATIONS = (
    "cohort_source",
    "cohort_splits",
    "cohort_decision_nodes",
    "cohort_tasks",
    "cohort_aces_tasks",
)
# files larger than this are digested by size and their first and last MiB (weights, event shards; a Parquet
# file's footer holds its row-group statistics), smaller ones by their whole content
WHOLE_FILE_BYTES = 4 << 20
EDGE_BYTES = 1 << 20
# columns that record when a row was written, not what it says
VOLATILE_COLUMNS = ("materialized_at",)


def digest(obj) -> str:
    """16 hex digits of SHA-256 over ``obj`` as canonical JSON (sorted keys): equal content, equal digest."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= WHOLE_FILE_BYTES:
            h.update(f.read())
        else:
            h.update(str(size).encode())
            h.update(f.read(EDGE_BYTES))
            f.seek(size - EDGE_BYTES)
            h.update(f.read(EDGE_BYTES))
    return h.hexdigest()[:16]


def path_digest(path: str | Path | None) -> str | None:
    """Digest of a file, or of every file under a folder (relative names and contents); None for None; a path
    that does not exist digests as missing (the stage that reads it says so)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    if not p.is_dir():
        return "missing"
    files = sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.parts))
    return digest([(f.relative_to(p).as_posix(), file_digest(f)) for f in files])


def _relative(path: str, root: Path) -> str:
    """A path as the declaration would write it: relative to the project root when inside it, so moving the
    project folder changes no version."""
    p = Path(path)
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


# ------------------------------------------------------------------------------------------ per-partition parts
def _source(project, member: str) -> dict:
    src = project.cohorts[member].source
    d = src.model_dump(mode="json")
    if getattr(src, "path", None):
        d["path"] = _relative(src.path, project.root)
        d["contents"] = path_digest(src.path)
    from .specs.cohort import EVENTS_AFTER_DEATH_DEFAULT

    policy = project.cohorts[member].after_death
    if (
        policy != EVENTS_AFTER_DEATH_DEFAULT
    ):  # the default is left out: cohorts declared before the policy existed keep their versions
        d["events_after_death"] = policy
    return d


def _probe(project, probe) -> dict:
    d = probe.model_dump(mode="json", exclude={"description"})
    for k in ("config", "predicates", "labels"):
        if d.get(k):
            d[f"{k}_contents"] = path_digest(d[k])
            d[k] = _relative(d[k], project.root)
    return d


def partition_declarations(project) -> dict[str, dict[str, str]]:
    """``{declaration: {partition: digest}}`` for :data:`PARTITION_DECLARATIONS`: what each cohort partition
    declares, per stage that reads it. A union's parts are its members' (and the union list itself)."""
    from .specs import Splits

    out: dict[str, dict[str, str]] = {k: {} for k in PARTITION_DECLARATIONS}
    for cohort in project.partition_keys:
        members = project.members(cohort)
        union = list(project.cohorts[cohort].union or [])
        rule = {m: project.cohorts[m].decision_nodes for m in members}
        parts = {
            "cohort_source": {m: _source(project, m) for m in members},
            "cohort_splits": {m: (project.cohorts[m].splits or Splits()).model_dump(mode="json") for m in members},
            "cohort_decision_nodes": {m: r.model_dump(mode="json") if r else None for m, r in rule.items()},
            "cohort_tasks": [_probe(project, p) for p in project.tasks_for(cohort) if not p.own_times],
            "cohort_aces_tasks": [_probe(project, p) for p in project.tasks_for(cohort) if p.own_times],
        }
        for name, value in parts.items():
            out[name][cohort] = digest({"union": union, "declared": value})
    return out


# ---------------------------------------------------------------------------------------------- per-asset parts
def recipe_declaration(project, name: str, part: str) -> dict:
    """What recipe ``name`` declares for its asset ``part`` (``checkpoint``, ``embeddings``, ``probe_metrics``,
    ``tokens``), resolved: its own keys less :data:`RECIPE_KEYS_NOT_IN_OUTPUT`, the contents of the backbone and
    tokenizer folders it names, and (through ``init_from``) the declaration of the checkpoint it starts from."""
    r = project.recipes[name]
    if part == "tokens":  # a chain's token ids: its text format and tokenizer folder
        return {"format": r.format, "tokenizer": path_digest(r.tokenizer_path)}
    d = r.model_dump(mode="json", exclude=set(RECIPE_KEYS_NOT_IN_OUTPUT))
    for k in TRAINING_KEYS_NOT_IN_OUTPUT:
        d["training"].pop(k, None)
    for k in ("path", "tokenizer"):
        if d["backbone"].get(k):
            d["backbone"][f"{k}_contents"] = path_digest(d["backbone"][k])
            d["backbone"][k] = _relative(d["backbone"][k], project.root)
    if part == "checkpoint":
        d.pop("embedding")  # how a checkpoint is embedded decides nothing about the checkpoint
    if not r.uses_jepa:
        d.pop("jepa")  # the JEPA block of a recipe that trains no JEPA loss is read by nothing
    if r.finetune == "full":
        d.pop("lora")  # nor is the LoRA block of a recipe that trains every weight
    if r.init_from is not None:
        d["init_from"] = recipe_declaration(project, r.init_from, "checkpoint")
    return d


def study_declaration(project) -> dict | None:
    return None if project.study is None else project.study.model_dump(mode="json")


# ------------------------------------------------------------------------------------------------- stage code
def code_files(paths: Iterable[str]) -> list[Path]:
    """The Python files of ``paths`` (files and folders relative to the package)."""
    files: list[Path] = []
    for rel in paths:
        p = PACKAGE / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return sorted(set(files))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def source_fingerprint(text: str) -> str:
    """Digest of a module's syntax tree without its docstrings: comments and formatting do not count."""
    return digest(ast.dump(_strip_docstrings(ast.parse(text)), annotate_fields=False))


def code_fingerprint(stage: str) -> str:
    """Digest of the syntax trees of the stage's source files (:data:`STAGE_CODE`)."""
    files = code_files(STAGE_CODE[stage])
    return digest([(f.relative_to(PACKAGE).as_posix(), source_fingerprint(f.read_text())) for f in files])


def read_lock() -> dict[str, dict[str, str]]:
    return json.loads(LOCK_FILE.read_text())


def stage_version(stage: str) -> str:
    """The declared output version of ``stage`` (``stage_versions.json``)."""
    try:
        return str(read_lock()[stage]["version"])
    except KeyError:
        raise KeyError(
            f"{LOCK_FILE}: no version for stage {stage!r}; run python -m ehr_assets.versions --lock"
        ) from None


def stale_fingerprints() -> list[str]:
    """The stages whose code changed since their fingerprint was recorded, one line each."""
    lock = read_lock()
    out = []
    for stage in STAGE_CODE:
        rec = lock.get(stage)
        now = code_fingerprint(stage)
        if rec is None or rec.get("code") != now:
            was = rec.get("version") if rec else None
            out.append(f"{stage}: code fingerprint {rec.get('code') if rec else None} -> {now} (version {was})")
    return out


def write_lock(bump: Iterable[str] = ()) -> list[str]:
    """Record every stage's current fingerprint; ``bump``: stages whose version goes up by one (their output
    changes). Returns the lines of what changed."""
    lock = read_lock() if LOCK_FILE.exists() else {}
    bump = set(bump)
    unknown = bump - set(STAGE_CODE)
    if unknown:
        raise SystemExit(f"unknown stage(s) {sorted(unknown)}; stages: {list(STAGE_CODE)}")
    lines = []
    for stage in STAGE_CODE:
        rec = dict(lock.get(stage, {"version": "1"}))
        now = code_fingerprint(stage)
        if stage in bump:
            rec["version"] = str(int(rec["version"]) + 1)
            lines.append(f"{stage}: version -> {rec['version']}")
        if rec.get("code") != now:
            lines.append(f"{stage}: fingerprint -> {now}")
        rec["code"] = now
        lock[stage] = rec
    LOCK_FILE.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return lines


# ------------------------------------------------------------------------------------------------ data versions
def frame_version(*frames: pd.DataFrame | None, exclude: Iterable[str] = VOLATILE_COLUMNS) -> str:
    """Content digest of tables as written: column names and types, and the rows' hashes in sorted order (so the
    order rows were written in does not count); ``exclude`` columns (write times) do not count."""
    h = hashlib.sha256()
    for df in frames:
        if df is None:
            h.update(b"none")
            continue
        df = df.drop(columns=[c for c in exclude if c in df.columns])
        h.update(json.dumps([(c, str(t)) for c, t in df.dtypes.items()]).encode())
        rows = pd.util.hash_pandas_object(_hashable(df), index=False).to_numpy()
        h.update(np.sort(rows).tobytes())
    return h.hexdigest()[:16]


def _hashable(df: pd.DataFrame) -> pd.DataFrame:
    """Each column as one uint64 hash per row; columns of lists or arrays (token ids, block offsets) are hashed
    through their values' bytes."""
    out = {}
    for c in df.columns:
        s = df[c]
        try:
            out[c] = pd.util.hash_pandas_object(s, index=False).to_numpy()
        except TypeError:  # unhashable cells: lists / arrays
            raw = pd.Series([b"" if v is None else np.asarray(v).tobytes() for v in s], dtype=object)
            out[c] = pd.util.hash_pandas_object(raw, index=False).to_numpy()
    return pd.DataFrame(out, index=range(len(df)))


def files_version(folder: str | Path, patterns: Iterable[str] = ("*",), exclude: Iterable[str] = ()) -> str:
    """Content digest of the files of ``folder`` matching ``patterns`` (full contents), less ``exclude`` names."""
    folder = Path(folder)
    skip = set(exclude)
    files = sorted({f for pat in patterns for f in folder.rglob(pat) if f.is_file() and f.name not in skip})
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(folder).as_posix().encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.versions", description=__doc__.splitlines()[0])
    ap.add_argument("--lock", action="store_true", help="record every stage's code fingerprint")
    ap.add_argument("--bump", default="", help="comma-separated stages whose output version goes up (with --lock)")
    args = ap.parse_args(argv)
    if args.lock:
        for line in write_lock([s for s in args.bump.split(",") if s]) or ["nothing changed"]:
            print(line)
        return 0
    stale = stale_fingerprints()
    for line in stale:
        print(line)
    if stale:
        print("bump the version of a stage whose output can change, then: python -m ehr_assets.versions --lock")
        return 1
    print(f"{len(STAGE_CODE)} stages: every code fingerprint is recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
