"""Runs whose process died (SIGKILL, the OOM killer, a closed terminal, a reboot): found, marked failed, their
``duckdb`` pool slots freed, so that the next command goes on by itself (docs/concepts/reliability.md).

    python -m ehr_assets.recover [--fail RUN_ID]

Who calls it: the build command (``make demo``, ``make study``) before its first run; every run of the project's
executor (``dagster asset materialize``, the UI, the daemon) when it starts and, while one of its steps waits for a
pool slot, every :data:`POLL_S` seconds; this command.

How a run's process is known: every run records ``ehr/host``, ``ehr/pid`` and ``ehr/pid_start`` (the process's start
time in clock ticks since boot, so that a reused pid is not taken for the run) in its tags: the project's executor
(:func:`guarded`) at the start of execution, the build command when it launches a run. Step worker processes of the
multiprocess executor are Dagster's own ``STEP_WORKER_STARTED`` events (pid). A run is dead only when it was started
on this host, its process is gone (or the pid now belongs to a process started after it) and no step worker of it is
alive. Runs of another host are never touched; a run without the tags (started before they existed) is judged from
Dagster's engine events (pid) only when the instance's storage is SQLite, which lives on one machine.

This is the one module of the project that uses Dagster's private storage types (run records and pool slots).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from ..warehouse import pid_alive

HOST_TAG, PID_TAG, START_TAG = "ehr/host", "ehr/pid", "ehr/pid_start"
COMMAND = "python -m ehr_assets.recover"
POLL_S = 10.0  # while a step of a run waits for a pool slot, look for dead holders this often
BLOCKED = ("Step blocked by limit for pool", "Step still blocked by limit for pool")  # Dagster's DEBUG events
LIVE = [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


# ---------------------------------------------------------------------------------------------------- processes
def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first, start time at index 19), or None without such a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        return None
    return text.rsplit(")", 1)[1].split()


def _ticks_to_epoch(ticks: int) -> float:
    btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime"))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), None if there is no such live process."""
    st = _stat(pid)
    return None if st is None or st[0] in ("Z", "X") else int(st[19])


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The tags a run carries so that :func:`recover` can tell whether its process lives."""
    pid = os.getpid() if pid is None else pid
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: str(process_start(pid) or "")}


def alive(pid: int, start: int | None = None, *, before: float | None = None, after: float | None = None) -> bool:
    """Whether ``pid`` is a live process of this host that could be the one recorded: with the same start ticks
    (``start``), or started no later than ``before`` / no earlier than ``after`` (epoch seconds, 2 s slack)."""
    if not Path("/proc/self/stat").exists():  # no procfs: existence only
        return pid_alive(pid)
    ticks = process_start(pid)
    if ticks is None:
        return False
    if start is not None:
        return ticks == start
    t = _ticks_to_epoch(ticks)
    return (before is None or t <= before + 2) and (after is None or t >= after - 2)


# --------------------------------------------------------------------------------------------------------- runs
@dataclass
class Verdict:
    """What is known of a run's processes: ``dead`` True / False, or None when it cannot be told here (``why``)."""

    run_id: str
    dead: bool | None
    why: str
    pids: list[int] = field(default_factory=list)


def _pids(instance, run_id: str, types) -> list[int]:
    out = []
    for e in instance.all_logs(run_id, of_type=types):
        data = e.dagster_event.event_specific_data if e.dagster_event else None
        md = getattr(data, "metadata", None) or {}
        if "pid" in md:
            out.append(int(md["pid"].value))
    return out


def judge(instance: dg.DagsterInstance, record) -> Verdict:
    """Whether the process of an in-progress run (a run record) is gone from this host."""
    run = record.dagster_run
    tags, rid = run.tags, run.run_id
    host = tags.get(HOST_TAG)
    if host and host != socket.gethostname():
        return Verdict(rid, None, f"runs on host {host}")
    started = record.start_time or record.create_timestamp.timestamp()
    workers = _pids(instance, rid, {DagsterEventType.STEP_WORKER_STARTED})
    if PID_TAG in tags:
        pid = int(tags[PID_TAG])
        start = int(tags[START_TAG]) if tags.get(START_TAG) else None
        main_alive = alive(pid, start, before=None if start else started)
    elif not type(instance.run_storage).__name__.startswith("Sqlite"):
        return Verdict(rid, None, "no host recorded (storage shared between machines)")
    else:
        mains = _pids(instance, rid, {DagsterEventType.ENGINE_EVENT})
        if not mains:
            return Verdict(rid, None, "no process recorded")
        pid = mains[0]
        main_alive = alive(pid, before=started)
    live = [w for w in workers if alive(w, after=started)]
    if main_alive or live:
        return Verdict(rid, False, "alive", [pid, *live] if main_alive else live)
    return Verdict(rid, True, f"pid {pid} gone", [pid])


def _claims(instance, run_id: str) -> list[tuple[str, str]]:
    """(pool, step) of every slot ``run_id`` holds."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    out = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        out += [(pool, s.step_key) for s in info.claimed_slots if s.run_id == run_id]
    return out


def _label(run) -> str:
    part = run.tags.get("dagster/partition")
    return f"run {run.run_id[:8]}" + (f" [{part}]" if part else "")


def _free(instance, run_id: str) -> str:
    claims = _claims(instance, run_id)
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    pools = sorted({p for p, _ in claims})
    return "".join(f", freed {p} slot: {', '.join(s for q, s in claims if q == p)}" for p in pools)


def _line(text: str) -> str:
    """One terminal line of at most 100 columns."""
    return text if len(text) <= 100 else text[:97] + "..."


def recover(instance: dg.DagsterInstance, out: Callable[[str], None] = print, tag: str = "recover") -> list[str]:
    """Mark every dead run of this host failed and free its pool slots, fail runs that never started within
    Dagster's start timeout (run monitoring's rule), and free the slots still held by finished runs; one line per
    run through ``out``. Returns the run ids recovered."""
    done = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=LIVE)):
        v = judge(instance, record)
        run = instance.get_run_by_id(v.run_id)
        if not v.dead or run is None or run.status not in LIVE:
            continue
        instance.report_run_failed(run, f"The run's process is gone ({v.why}): marked failed by {COMMAND}.")
        out(_line(f"[{tag}] {_label(run)} died ({v.why}): marked failed{_free(instance, run.run_id)}"))
        done.append(run.run_id)
    limit = instance.run_monitoring_start_timeout_seconds  # Dagster's rule, also without the daemon
    for record in instance.get_run_records(filters=RunsFilter(statuses=[DagsterRunStatus.NOT_STARTED])):
        age = time.time() - record.create_timestamp.timestamp()
        if limit > 0 and age > limit:
            instance.report_run_failed(record.dagster_run, f"The run did not start within {limit} s.")
            out(_line(f"[{tag}] {_label(record.dagster_run)} never started ({age:.0f} s): marked failed"))
            done.append(record.dagster_run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        held = {s.run_id for p in storage.get_concurrency_keys() for s in storage.get_concurrency_info(p).claimed_slots}
        for rid in sorted(held | storage.get_concurrency_run_ids()):
            run = instance.get_run_by_id(rid)
            if run is None or run.is_finished:
                what = f"{_label(run)} ({run.status.value.lower()})" if run else f"run {rid[:8]} (deleted)"
                freed = _free(instance, rid)
                if freed:
                    out(_line(f"[{tag}] {what} had ended{freed}"))
                    done.append(rid)
    return done


def explain_wait(instance: dg.DagsterInstance, pool: str, me: str) -> str:
    """Why a step of run ``me`` waits for ``pool``: which other runs hold its slots and what frees them, in one
    line; "" when only steps of ``me`` hold them (an ordinary wait inside one run)."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    parts = []
    for s in (s for s in info.claimed_slots if s.run_id != me):
        record = next(iter(instance.get_run_records(filters=RunsFilter(run_ids=[s.run_id]), limit=1)), None)
        v = judge(instance, record) if record else Verdict(s.run_id, True, "deleted")
        if v.dead is False:
            how = f"pid {v.pids[0]} alive): it goes on when that run ends; to stop that run: kill {v.pids[0]}"
        else:
            how = f"{v.why}): to free it: {COMMAND} --fail {s.run_id}"
        parts.append(f"run {s.run_id} (step {s.step_key}, {how}")
    return f"waits for pool '{pool}' (limit {info.limit}), held by " + "; ".join(parts) if parts else ""


def fail_run(instance: dg.DagsterInstance, run_id: str, out: Callable[[str], None] = print) -> int:
    """``--fail RUN_ID``: mark a run failed and free its slots, unless its process lives on this host."""
    records = list(instance.get_run_records(filters=RunsFilter(run_ids=[run_id]), limit=1))
    if not records:
        out(f"[recover] no run {run_id} in {instance.root_directory}")
        return 2
    run = records[0].dagster_run
    v = judge(instance, records[0])
    if v.dead is False:
        out(f"[recover] {_label(run)} is alive (pid {v.pids[0]}): stop it first (kill {v.pids[0]})")
        return 1
    if not run.is_finished:
        instance.report_run_failed(run, f"Marked failed by {COMMAND} --fail.")
    out(f"[recover] {_label(run)}: marked failed{_free(instance, run_id)}")
    return 0


# ------------------------------------------------------------------------------------------------ the executor
class GuardedExecutor(dg.Executor):
    """An executor that tags its run with its process (:func:`process_tags`), recovers dead runs before it starts,
    and, while a step waits for a pool slot, says at WARNING who holds it and looks for dead holders every
    :data:`POLL_S` seconds."""

    def __init__(self, inner: dg.Executor):
        self.inner = inner

    @property
    def retries(self):
        return self.inner.retries

    @property
    def step_dependency_config(self):
        return self.inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator:
        instance, run_id, log = plan_context.instance, plan_context.run_id, plan_context.log
        instance.add_run_tags(run_id, process_tags())
        recover(instance, out=log.warning)
        stop, waiting = threading.Event(), threading.Event()
        watcher = threading.Thread(target=_watch, args=(instance, log, stop, waiting), daemon=True)
        watcher.start()
        try:
            for event in self.inner.execute(plan_context, execution_plan):
                yield event
                msg = event.message or ""
                if event.event_type == DagsterEventType.ENGINE_EVENT and msg.startswith(BLOCKED):
                    waiting.set()
                    recover(instance, out=log.warning)
                    why = explain_wait(instance, msg.split()[-1], run_id)
                    if why:
                        log.warning(f"step {event.step_key} {why}")
        finally:
            stop.set()


def _watch(instance, log, stop: threading.Event, waiting: threading.Event) -> None:
    while not stop.wait(POLL_S):
        if waiting.is_set():
            try:
                recover(instance, out=log.warning)
            except Exception as e:  # never let the watcher break a run
                log.warning(f"looking for dead runs failed: {e}")


def guarded(base: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """``base`` (e.g. ``dg.multiprocess_executor``) whose executor is wrapped in :class:`GuardedExecutor`."""
    return dg.ExecutorDefinition(
        name=base.name,
        config_schema=base.config_schema,
        requirements=base.get_requirements,
        executor_creation_fn=lambda init: GuardedExecutor(base.executor_creation_fn(init)),
        description=base.description,
    )


def dead_runs_sensor() -> dg.SensorDefinition:
    """With the daemon (``dagster dev``): :func:`recover` every 30 s, for runs started outside it (the CLI, the
    build command) whose process died; the daemon's own runs are Dagster's (run monitoring, dagster.yaml)."""

    @dg.sensor(name="dead_runs_sensor", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
    def sensor(context: dg.SensorEvaluationContext):
        done = recover(context.instance, out=context.log.warning)
        return dg.SkipReason(f"{len(done)} dead run(s) recovered" if done else "no dead run")

    return sensor


# ------------------------------------------------------------------------------------------------------ command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    ap.add_argument("--fail", metavar="RUN_ID", help="mark this run failed and free its slots (not if it is alive)")
    args = ap.parse_args(argv)
    from ..warehouse import default_home

    os.environ.setdefault("DAGSTER_HOME", str(default_home()))
    with dg.DagsterInstance.get() as instance:
        if args.fail:
            return fail_run(instance, args.fail)
        t0 = time.perf_counter()
        done = recover(instance)
        n = len(instance.get_run_records(filters=RunsFilter(statuses=LIVE)))
        took = time.perf_counter() - t0
        found = f"{len(done)} dead run(s) recovered" if done else "no dead run"
        print(f"[recover] {found}; {n} run(s) in progress ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
