"""The embedded warehouse (DuckDB) and the artifact store (folders), with atomic writes.

Tables: one per asset, each with a ``cohort`` partition column. :func:`replace_partition` swaps exactly one partition
in one transaction, so a failed materialization leaves the previous one readable. Identifiers are validated and
values always go through bound parameters.

Artifacts: ``<root>/<asset>/<partition>/``. :func:`atomic_dir` yields a temporary sibling folder and renames it into
place only when the body succeeds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pandas as pd

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

    The table is created from ``df``'s schema on first write; ``df`` must carry the ``where`` columns with those
    values. Returns the number of rows written.
    """
    return replace_partitions(conn, [(table, df, where)])[0]


def replace_partitions(
    conn: duckdb.DuckDBPyConnection, writes: Sequence[tuple[str, pd.DataFrame, dict[str, object]]]
) -> list[int]:
    """Several :func:`replace_partition` writes (table, frame, partition) in ONE transaction: all land or none."""
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
            cols = ", ".join(ident(c) for c in df.columns)
            conn.register(name, df)
            if not table_exists(conn, table):
                conn.execute(f"CREATE TABLE {ident(table)} AS SELECT {cols} FROM {name} LIMIT 0")
            else:
                _add_missing_columns(conn, table, df, name)
            cond = " AND ".join(f"{ident(c)} = ?" for c in where)
            conn.execute(f"DELETE FROM {ident(table)} WHERE {cond}", list(where.values()))
            conn.execute(f"INSERT INTO {ident(table)} ({cols}) SELECT {cols} FROM {name}")
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


def _add_missing_columns(
    conn: duckdb.DuckDBPyConnection, table: str, df: pd.DataFrame, incoming: str = "__incoming"
) -> None:
    existing = {r[0] for r in conn.execute(f"DESCRIBE {ident(table)}").fetchall()}
    missing = [c for c in df.columns if c not in existing]
    if missing:
        types = {r[0]: r[1] for r in conn.execute(f"DESCRIBE SELECT * FROM {incoming}").fetchall()}
        for c in missing:
            conn.execute(f"ALTER TABLE {ident(table)} ADD COLUMN {ident(c)} {types[c]}")


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


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; on success, replace ``final`` with it.

    On failure the temporary folder is removed and the previous ``final`` (if any) is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
