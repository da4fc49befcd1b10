import os

import duckdb
import pandas as pd
import pytest

from ehr_assets.warehouse import atomic_dir, ident, read_partition, replace_partition


def test_replace_partition_swaps_one_partition_only(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    a = pd.DataFrame({"cohort": ["a"] * 3, "x": [1, 2, 3]})
    b = pd.DataFrame({"cohort": ["b"] * 2, "x": [10, 20]})
    assert replace_partition(conn, "t", a, {"cohort": "a"}) == 3
    replace_partition(conn, "t", b, {"cohort": "b"})
    replace_partition(conn, "t", pd.DataFrame({"cohort": ["a"], "x": [7]}), {"cohort": "a"})
    assert read_partition(conn, "t", {"cohort": "a"})["x"].tolist() == [7]
    assert read_partition(conn, "t", {"cohort": "b"}, order_by=["x"])["x"].tolist() == [10, 20]
    # a new column appears without losing the other partition
    replace_partition(conn, "t", pd.DataFrame({"cohort": ["a"], "x": [8], "y": ["new"]}), {"cohort": "a"})
    assert read_partition(conn, "t", {"cohort": "b"})["y"].isna().all()


def test_failed_write_keeps_previous_partition(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    replace_partition(conn, "t", pd.DataFrame({"cohort": ["a"], "x": [1]}), {"cohort": "a"})
    bad = pd.DataFrame({"cohort": ["a"], "x": ["not-an-int"]})
    with pytest.raises(duckdb.Error):
        replace_partition(conn, "t", bad, {"cohort": "a"})
    assert read_partition(conn, "t", {"cohort": "a"})["x"].tolist() == [1]
    with pytest.raises(ValueError, match="rows outside partition"):
        replace_partition(conn, "t", pd.DataFrame({"cohort": ["b"], "x": [1]}), {"cohort": "a"})


def test_identifiers_are_validated_and_missing_table_named(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        ident('t"; DROP TABLE x; --')
    with pytest.raises(LookupError, match="materialize asset 'nope' first"):
        read_partition(conn, "nope", {"cohort": "a"})


def test_atomic_dir_replaces_on_success_and_keeps_old_on_failure(tmp_path):
    final = tmp_path / "art" / "msk"
    with atomic_dir(final) as d:
        (d / "f.txt").write_text("v1")
    assert (final / "f.txt").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "f.txt").write_text("half")
            raise RuntimeError("killed")
    assert (final / "f.txt").read_text() == "v1"
    assert [p.name for p in final.parent.iterdir()] == ["msk"]  # no temporary left behind
    with atomic_dir(final) as d:
        (d / "g.txt").write_text("v2")
    assert sorted(p.name for p in final.iterdir()) == ["g.txt"]


def test_a_failed_write_raises_the_original_error_and_keeps_the_connection_usable():
    import duckdb
    import numpy as np
    import pandas as pd
    import pytest

    from ehr_assets.warehouse import replace_partition

    c = duckdb.connect()
    replace_partition(c, "t", pd.DataFrame({"cohort": ["a"], "x": [[1, 2]]}), {"cohort": "a"})
    with pytest.raises(duckdb.ConversionException):  # not a masking "transaction aborted" error
        replace_partition(c, "t", pd.DataFrame({"cohort": ["a"], "x": [[np.int32(1)]]}), {"cohort": "a"})
    assert c.execute("SELECT x FROM t").fetchall() == [([1, 2],)]
    replace_partition(c, "t", pd.DataFrame({"cohort": ["a"], "x": [[3]]}), {"cohort": "a"})
    assert c.execute("SELECT x FROM t").fetchall() == [([3],)]


# ------------------------------------------------------------------------------------------- the single-writer lock
def _writer(db: str, who: int, n: int) -> None:
    """A process that opens the warehouse ``n`` times and appends a row each time (as a step does for its writes)."""
    from ehr_assets.warehouse import connect

    for i in range(n):
        with connect(db) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (who INTEGER, i INTEGER)")
            conn.execute("INSERT INTO t VALUES (?, ?)", [who, i])


def test_processes_take_turns_on_the_warehouse_lock(tmp_path):
    """Three processes open one DuckDB file over and over: every open waits for the lock instead of failing on
    DuckDB's own file lock ("Could not set lock on file")."""
    import multiprocessing as mp

    db = str(tmp_path / "w.duckdb")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(db, k, 15)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with duckdb.connect(db, read_only=True) as c:
        assert c.execute("SELECT who, count(*) FROM t GROUP BY 1 ORDER BY 1").fetchall() == [(0, 15), (1, 15), (2, 15)]


def test_the_lock_is_reentrant_held_while_open_and_names_its_holder(tmp_path):
    import fcntl
    import os

    from ehr_assets.defs.resources import Warehouse
    from ehr_assets.warehouse import connect, lock_path, warehouse_lock

    db = tmp_path / "w.duckdb"

    def busy() -> bool:  # what another process sees: can it take the lock now?
        fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    resource = Warehouse(database=str(db))
    with resource.get_connection() as conn:  # the Dagster resource holds it while open
        assert busy()
        with resource.get_connection() as inner:  # a nested open in the same thread does not deadlock
            inner.execute("CREATE TABLE t AS SELECT 1 AS x")
        assert busy()
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert lock_path(db).read_text() == f"pid {os.getpid()} on {os.uname().nodename}"
    assert not busy()
    with pytest.raises(RuntimeError), connect(db) as conn:  # released when the body raises too
        raise RuntimeError
    assert not busy()
    # a waiter is told who holds it
    fd = os.open(lock_path(db), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    told = []
    import threading

    def release():
        import time

        time.sleep(0.3)
        fcntl.flock(fd, fcntl.LOCK_UN)

    threading.Thread(target=release).start()
    with warehouse_lock(db, on_wait=told.append):
        pass
    os.close(fd)
    assert "held by pid" in told[0] and told[1].startswith("got the warehouse lock after")
    with warehouse_lock(":memory:"):  # nothing to share
        pass


def test_a_writer_killed_mid_write_leaves_nothing_the_next_write_keeps(tmp_path):
    """The temporary folders of a writer that died (this host, its pid gone) are swept by the next write of the same
    artifact; a live writer's, another host's and another artifact's are left alone."""
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    final = tmp_path / "sft_embeddings" / "msk"
    final.parent.mkdir()
    left = {
        "dead_tmp": final.parent / f".msk.tmp-{host}-{dead_pid}-0000aaaa",
        "dead_old": final.parent / f".msk.old-{host}-{dead_pid}-0000bbbb",
        "live": final.parent / f".msk.tmp-{host}-{os.getpid()}-0000cccc",
        "other_host": final.parent / f".msk.tmp-elsewhere-{dead_pid}-0000dddd",
        "other_artifact": final.parent / f".inspect.tmp-{host}-{dead_pid}-0000eeee",
    }
    for p in left.values():
        (p / "part").mkdir(parents=True)
    with atomic_dir(final) as tmp:
        (tmp / "x").write_text("1")
    assert (final / "x").read_text() == "1"
    kept = {k for k, p in left.items() if p.exists()}
    assert kept == {"live", "other_host", "other_artifact"}
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".msk.") and p not in left.values()]
