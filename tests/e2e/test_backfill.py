"""``python -m ehr_assets.backfill``: a backfill submitted, run by a real ``dagster-daemon`` that the command starts
(and stops) for it, followed to its end; and the failure report of a backfill whose run failed."""

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus

from ehr_assets.defs.backfill import daemon_running, follow, submit
from ehr_assets.defs.checks import cohort_check

from ..conftest import REPO, make_tiny_project, project_env


def test_backfill_of_two_partitions_runs_to_the_end_with_its_own_daemon(tmp_path):
    root = make_tiny_project(tmp_path / "project", {"msk": 20, "inspect": 20}, recipes=())
    env = project_env(tmp_path, root, EHR_EXECUTOR="in_process")  # short steps: no process start per step
    home = tmp_path / "home"
    cmd = [
        sys.executable,
        "-m",
        "ehr_assets.backfill",
        "--partitions",
        "msk,inspect",
        "--select",
        "*count_baseline_probe_metrics",
    ]
    proc = subprocess.run([*cmd, "--timeout", "240"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:] + (home / "backfill-daemon.log").read_text()[-3000:]
    assert "starting one for this backfill" in out and "stopped the daemon it started" in out
    assert "done in" in out and "2 run(s) succeeded" in out
    pid = int(re.search(r"stopped the daemon it started \(pid (\d+)\)", out).group(1))
    assert not Path(f"/proc/{pid}").exists()  # the daemon is gone
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (backfill,) = instance.get_backfills()
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == ["inspect", "msk"]  # no run but the backfill's
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        got = instance.get_materialized_partitions(dg.AssetKey("count_baseline_probe_metrics"))
        assert got == {"msk", "inspect"}
        assert not daemon_running(instance, interval_s=1)  # its heartbeats are gone: the next command starts one


def test_a_failed_run_is_named_with_its_error(tmp_path):
    """The end of a backfill whose partition ``b`` failed in a step and ``c`` on a blocking check: exit 1, naming
    each run, the step and its error, the check and the partition it failed on."""
    parts = dg.StaticPartitionsDefinition(["a", "b", "c"])

    @dg.asset(partitions_def=parts)
    def table(context):
        if context.partition_key == "b":
            raise ValueError("cohort b: column 'time' is missing")

    @cohort_check(SimpleNamespace(partition_keys=["a", "b", "c"]), asset=table, blocking=True)
    def rows_ok(context):
        problems = ["3 rows of c lie outside its window"] if context.partition_key == "c" else []
        return dg.AssetCheckResult(passed=not problems, metadata={"problems": "\n".join(f"- {x}" for x in problems)})

    defs = dg.Definitions(assets=[table], asset_checks=[rows_ok])
    with dg.instance_for_test() as instance:
        backfill_id = submit(instance, defs, [table.key], ["a", "b", "c"])
        for p in ("a", "b", "c"):
            tags = {"dagster/backfill": backfill_id}
            dg.materialize([table, rows_ok], partition_key=p, instance=instance, tags=tags, raise_on_error=False)
        instance.update_backfill(instance.get_backfill(backfill_id).with_status(BulkActionStatus.COMPLETED_FAILED))
        lines = []
        assert follow(instance, backfill_id, lines.append, timeout_s=5) == 1
    text = "\n".join(lines)
    failed = sorted(ln.split(": run ")[0] for ln in lines if ln.startswith("[backfill] FAILED"))
    assert failed == ["[backfill] FAILED b", "[backfill] FAILED c"], text
    assert "    table: ValueError: cohort b: column 'time' is missing" in lines, text
    assert "    check table:rows_ok [c] failed: 3 rows of c lie outside its window" in lines, text
    assert not any(ln.strip().startswith("run:") for ln in lines), text  # the step's error, not the run's copy
    assert "2 of 3 run(s) did not succeed" in text


def test_a_daemon_counts_as_running_only_while_its_heartbeats_advance():
    """A daemon stopped a moment ago leaves fresh heartbeats: they must advance for it to count."""
    import threading
    import time

    from dagster._daemon.types import DaemonHeartbeat

    def beat(instance):
        for d in ("BACKFILL", "QUEUED_RUN_COORDINATOR"):
            instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), d, "test-daemon", errors=[]))

    with dg.instance_for_test() as instance:
        assert not daemon_running(instance, interval_s=1)  # none ever ran
        beat(instance)
        assert not daemon_running(instance, interval_s=1)  # fresh but still: it stopped
        stop = threading.Event()

        def alive():
            while not stop.wait(0.3):
                beat(instance)

        t = threading.Thread(target=alive)
        t.start()
        time.sleep(0.5)
        try:
            assert daemon_running(instance, interval_s=1)
        finally:
            stop.set()
            t.join()


def test_the_daemon_it_starts_runs_the_backfill_only(tmp_path, monkeypatch):
    """The daemon the command starts loads the project with its sensors off (no automation runs beside the
    backfill's), from the same module as the UI (the same code location)."""
    from ehr_assets.defs import backfill as command
    from ehr_assets.defs.definitions import declared_parts, pick_sensors
    from ehr_assets.specs import load_project

    started = {}

    class Popen:
        def __init__(self, cmd, **kw):
            started.update(cmd=cmd, **kw)

    monkeypatch.setattr(command.subprocess, "Popen", Popen)
    command.start_daemon(tmp_path, lambda line: None)
    assert started["cmd"][1:4] == ["run", "-m", "ehr_assets.definitions"]
    assert started["env"]["EHR_SENSORS"] == "off" and started["env"]["DAGSTER_HOME"] == str(tmp_path)
    project = load_project(REPO)
    monkeypatch.setenv("EHR_SENSORS", "off")
    assert pick_sensors(project, declared_parts(project)) == []
    monkeypatch.delenv("EHR_SENSORS")
    names = {s.name for s in pick_sensors(project, declared_parts(project))}
    assert names == {"declarations_sensor", "follow_declarations", "dead_runs_sensor"}
