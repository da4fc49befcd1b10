"""Hard kills (SIGKILL) of real materializations at exact points, then the same command again with no manual step:
it finishes, and the warehouse, the checkpoint and the embeddings equal those of a run that was never killed.

The build command (``python -m ehr_assets.build``, in-process) is killed inside a warehouse transaction, while a
step checkpoint is half written and while the embeddings folder is half written (``crash_hook/sitecustomize.py``
kills the process itself at each point). ``dagster asset materialize`` (multiprocess executor) is killed as a user
would, from outside, while a step holds the ``duckdb`` pool slot. Recovery itself (:mod:`ehr_assets.defs.recovery`)
is held to what it must never touch: a live run, a run of another host."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from safetensors.numpy import load_file

from ehr_assets.definitions import build_definitions
from ehr_assets.defs import recovery
from ehr_assets.defs.build import build
from ehr_assets.specs import load_project

from ..conftest import REPO, make_tiny_project

HOOK = Path(__file__).parent / "crash_hook"
SELECT = "*sft_embeddings"
DATA = "cohort_events,cohort_table,subjects,decision_nodes"  # the selection, shortened to stay fast
RERUN_TIMEOUT_S = 240  # a run blocked for ever behind a dead one fails here
POOLS = {"concurrency": {"pools": {"granularity": "op", "default_limit": 1}}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted build of ``*sft_embeddings`` [msk] (8 training steps, a step checkpoint every 2)."""
    tmp = tmp_path_factory.mktemp("crash")
    root = make_tiny_project(tmp / "project", {"msk": 40}, recipes=("sft",), steps=8)
    defs = build_definitions(root, warehouse_path=tmp / "ref.duckdb", artifact_root=tmp / "ref_artifacts")
    with dg.instance_for_test(overrides=POOLS) as instance:
        lines: list[str] = []
        assert build(defs, load_project(root), instance, SELECT, ["msk"], out=lines.append) == 0, lines
    return root, tmp / "ref.duckdb", tmp / "ref_artifacts"


def _env(tmp: Path, root: Path, crash: str | None = None) -> dict:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp / "home"),
        "EHR_PROJECT_DIR": str(root),
        "EHR_WAREHOUSE": str(tmp / "warehouse.duckdb"),
        "EHR_ARTIFACT_ROOT": str(tmp / "artifacts"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HOOK), str(REPO)]),
    }
    env.pop("EHR_CRASH_AT", None)
    if crash:
        env["EHR_CRASH_AT"] = crash
    return env


def _home(tmp: Path) -> Path:
    home = tmp / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    dg.DagsterInstance.from_config(str(home)).dispose()  # create the storage once
    return home


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=RERUN_TIMEOUT_S)


def _counts(db: Path) -> dict[str, int]:
    """Rows of the msk partition of every warehouse table."""
    with duckdb.connect(str(db), read_only=True) as c:
        tables = [t for (t,) in c.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {t: c.execute(f'SELECT count(*) FROM "{t}" WHERE cohort = ?', ["msk"]).fetchone()[0] for t in tables}


def _runs(home: Path) -> list[DagsterRun]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs())


def _claimed(home: Path) -> list:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots


def test_build_killed_three_times_then_rerun_equals_an_uninterrupted_build(reference, tmp_path):
    root, ref_db, ref_art = reference
    home = _home(tmp_path)
    cmd = [sys.executable, "-m", "ehr_assets.build", "--select", SELECT, "--partitions", "msk", "--log-level", "INFO"]
    outs = []
    for crash in ("commit:token_sequences", "step:4", "embeddings:sft_embeddings", None):
        t0 = time.perf_counter()
        r = _run(cmd, _env(tmp_path, root, crash))
        outs.append(r.stdout + r.stderr)
        assert r.returncode == (-signal.SIGKILL if crash else 0), f"{crash}: rc {r.returncode}\n{outs[-1][-3000:]}"
        print(f"{crash or 'plain rerun'}: rc {r.returncode} in {time.perf_counter() - t0:.1f} s (shared machine)")
        art = tmp_path / "artifacts"
        if crash == "commit:token_sequences":  # killed inside the transaction: nothing of it landed, a slot is held
            with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as c:
                tables = {t for (t,) in c.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            assert "cohort_events" in tables and "token_sequences" not in tables
            assert [s.step_key for s in _claimed(home)] == ["token_sequences"]
        elif crash == "step:4":  # step 2 complete, step 4 half written, nothing published
            rdir = art / ".resume" / "sft_checkpoint" / "msk"
            assert (rdir / "step_000002" / "trainer_state.json").is_file()
            assert not (rdir / ".step_000004.tmp" / "trainer_state.safetensors").exists()
            assert not (art / "sft_checkpoint" / "msk").exists()
        elif crash:  # the embeddings' tensor file written in the temporary folder, no index, nothing published
            (half,) = (art / "sft_embeddings").glob(".msk.tmp-*")
            assert (half / "embeddings.safetensors").is_file() and not (half / "index.parquet").exists()
            assert not (art / "sft_embeddings" / "msk").exists()
    runs = _runs(home)
    killed = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
    assert len(killed) == 3 and all(r.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE) for r in runs)
    for before, after in zip(killed[::-1], outs[1:]):  # each rerun said which run it recovered, in one line
        said = [ln for ln in after.split("\n") if ln.startswith(f"[build] run {before.run_id[:8]}")]
        assert len(said) == 1 and "died" in said[0], after[-3000:]
    assert "resuming from" in outs[2] and "step_000002" in outs[2]  # the training killed at step 4 resumed at 2
    assert _claimed(home) == []
    counts = _counts(ref_db)
    assert {"cohort_events", "token_sequences", "node_contexts"} <= set(counts) and counts["cohort_events"] > 0
    assert _counts(tmp_path / "warehouse.duckdb") == counts
    ck, ref_ck = tmp_path / "artifacts" / "sft_checkpoint" / "msk", ref_art / "sft_checkpoint" / "msk"
    files = sorted(p.relative_to(ref_ck) for p in ref_ck.rglob("*.safetensors"))
    assert files
    for f in files:  # resumed training = uninterrupted training, bit for bit
        a, b = load_file(str(ref_ck / f)), load_file(str(ck / f))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), f
    emb = load_file(str(tmp_path / "artifacts" / "sft_embeddings" / "msk" / "embeddings.safetensors"))["embeddings"]
    ref = load_file(str(ref_art / "sft_embeddings" / "msk" / "embeddings.safetensors"))["embeddings"]
    assert emb.shape == ref.shape and emb.shape[0] > 0 and np.array_equal(emb, ref)
    # the folder the embedding write killed mid-way left was swept by the rerun's write: nothing half-written remains
    assert not list((tmp_path / "artifacts").rglob(".*.tmp-*")) and not list((tmp_path / "artifacts").rglob(".*.old-*"))


def test_materialize_killed_while_holding_the_pool_then_the_same_command_finishes(reference, tmp_path):
    """The issue's sequence: `dagster asset materialize` SIGKILLed while a step holds the duckdb slot; the same
    command again recovers the dead run (one line naming it) and finishes."""
    root, ref_db, _ = reference
    home = _home(tmp_path)
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "asset", "materialize", "-m", "ehr_assets.definitions", "--select", DATA, "--partition", "msk"]
    t0 = time.perf_counter()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path, root), **quiet)
    deadline = time.time() + 180
    while time.time() < deadline and not any(s.step_key == "cohort_events" for s in _claimed(home)):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the CLI process only, as `kill -9 PID` does
    proc.wait()
    killed_at = time.perf_counter() - t0
    (run,) = _runs(home)
    assert run.status == DagsterRunStatus.STARTED and _claimed(home)  # what blocked every later run before
    t1 = time.perf_counter()
    again = _run(cmd, _env(tmp_path, root))
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    print(f"killed after {killed_at:.1f} s; rerun finished in {time.perf_counter() - t1:.1f} s (shared machine)")
    assert f"run {run.run_id[:8]} [msk] died" in out
    statuses = {r.run_id: r.status for r in _runs(home)}
    assert statuses.pop(run.run_id) == DagsterRunStatus.FAILURE
    assert list(statuses.values()) == [DagsterRunStatus.SUCCESS]
    assert _claimed(home) == []
    got, want = _counts(tmp_path / "warehouse.duckdb"), _counts(ref_db)
    both = got.keys() & want.keys()
    assert {t: got[t] for t in both} == {t: want[t] for t in both} and set(DATA.split(",")) <= both


# ----------------------------------------------------------------------------------- recovery's own guarantees
def _add_run(instance, tags: dict, step: str | None = None, status=DagsterRunStatus.STARTED) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="j", run_id=run_id, status=status, tags=tags))
    if step:
        assert instance.event_log_storage.claim_concurrency_slot("duckdb", run_id, step).is_claimed
    return run_id


def test_recovery_fails_dead_runs_only_and_frees_their_slots():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_tags = recovery.process_tags(gone.pid)  # recorded while it lived
    gone.wait()
    me = recovery.process_tags()
    monitoring = {"run_monitoring": {"enabled": True, "start_timeout_seconds": 1}}
    with dg.instance_for_test(overrides={**POOLS, **monitoring}) as instance:
        never = _add_run(instance, {}, status=DagsterRunStatus.NOT_STARTED)  # killed before it started
        time.sleep(1.2)
        instance.event_log_storage.set_concurrency_slots("duckdb", 1)
        dead = _add_run(instance, dead_tags, step="cohort_events")
        live = _add_run(instance, me)
        reused = _add_run(instance, {**me, recovery.START_TAG: str(int(me[recovery.START_TAG]) - 1)})  # same pid, older
        remote = _add_run(instance, {**dead_tags, recovery.HOST_TAG: socket.gethostname() + "-other"})
        wait = recovery.explain_wait(instance, "duckdb", live)
        assert dead in wait and f"{recovery.COMMAND} --fail {dead}" in wait  # who holds it, what frees it
        lines: list[str] = []
        assert sorted(recovery.recover(instance, out=lines.append)) == sorted([dead, reused, never])
        status = {r: instance.get_run_by_id(r).status for r in (dead, live, reused, remote, never)}
        assert status == {
            never: DagsterRunStatus.FAILURE,
            dead: DagsterRunStatus.FAILURE,
            live: DagsterRunStatus.STARTED,
            reused: DagsterRunStatus.FAILURE,
            remote: DagsterRunStatus.STARTED,
        }
        assert instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots == []
        assert any(dead[:8] in ln and "freed duckdb slot: cohort_events" in ln for ln in lines), lines
        assert all(len(ln) <= 100 for ln in lines), lines
        skip = recovery.dead_runs_sensor()(dg.build_sensor_context(instance=instance))  # the daemon's way
        assert isinstance(skip, dg.SkipReason) and skip.skip_message == "no dead run"
        # a live holder: the wait names its pid and how to stop it; --fail refuses to touch it
        assert instance.event_log_storage.claim_concurrency_slot("duckdb", live, "subjects").is_claimed
        assert f"kill {os.getpid()}" in recovery.explain_wait(instance, "duckdb", "someone-else")
        assert recovery.explain_wait(instance, "duckdb", live) == ""  # a wait inside one run is not news
        assert recovery.fail_run(instance, live, out=lines.append) == 1
        assert instance.get_run_by_id(live).status == DagsterRunStatus.STARTED
