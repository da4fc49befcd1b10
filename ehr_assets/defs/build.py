"""Build only what is missing or out of date (``python -m ehr_assets.build``; ``make demo`` and ``make study`` too).

    python -m ehr_assets.build [--select SEL] [--partitions msk,inspect] [--dry-run] [--force] [--list]

1. Observe the declarations: record a new digest for every declared part of a cohort partition that changed
   (:mod:`.versioning`), as the ``declarations_sensor`` does while the daemon runs.
2. Ask Dagster for the status of every selected asset partition (the same resolver the UI's "Unsynced" badge
   uses): *missing*, *stale* (its code version changed, or an input has a new data version since it was built) or
   *up to date*.
3. Build in waves, one run per partition and wave (then one run for the reports over all partitions): a wave
   holds every missing or stale asset partition and everything below a missing one (it cannot be up to date);
   what lies below a merely stale one waits for the next wave, which runs only if the rebuild wrote different data
   (a new data version). It stops when everything selected is up to date, or at the first failed run.

``--dry-run`` prints the plan (step 1 records observations, which changes no asset) and builds nothing;
``--force`` rebuilds every selected asset partition whatever its status; ``--list`` prints every selected asset
partition's status and reason, one per line.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from collections import defaultdict
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from ..specs import Project, default_project_dir, load_project
from ..warehouse import default_home
from .recovery import process_tags, recover
from .versioning import GROUP, observe_declarations

WIDTH = 100  # terminal columns the printed plan fits
MAX_WAVES = 30  # the lineage is about ten assets deep; more waves than this means a rebuild that never settles

Key = tuple[dg.AssetKey, str | None]  # (asset, partition or None for an unpartitioned asset)


@dataclass
class Plan:
    """The status of every selected asset partition: ``todo`` (missing or stale, with why), ``below`` (below a
    missing one: built in the same wave), ``waiting`` (below a stale one: built later if its inputs change) and
    ``fresh`` (up to date)."""

    todo: dict[Key, str] = field(default_factory=dict)
    below: dict[Key, str] = field(default_factory=dict)
    waiting: dict[Key, str] = field(default_factory=dict)
    fresh: list[Key] = field(default_factory=list)

    @property
    def wave(self) -> dict[Key, str]:
        return {**self.todo, **self.below}


def _resolver(instance: dg.DagsterInstance, graph) -> CachingStaleStatusResolver:
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def _reason(resolver: CachingStaleStatusResolver, key: dg.AssetKey, partition: str | None) -> str:
    """Why an asset partition is stale, in a few words: the root causes Dagster reports."""
    out = []
    for c in resolver.get_stale_root_causes(key, partition):
        if c.reason.startswith("code version changed") or "code version" in c.reason:
            out.append("code or declaration changed")
        elif c.key.asset_key != key and c.key.asset_key.path[0] == GROUP:
            out.append(f"declaration changed ({c.key.asset_key.path[-1]})")
        elif c.key.asset_key != key:
            out.append(f"new data in {c.key.asset_key.to_user_string()}")
        elif c.dependency is not None and c.dependency.asset_key.path[0] == GROUP:
            out.append(f"declaration changed ({c.dependency.asset_key.path[-1]})")
        elif c.dependency is not None:
            out.append(f"{c.reason.removeprefix('has a ')} ({c.dependency.asset_key.to_user_string()})")
        else:
            out.append(c.reason)
    return "; ".join(dict.fromkeys(out)) or "stale"


def plan(instance, graph, selected: list[dg.AssetKey], partitions: list[str], force: bool = False) -> Plan:
    """The status of every selected asset partition (``graph``: the definitions' asset graph)."""
    resolver = _resolver(instance, graph)
    keys = [(k, p) for k in selected for p in (partitions if graph.get(k).is_partitioned else [None])]
    out = Plan()
    missing = []
    for k, p in keys:
        status = resolver.get_status(k, p)
        if force:
            out.todo[(k, p)] = "forced"
        elif status == StaleStatus.MISSING:
            out.todo[(k, p)] = "missing"
            missing.append((k, p))
        elif status == StaleStatus.STALE:
            out.todo[(k, p)] = _reason(resolver, k, p)
    chosen = set(keys)
    below = {}
    for k, p in missing:  # below a missing asset partition: nothing can be up to date
        for d in graph.get(k).child_keys:
            _descend(graph, d, p, chosen, below, "below a missing asset")
    out.below = {kp: r for kp, r in below.items() if kp not in out.todo}
    waiting = {}
    for k, p in out.todo:
        if out.todo[(k, p)] != "missing":
            for d in graph.get(k).child_keys:
                _descend(graph, d, p, chosen, waiting, "below an asset to rebuild")
    out.waiting = {kp: r for kp, r in waiting.items() if kp not in out.wave}
    out.fresh = [kp for kp in keys if kp not in out.wave and kp not in out.waiting]
    return out


def _descend(graph, key: dg.AssetKey, partition: str | None, chosen: set, into: dict, why: str) -> None:
    """``key`` and everything below it, in ``partition`` (a partitioned child of an unpartitioned asset: every
    partition; an unpartitioned child: None), restricted to ``chosen``."""
    stack = [(key, partition)]
    while stack:
        k, p = stack.pop()
        node = graph.get(k)
        parts = [p] if node.is_partitioned and p is not None else [None] if not node.is_partitioned else None
        if parts is None:  # a partitioned asset below an unpartitioned one: every selected partition of it
            parts = sorted({pp for kk, pp in chosen if kk == k})
        for pp in parts:
            if (k, pp) in chosen and (k, pp) not in into:
                into[(k, pp)] = why
                stack += [(c, pp) for c in node.child_keys]


def _group(items: dict[Key, str] | list[Key], partitions: list[str]) -> list[str]:
    """The assets of ``items`` grouped by (partitions, reason): one wrapped paragraph per group, e.g.
    ``code or declaration changed [all]: jepa_checkpoint, jepa_embeddings``, within :data:`WIDTH` columns."""
    by_asset: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kp in items:
        k, p = kp
        by_asset[(k.to_user_string(), items[kp] if isinstance(items, dict) else "up to date")].append(p or "-")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (name, why), parts in by_asset.items():
        if len(parts) == len(partitions) and len(partitions) > 1:
            where = "all partitions"
        elif parts == ["-"]:
            where = "over all partitions"
        else:
            where = ", ".join(p for p in partitions if p in parts)
        groups[(why, where)].append(name)
    lines = []
    for (why, where), names in groups.items():
        lines += textwrap.wrap(
            f"{why} [{where}]: {', '.join(names)}", WIDTH, initial_indent="  ", subsequent_indent="      "
        )
    return lines


def print_plan(p: Plan, partitions: list[str], tag: str, verbose: bool = False, out=print) -> None:
    n_wave, n_wait, n_fresh = len(p.wave), len(p.waiting), len(p.fresh)
    out(f"[{tag}] {n_wave} to build, {n_wait} to check after them, {n_fresh} up to date (skipped)")
    if p.wave:
        out(f"[{tag}] to build (asset partitions missing or out of date, and what lies below a missing one):")
        for line in _group(p.wave, partitions):
            out(line)
    if p.waiting:
        out(f"[{tag}] then rebuilt only if their inputs' data change:")
        for line in _group(p.waiting, partitions):
            out(line)
    if verbose and p.fresh:
        out(f"[{tag}] up to date (same code and declarations, same input data):")
        for line in _group(p.fresh, partitions):
            out(line)


def _run_config(log_level: str) -> dict:
    # in-process: one step at a time, so a step may use every core (EHR_THREADS still overrides)
    return {
        "loggers": {"console": {"config": {"log_level": log_level}}},
        "resources": {"compute": {"config": {"concurrent_steps": 1}}},
    }


def _job_for(defs: dg.Definitions, partitioned: bool):
    """The project's job for a wave's run: the partitioned pipeline, or the report job over all partitions."""
    from .definitions import PIPELINE_JOB, REPORT_JOB

    return defs.resolve_job_def(PIPELINE_JOB if partitioned else REPORT_JOB)


def build(
    defs: dg.Definitions,
    project: Project,
    instance: dg.DagsterInstance,
    select: str | None = None,
    partitions: list[str] | None = None,
    *,
    dry_run: bool = False,
    force: bool = False,
    verbose: bool = False,
    log_level: str = "WARNING",
    tag: str = "build",
    out=print,
) -> int:
    """Materialize the missing and out-of-date asset partitions of ``select`` (a Dagster asset selection string;
    default: every asset) in ``partitions`` (default: all). 0 when everything selected ends up to date, 1 on a
    failed run, 2 on an unknown partition or selection."""
    graph = defs.resolve_asset_graph()
    all_parts = list(project.partition_keys)
    parts = partitions or all_parts
    unknown = [p for p in parts if p not in all_parts]
    if unknown:
        out(f"[{tag}] unknown partition(s) {unknown}; declared cohorts: {all_parts}")
        return 2
    materializable = set(graph.materializable_asset_keys)
    try:
        chosen = dg.AssetSelection.from_string(select).resolve(graph) if select else materializable
    except Exception as e:  # an unparsable selection or an unknown asset: say which
        out(f"[{tag}] --select {select!r}: {e}")
        return 2
    selected = [k for k in graph.toposorted_asset_keys if k in chosen and k in materializable]
    if set(parts) != set(all_parts) and not select:  # the reports read every partition: not from a subset
        selected = [k for k in selected if graph.get(k).is_partitioned]
    if not selected:
        out(f"[{tag}] --select {select!r} selects no asset that can be materialized")
        return 2
    recover(instance, out=out, tag=tag)  # runs killed earlier: marked failed, their pool slots freed
    changed = observe_declarations(instance, project, declared_names(graph))
    say_changed(changed, tag, out)
    t_all = time.perf_counter()
    for wave in range(1, MAX_WAVES + 1):
        p = plan(instance, graph, selected, parts, force=force and wave == 1)
        if wave == 1 or verbose:
            print_plan(p, parts, tag, verbose=verbose, out=out)
        if dry_run or not p.wave:
            break
        rc = _run_wave(defs, graph, instance, p.wave, parts, wave, log_level, tag, out)
        if rc:
            return rc
    else:
        out(f"[{tag}] still out of date after {MAX_WAVES} waves: an asset's output changes on every rebuild")
        return 1
    if not dry_run:
        out(f"[{tag}] everything selected is up to date ({time.perf_counter() - t_all:.0f} s)")
    return 0


def say_changed(changed, tag: str, out) -> None:
    """One wrapped line: which declared parts changed, in which partitions (or that they were first observed)."""
    if not changed:
        return
    if all(was is None for _, _, was, _ in changed):
        out(f"[{tag}] declarations observed for the first time ({len(changed)} partition digests)")
        return
    parts: dict[str, list[str]] = defaultdict(list)
    for name, part, _, _ in changed:
        parts[name].append(part)
    text = "; ".join(f"{n} [{', '.join(ps)}]" for n, ps in parts.items())
    for line in textwrap.wrap(f"[{tag}] declarations changed: {text}", WIDTH, subsequent_indent="    "):
        out(line)


def declared_names(graph) -> tuple[str, ...]:
    return tuple(k.path[-1] for k in graph.get_all_asset_keys() if k.path[0] == GROUP and len(k.path) == 2)


def _run_wave(defs, graph, instance, wave: dict[Key, str], parts, n: int, log_level: str, tag: str, out) -> int:
    """One run per partition (in partition order), then one for the unpartitioned assets of the wave."""
    per: dict[str | None, list[dg.AssetKey]] = defaultdict(list)
    for k, p in wave:
        per[p].append(k)
    order = [p for p in parts if p in per] + ([None] if None in per else [])
    for p in order:
        keys = per[p]
        job = _job_for(defs, p is not None)
        t0 = time.perf_counter()
        label = p or "reports"
        out(f"[{tag}] wave {n}, {label}: building {len(keys)} asset(s) ...")
        res = job.execute_in_process(
            partition_key=p,
            instance=instance,
            asset_selection=keys,
            raise_on_error=False,
            run_config=_run_config(log_level),
            tags={"ehr/build_wave": str(n), **process_tags()},
        )
        status = "ok" if res.success else "FAILED"
        out(f"[{tag}] wave {n}, {label}: {status} in {time.perf_counter() - t0:.0f} s (run {res.run_id[:8]})")
        if not res.success:
            failed = [e.step_key for e in res.all_events if e.is_step_failure]
            out(f"[{tag}] failed step(s): {', '.join(failed) or '?'}; see the run in the UI or its log above")
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.build", description=__doc__.splitlines()[0])
    ap.add_argument("--select", help="Dagster asset selection, e.g. 'jepa_checkpoint*' or 'group:evaluation'")
    ap.add_argument("--partitions", help="comma-separated cohort keys (default: all)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, build nothing")
    ap.add_argument("--force", action="store_true", help="rebuild every selected asset partition")
    ap.add_argument("--list", action="store_true", help="also list the up-to-date asset partitions")
    ap.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(default_home()))  # the project's instance: history the UI shows
    from .definitions import defs

    instance = dg.DagsterInstance.get()
    return build(
        defs,
        load_project(default_project_dir()),
        instance,
        args.select,
        args.partitions.split(",") if args.partitions else None,
        dry_run=args.dry_run,
        force=args.force,
        verbose=args.list,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    sys.exit(main())
