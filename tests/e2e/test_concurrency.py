"""Steps that compute overlap; only their warehouse reads and writes take turns.

The data of one cohort partition is materialized in this process; then one `dagster asset materialize` process (the
project's multiprocess executor: one process per step) builds the probe metrics of the count baseline and the two
oracle variants: three probe steps of three "recipes" that read, fit and write the warehouse. The probes are in no
pool (only the data-preparation steps are), so they run side by side; each DuckDB connection holds the warehouse
lock (:func:`ehr_assets.warehouse.warehouse_lock`), so none fails on DuckDB's file lock. The lock itself, across
processes: tests/test_warehouse.py."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb

from ehr_assets.definitions import build_definitions

from ..conftest import REPO, make_tiny_project, project_env

PROBES = ("count_baseline_probe_metrics", "oracle_probe_metrics", "oracle_no_rate_probe_metrics")
SELECT = ",".join(PROBES)
LOCK_ERRORS = ("IOException", "Could not set lock", "database is locked", "Conflicting lock")


def step_spans(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """``{step: (start, end)}`` of the run's successful steps, from Dagster's event log."""
    start, end = {}, {}
    for e in instance.all_logs(run_id):
        if e.dagster_event is None or e.step_key is None:
            continue
        if e.dagster_event.event_type_value == "STEP_START":
            start[e.step_key] = e.timestamp
        elif e.dagster_event.event_type_value == "STEP_SUCCESS":
            end[e.step_key] = e.timestamp
    return {k: (start[k], end[k]) for k in end if k in start}


def test_probe_steps_overlap_and_nothing_fails_on_the_duckdb_lock(tmp_path):
    root = make_tiny_project(tmp_path / "project", {"msk": 40, "inspect": 40}, recipes=())
    env = project_env(tmp_path, root, EHR_CONCURRENT_STEPS="3")  # the executor may run the three probe steps at once
    home = tmp_path / "home"
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the data below the probes, in this process
        defs = build_definitions(root, warehouse_path=env["EHR_WAREHOUSE"], artifact_root=env["EHR_ARTIFACT_ROOT"])
        graph = defs.resolve_asset_graph()
        below = dg.AssetSelection.assets(*PROBES).upstream(include_self=False)
        data = below.resolve(graph) - {k for k in graph.get_all_asset_keys() if k.path[0] == "declarations"}
        res = dg.materialize(
            [*defs.assets], selection=list(data), partition_key="msk", instance=instance, resources=defs.resources
        )
        assert res.success
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "asset", "materialize", "-m", "ehr_assets.definitions", "--select", SELECT]
    proc = subprocess.run([*cmd, "--partition", "msk"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    for bad in LOCK_ERRORS:
        assert bad not in log, bad
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_records(limit=1)[0]  # the latest: the probes' run
        spans = step_spans(instance, run.dagster_run.run_id)
    probes = {k: v for k, v in spans.items() if k in PROBES}
    assert set(probes) == set(PROBES), sorted(spans)
    # the probe steps ran side by side: some probe started before another had finished
    ordered = sorted(probes.values())
    overlaps = sum(b[0] < a[1] for a, b in zip(ordered, ordered[1:]))
    assert overlaps >= 1, {
        k: (round(s - ordered[0][0], 1), round(e - ordered[0][0], 1)) for k, (s, e) in probes.items()
    }
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as c:
        got = set(c.execute("SELECT DISTINCT cohort, recipe FROM probe_metrics").fetchall())
    assert {("msk", "count_baseline"), ("msk", "oracle")} <= got
