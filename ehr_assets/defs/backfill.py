"""A cross-disease backfill from a shell, followed to its end.

    python -m ehr_assets.backfill [--partitions msk,inspect,combined] [--select SELECTION] [--timeout S]

1. Record the declarations (as the build command does) and submit an asset backfill of the selection (default:
   every asset; the reports over all partitions only when every partition is selected) for the partitions: one run
   per partition, then the reports once every partition they read is done. The UI shows it under
   Overview ▸ Backfills, the same object its "Materialize all" / "Launch backfill" dialog makes.
2. Runs of a backfill start only while a Dagster daemon runs (``dagster dev`` starts one). If none is running for
   this instance, start ``dagster-daemon run -m ehr_assets.definitions`` for the duration of the command (its log:
   ``$DAGSTER_HOME/backfill-daemon.log``) and stop it at the end.
3. Follow the runs: a line whenever a run changes state, then the outcome. Exit 0 when every run succeeded; 1
   naming each failed run (partition, run id, failed steps and the first line of their error), or on ``--timeout``;
   2 on an unknown partition or selection. Ctrl-C stops following (and the daemon this command started); the
   backfill stays recorded, and a daemon started later (``dagster dev``) carries it on.

Unlike ``python -m ehr_assets.build`` (in this process, only what is missing or out of date), a backfill builds
every selected asset partition, in the daemon's run workers with the project's multiprocess executor.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG
from dagster._core.utils import make_new_backfill_id

from ..specs import Project, default_project_dir, load_project
from ..warehouse import default_home
from .build import declared_names, say_changed
from .versioning import observe_declarations

DAEMONS = ("BACKFILL", "QUEUED_RUN_COORDINATOR")  # what must run for a backfill's runs to start
MODULE = "ehr_assets.definitions"
POLL_S = 2.0
HEARTBEAT_S = 30.0  # how often a Dagster daemon records a heartbeat
IDLE_HINT_S = 90.0  # nothing started this long after submitting: say that a daemon may be missing
DONE = {
    BulkActionStatus.COMPLETED,
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
}
RUN_DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def selection(defs: dg.Definitions, project: Project, select: str | None, parts: list[str]) -> list[dg.AssetKey]:
    """The materializable assets of ``select`` (default: all); without ``select`` and with only some partitions,
    the partitioned ones (the reports read every partition). Raises ValueError naming what is wrong."""
    graph = defs.resolve_asset_graph()
    unknown = [p for p in parts if p not in project.partition_keys]
    if unknown:
        raise ValueError(f"unknown partition(s) {unknown}; declared cohorts: {list(project.partition_keys)}")
    materializable = set(graph.materializable_asset_keys)
    try:
        chosen = dg.AssetSelection.from_string(select).resolve(graph) if select else materializable
    except Exception as e:  # an unparsable selection or an unknown asset: say which
        raise ValueError(f"--select {select!r}: {e}") from e
    keys = [k for k in graph.toposorted_asset_keys if k in chosen and k in materializable]
    if set(parts) != set(project.partition_keys) and not select:
        keys = [k for k in keys if graph.get(k).is_partitioned]
    if not keys:
        raise ValueError(f"--select {select!r} selects no asset that can be materialized")
    return keys


def submit(instance: dg.DagsterInstance, defs: dg.Definitions, keys: list[dg.AssetKey], parts: list[str]) -> str:
    """Record an asset backfill of ``keys`` over ``parts`` (the daemon launches its runs); returns its id."""
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=defs.resolve_asset_graph(),
        partition_names=parts,
        asset_selection=keys,
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=f"ehr_assets.backfill {','.join(parts)}",
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def daemon_running(instance: dg.DagsterInstance, interval_s: float = HEARTBEAT_S) -> bool:
    """Whether a daemon with the backfill and run-queue loops is alive for this instance: their heartbeats are
    recent and, when they are not brand new, advance within one heartbeat interval (a daemon stopped a moment ago
    leaves fresh-looking heartbeats behind; Dagster's own status tolerates 30 minutes)."""
    required = [d for d in DAEMONS if d in instance.get_required_daemon_types()]

    def beats() -> dict[str, float]:
        hb = instance.get_daemon_heartbeats()
        return {d: hb[d].timestamp for d in required if d in hb}

    first = beats()
    if len(first) < len(required) or time.time() - min(first.values(), default=0) > 2 * interval_s:
        return False
    deadline = time.monotonic() + interval_s + min(5.0, interval_s)
    while time.monotonic() < deadline:
        now = beats()
        if all(now[d] > first[d] for d in required):
            return True
        time.sleep(1.0)
    return False


def start_daemon(home: Path, out) -> subprocess.Popen:
    """``dagster-daemon run -m ehr_assets.definitions`` in its own process group, logging to the instance folder."""
    exe = Path(sys.executable).with_name("dagster-daemon")
    log = open(home / "backfill-daemon.log", "ab")
    out(f"[backfill] no daemon runs for {home}: starting one for this backfill (log: {log.name})")
    return subprocess.Popen(
        [str(exe), "run", "-m", MODULE, "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "DAGSTER_HOME": str(home), "EHR_SENSORS": "off"},  # the backfill's runs only
    )


def stop_daemon(instance, proc: subprocess.Popen, out, grace_s: float = 30.0) -> None:
    """SIGTERM the daemon (it stops its loops), SIGKILL it after ``grace_s``. Run workers it launched are left
    alone (runs of other backfills it picked up go on), and its code server exits on its own within 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    instance.wipe_daemon_heartbeats()  # the next command sees at once that no daemon runs
    out(f"[backfill] stopped the daemon it started (pid {proc.pid})")
    busy = [r for r in instance.get_runs(RunsFilter(statuses=IN_FLIGHT)) if r.tags.get(BACKFILL_ID_TAG)]
    if busy:
        ids = ", ".join(sorted({r.tags[BACKFILL_ID_TAG] for r in busy}))
        out(f"[backfill] runs of other backfills ({ids}) are in flight; a daemon (`dagster dev`) carries them on")


def runs_of(instance: dg.DagsterInstance, backfill_id: str):
    return instance.get_runs(filters=RunsFilter.for_backfill(backfill_id))


def _label(run) -> str:
    return run.tags.get(PARTITION_NAME_TAG) or "reports"


def failure_lines(instance: dg.DagsterInstance, run) -> list[str]:
    """``<step>: <first line of its error>`` for each failed step of ``run`` (the run's own error otherwise)."""
    out = []
    for e in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}):
        data = e.dagster_event.event_specific_data if e.dagster_event else None
        err = getattr(data, "error", None)
        while err is not None and err.cause is not None and "dagster" in err.cls_name.lower():
            err = err.cause  # past Dagster's wrappers, to what the step raised
        msg = (err.message.strip().splitlines() or ["?"])[0] if err is not None else (e.message or "").strip()
        if msg:
            out.append((e.step_key, f"{e.step_key or 'run'}: {msg[:200]}"))
    steps = [line for key, line in out if key is not None]
    lines = list(dict.fromkeys(steps or [line for _, line in out]))  # the run's own error only without a step's
    for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        ev = e.dagster_event.event_specific_data
        if not ev.passed:  # which check, on which partition, and its first problem
            problems = ev.metadata.get("problems")
            first = str(problems.value).strip().splitlines()[0].lstrip("- ") if problems is not None else ""
            where = f" [{ev.partition}]" if ev.partition else ""
            lines.append(f"check {ev.asset_key.to_user_string()}:{ev.check_name}{where} failed: {first}"[:240])
    return lines


def follow(instance, backfill_id: str, out, timeout_s: float | None = None, daemon=None) -> int:
    """Print run state changes until the backfill is done; 0 when every run succeeded, else 1."""
    t0 = time.perf_counter()
    seen: dict[str, str] = {}
    hinted = False
    while True:
        backfill = instance.get_backfill(backfill_id)
        runs = runs_of(instance, backfill_id)
        for run in sorted(runs, key=lambda r: (_label(r) == "reports", _label(r))):
            state = run.status.value
            if seen.get(run.run_id) != state:
                seen[run.run_id] = state
                t = time.perf_counter() - t0
                out(f"[backfill] {t:5.0f} s  {_label(run)}: {state.lower()} (run {run.run_id[:8]})")
        done = backfill.status in DONE and all(r.status in RUN_DONE for r in runs)
        if done:
            break
        if not runs and not hinted and time.perf_counter() - t0 > IDLE_HINT_S:
            hinted = True
            out(f"[backfill] no run after {IDLE_HINT_S:.0f} s: is a daemon running for this instance (`dagster dev`)?")
        if daemon is not None and daemon.poll() is not None:
            out(f"[backfill] the daemon exited (rc {daemon.returncode}); see its log")
            return 1
        if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
            out(
                f"[backfill] not done after {timeout_s:.0f} s (status {backfill.status.value}); it goes on while a "
                "daemon runs"
            )
            return 1
        time.sleep(POLL_S)
    failed = [r for r in runs if r.status != DagsterRunStatus.SUCCESS]
    wall = time.perf_counter() - t0
    if backfill.status in (BulkActionStatus.FAILED, BulkActionStatus.CANCELED) or failed:
        out(
            f"[backfill] after {wall:.0f} s (backfill {backfill.status.value.lower()}): {len(failed)} of {len(runs)} "
            "run(s) did not succeed"
        )
        for run in failed:
            out(f"[backfill] FAILED {_label(run)}: run {run.run_id} ({run.status.value.lower()})")
            for line in failure_lines(instance, run):
                out(f"    {line}")
        if backfill.failure_count and not failed:
            out("[backfill] the daemon failed processing the backfill; see Overview > Backfills in the UI")
        return 1
    out(f"[backfill] done in {wall:.0f} s: {len(runs)} run(s) succeeded")
    return 0


def backfill(
    defs: dg.Definitions,
    project: Project,
    instance: dg.DagsterInstance,
    home: Path,
    select: str | None = None,
    partitions: list[str] | None = None,
    *,
    timeout_s: float | None = None,
    out=print,
) -> int:
    parts = partitions or list(project.partition_keys)
    try:
        keys = selection(defs, project, select, parts)
    except ValueError as e:
        out(f"[backfill] {e}")
        return 2
    changed = observe_declarations(instance, project, declared_names(defs.resolve_asset_graph()))
    say_changed(changed, "backfill", out)
    backfill_id = submit(instance, defs, keys, parts)
    out(f"[backfill] backfill {backfill_id}: {len(keys)} asset(s) x {', '.join(parts)} (the UI: Overview > Backfills)")
    out("[backfill] looking for a running daemon (up to 35 s when one stopped a moment ago) ...")
    daemon = None if daemon_running(instance) else start_daemon(home, out)
    try:
        return follow(instance, backfill_id, out, timeout_s, daemon)
    except KeyboardInterrupt:
        out(f"[backfill] stopped following; backfill {backfill_id} goes on while a daemon runs (`dagster dev`)")
        return 130
    finally:
        if daemon is not None:
            stop_daemon(instance, daemon, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.backfill", description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", help="comma-separated cohort keys (default: all)")
    ap.add_argument("--select", help="Dagster asset selection, e.g. '*count_baseline_probe_metrics' (default: all)")
    ap.add_argument("--timeout", type=float, default=None, help="give up following after this many seconds")
    args = ap.parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(default_home()))
    home = Path(os.environ["DAGSTER_HOME"])
    from .definitions import defs

    with dg.DagsterInstance.get() as instance:
        return backfill(
            defs,
            load_project(default_project_dir()),
            instance,
            home,
            args.select,
            args.partitions.split(",") if args.partitions else None,
            timeout_s=args.timeout,
            out=functools.partial(print, flush=True),
        )


if __name__ == "__main__":
    sys.exit(main())
