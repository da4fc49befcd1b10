"""The embedded warehouse (DuckDB) and the artifact store (folders), with atomic writes.

Tables: one per asset, each with a ``cohort`` partition column. :func:`replace_partition` swaps exactly one partition
in one transaction, so a failed materialization leaves the previous one readable. Identifiers are validated and
values always go through bound parameters.

One process at a time: DuckDB lets one process open the file for writing and no other process open it meanwhile, so
every connection the project opens (:func:`connect`, the Dagster ``warehouse`` resource) holds :func:`warehouse_lock`,
an exclusive ``flock`` on ``<warehouse>.lock``, for exactly as long as it is open. Computation between connections
(training, embedding, probes) holds nothing, so steps of several runs overlap and only their reads and writes queue;
the kernel frees the lock of a process that dies.

Artifacts: ``<root>/<asset>/<partition>/``. :func:`atomic_dir` yields a temporary sibling folder and renames it into
place only when the body succeeds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import duckdb
import pandas as pd

from .warehouse_schema import declared

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def ident(name: str) -> str:
    """Return ``name`` quoted as a SQL identifier, refusing anything but letters, digits and '_'."""
    if not IDENT_RE.match(name):
        raise ValueError(f"invalid SQL identifier {name!r}")
    return f'"{name}"'


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    ident(table)
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = current_schema()",
        [table],
    ).fetchone()
    return bool(row and row[0])


def replace_partition(conn: duckdb.DuckDBPyConnection, table: str, df: pd.DataFrame, where: dict[str, object]) -> int:
    """Replace the rows of ``table`` matching ``where`` (e.g. ``{"cohort": "msk"}``) by ``df``, in one transaction.

    The table's columns and types are its declaration's (:mod:`ehr_assets.warehouse_schema`), created on first write;
    ``df`` must carry the ``where`` columns with those values. Returns the number of rows written.
    """
    return replace_partitions(conn, [(table, df, where)])[0]


def replace_partitions(
    conn: duckdb.DuckDBPyConnection, writes: Sequence[tuple[str, pd.DataFrame, dict[str, object]]]
) -> list[int]:
    """Several :func:`replace_partition` writes (table, frame, partition) in ONE transaction: all land or none.

    Column types come from :mod:`ehr_assets.warehouse_schema`: a new table is created with its declared columns, a
    write is cast to them, and an existing table is brought to them first (:func:`align_table`)."""
    for table, df, where in writes:
        ident(table)
        for col, val in where.items():
            ident(col)
            if col not in df.columns:
                raise ValueError(f"{table}: frame lacks partition column {col!r}")
            if len(df) and not (df[col] == val).all():
                raise ValueError(f"{table}: rows outside partition {col}={val!r}")
    names = [f"__incoming_{i}" for i in range(len(writes))]
    conn.execute("BEGIN TRANSACTION")
    try:
        for name, (table, df, where) in zip(names, writes):
            conn.register(name, df)
            types = align_table(conn, table, name, list(df.columns))
            cols = ", ".join(ident(c) for c in df.columns)
            cast = ", ".join(f"CAST({ident(c)} AS {types[c]})" for c in df.columns)
            cond = " AND ".join(f"{ident(c)} = ?" for c in where)
            conn.execute(f"DELETE FROM {ident(table)} WHERE {cond}", list(where.values()))
            conn.execute(f"INSERT INTO {ident(table)} ({cols}) SELECT {cast} FROM {name}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")  # before anything else touches the connection: the original error surfaces
        raise
    finally:
        for name in names:
            try:
                conn.unregister(name)
            except Exception:  # never registered (the failure came first)
                pass
    return [len(df) for _, df, _ in writes]


class WarehouseSchemaError(ValueError):
    """A warehouse table disagrees with its declaration and cannot be repaired without losing data; the message
    names the table, the column and what to do."""


NULL_TYPE = '"NULL"'  # DuckDB's type of a column created from values that were all null


def column_types(conn: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    """``column -> DuckDB type`` of a table (quoted name) or a registered frame."""
    return {r[0]: r[1] for r in conn.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}


def _target_types(table: str, incoming: dict[str, str], columns: list[str]) -> dict[str, str]:
    """The type of every column the table should have after this write: the declared ones, then each incoming
    column no declaration covers (the table's declared extra type, else its data's type; never NULL)."""
    spec = declared(table)
    want = dict(spec.columns) if spec else {}
    extra = spec.extras if spec and spec.extras not in (None, "source") else None
    for c in columns:
        if c not in want:
            want[c] = extra or (incoming[c] if incoming[c] != NULL_TYPE else "VARCHAR")
    return want


def align_table(conn: duckdb.DuckDBPyConnection, table: str, incoming: str, columns: list[str]) -> dict[str, str]:
    """Create ``table`` with its declared columns, or bring an existing one to them: add the missing columns,
    repair a column of type NULL (its values are all null, so retyping it loses nothing), keep the type of an
    undeclared column. A declared column of another type is refused (:class:`WarehouseSchemaError`, saying what to
    do). Returns the type each column of the write is cast to."""
    want = _target_types(table, column_types(conn, incoming), columns)
    if not table_exists(conn, table):
        body = ", ".join(f"{ident(c)} {t}" for c, t in want.items())
        conn.execute(f"CREATE TABLE {ident(table)} ({body})")
        return want
    have = column_types(conn, ident(table))
    spec = declared(table)
    for c, t in want.items():
        if c not in have:
            conn.execute(f"ALTER TABLE {ident(table)} ADD COLUMN {ident(c)} {t}")
        elif have[c] == NULL_TYPE:
            conn.execute(f"ALTER TABLE {ident(table)} ALTER COLUMN {ident(c)} TYPE {t}")
        elif have[c] != t and spec is not None and c in spec.columns:
            raise WarehouseSchemaError(
                f"warehouse table {table!r}: column {c!r} has type {have[c]}, but ehr_assets/warehouse_schema.py "
                f"declares {t} (the table was written by an older version). Re-create it: run "
                f"`DROP TABLE {table}` on the warehouse file, then re-materialize the asset that writes {table!r} "
                "for every partition"
            )
        elif have[c] != t:
            want[c] = have[c]  # an undeclared column keeps the type it was created with; the write is cast to it
    return want


def read_partition(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    where: dict[str, object],
    columns: Sequence[str] | None = None,
    order_by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read the rows of ``table`` matching ``where``; a missing table is an error naming the asset to materialize."""
    if not table_exists(conn, table):
        raise LookupError(f"table {table!r} does not exist in the warehouse: materialize asset {table!r} first")
    cols = ", ".join(ident(c) for c in columns) if columns else "*"
    cond = " AND ".join(f"{ident(c)} = ?" for c in where) or "TRUE"
    order = f" ORDER BY {', '.join(ident(c) for c in order_by)}" if order_by else ""
    return conn.execute(f"SELECT {cols} FROM {ident(table)} WHERE {cond}{order}", list(where.values())).df()


def read_recipe_tokens(
    conn: duckdb.DuckDBPyConnection, table: str, cohort: str, tokens_asset: str, **kw
) -> pd.DataFrame:
    """Rows of a ``recipe_*`` table (keyed by cohort and tokens asset); none is an error naming the asset to run."""
    try:
        df = read_partition(conn, table, {"cohort": cohort, "tokens_asset": tokens_asset}, **kw)
    except LookupError:
        df = pd.DataFrame()
    if df.empty:
        raise LookupError(f"{table} has no rows for cohort {cohort!r}: materialize asset {tokens_asset!r} first")
    return df


def read_training_tables(
    conn: duckdb.DuckDBPyConnection, cohort: str, tokens_asset: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(token sequences, node contexts) of a cohort, every split, as training reads them: ``token_sequences`` and
    ``node_contexts`` for the shared tokenization (``tokens_asset`` None), else ``recipe_token_sequences`` and
    ``recipe_node_contexts`` of that ``<root>_tokens`` asset. Sequences carry subject_id, split, input_ids; contexts
    are ordered by subject and prediction time."""
    seq_cols = ["subject_id", "split", "input_ids"]
    order = ["subject_id", "prediction_time"]
    if tokens_asset is None:
        seq = read_partition(conn, "token_sequences", {"cohort": cohort}, columns=seq_cols)
        ctx = read_partition(conn, "node_contexts", {"cohort": cohort}, order_by=order)
        return seq, ctx
    seq = read_recipe_tokens(conn, "recipe_token_sequences", cohort, tokens_asset, columns=seq_cols)
    ctx = read_recipe_tokens(
        conn,
        "recipe_node_contexts",
        cohort,
        tokens_asset,
        columns=["subject_id", "split", "context_ids", "future_start", "n_header_tokens"],
        order_by=order,
    )
    return seq, ctx


# ------------------------------------------------------------------------------------------------ the single writer
class _Held:
    """This process's hold on one lock file: threads take turns (``turn``), nested holds of one thread count."""

    def __init__(self):
        self.turn = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


def lock_path(database: str | Path) -> Path | None:
    """``<database>.lock``; None for an in-memory database (nothing to share)."""
    name = str(database)
    return None if name in ("", ":memory:") or name.startswith(("md:", "motherduck:")) else Path(name + ".lock")


def _holder(path: Path) -> str:
    """What a lock file says about its holder (``pid 123 on host``), '?' when unknown."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def warehouse_lock(database: str | Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the warehouse's single-writer lock (exclusive ``flock`` on ``<database>.lock``) for the body.

    Re-entrant within a thread (a helper that opens a connection inside another connection's block), taken in turn
    by the threads of one process, waited for across processes. ``on_wait`` is told once, with the holder, when the
    lock is busy. No Dagster: the training CLI and the report commands take it too."""
    path = lock_path(database)
    if path is None:
        yield
        return
    with _HELD_GUARD:
        held = _HELD.setdefault(str(path.resolve()), _Held())
    with held.turn:
        if held.depth == 0:
            held.fd = _acquire(path, on_wait)
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                fd, held.fd = held.fd, None
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def _acquire(path: Path, on_wait) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            t0 = time.perf_counter()
            if on_wait is not None:
                on_wait(f"waiting for the warehouse lock {path} (held by {_holder(path)})")
            fcntl.flock(fd, fcntl.LOCK_EX)
            if on_wait is not None:
                on_wait(f"got the warehouse lock after {time.perf_counter() - t0:.1f} s")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def connect(database: str | Path, read_only: bool = False, **kw) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection to the warehouse, holding :func:`warehouse_lock` while it is open (closed before the lock
    is released, also when the body raises)."""
    with warehouse_lock(database):
        conn = duckdb.connect(str(database), read_only=read_only, **kw)
        try:
            yield conn
        finally:
            conn.close()


# ----------------------------------------------------------------------------------------------------- default paths
def default_home(project_dir: Path | None = None) -> Path:
    """$DAGSTER_HOME if set, else ``<project>/dagster_home``."""
    from .specs import default_project_dir

    env = os.environ.get("DAGSTER_HOME")
    return Path(env).resolve() if env else Path(project_dir or default_project_dir()) / "dagster_home"


def default_warehouse(project_dir: Path | None = None) -> Path:
    """$EHR_WAREHOUSE, else ``<home>/warehouse.duckdb``."""
    env = os.environ.get("EHR_WAREHOUSE")
    return Path(env) if env else default_home(project_dir) / "warehouse.duckdb"


def default_artifact_root(project_dir: Path | None = None) -> Path:
    """$EHR_ARTIFACT_ROOT, else ``<home>/artifacts``."""
    env = os.environ.get("EHR_ARTIFACT_ROOT")
    return Path(env) if env else default_home(project_dir) / "artifacts"


# ------------------------------------------------------------------------------------------------------- artifacts
def resume_dir(root: str | Path, asset: str, partition: str) -> Path:
    """Where a training asset keeps step checkpoints between attempts: ``<root>/.resume/<asset>/<partition>/``."""
    ident(asset)
    ident(partition)
    return Path(root) / ".resume" / asset / partition


def artifact_dir(root: str | Path, asset: str, partition: str) -> Path:
    ident(asset)
    ident(partition)
    return Path(root) / asset / partition


def sweep_dead_writers(final: Path) -> list[Path]:
    """Remove the temporary folders (``.<name>.tmp-<host>-<pid>-<id>``, ``.<name>.old-...``) that a writer of
    ``final`` killed mid-write left beside it: only those of this host whose process is gone (a live writer, or one
    on another host sharing the folder, is left alone). Returns what it removed."""
    host = socket.gethostname()
    removed = []
    for kind in ("tmp", "old"):
        for p in final.parent.glob(f".{final.name}.{kind}-*"):
            rest = p.name[len(f".{final.name}.{kind}-") :]
            who, _, _ = rest.rpartition("-")
            h, _, pid = who.rpartition("-")
            if h != host or not pid.isdigit() or pid_alive(int(pid)):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; on success, replace ``final`` with it.

    On failure the temporary folder is removed and the previous ``final`` (if any) is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_writers(final)
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = final.parent / f".{final.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{tag}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
