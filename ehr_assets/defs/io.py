"""Reading and writing one cohort partition: warehouse tables through the ``warehouse`` resource, embeddings files
under the artifact store. Writes replace exactly one partition in one transaction (:mod:`ehr_assets.warehouse`)."""

import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource

from ..warehouse import atomic_dir, ident, read_partition, read_recipe_tokens, replace_partition, table_exists

# The data-preparation steps (cohort, sequences, ACES: mostly warehouse reads and writes) run one at a time in the
# pool "duckdb" (dagster.yaml); the one-writer rule itself is the lock every connection holds (Warehouse resource),
# so training, embeddings, probes, the benchmark and the reports compute outside any pool and overlap.
POOL = "duckdb"


def tag_partition(df: pd.DataFrame, cohort: str, **extra) -> pd.DataFrame:
    """``df`` with the partition columns first (``cohort``, then ``extra``), as the warehouse tables store it."""
    df = df.copy()
    df.insert(0, "cohort", cohort)
    for k, v in extra.items():
        df.insert(1, k, v)
    return df


def read_table(warehouse: DuckDBResource, table: str, cohort: str, **kw) -> pd.DataFrame:
    """The rows of ``table`` for ``cohort`` (``columns=``, ``order_by=`` as :func:`warehouse.read_partition`)."""
    with warehouse.get_connection() as conn:
        return read_partition(conn, table, {"cohort": cohort}, **kw)


def read_table_or_none(warehouse: DuckDBResource, table: str, cohort: str, **kw) -> pd.DataFrame | None:
    """Like :func:`read_table`, but None when the table does not exist or holds no rows for ``cohort``."""
    with warehouse.get_connection() as conn:
        if not table_exists(conn, table):
            return None
        df = read_partition(conn, table, {"cohort": cohort}, **kw)
    return df if len(df) else None


def read_tokens_table(warehouse: DuckDBResource, table: str, cohort: str, tokens_asset: str, **kw) -> pd.DataFrame:
    """Rows of a ``recipe_*`` table of one ``<root>_tokens`` asset (see :func:`warehouse.read_recipe_tokens`)."""
    with warehouse.get_connection() as conn:
        return read_recipe_tokens(conn, table, cohort, tokens_asset, **kw)


def write_table(warehouse: DuckDBResource, table: str, cohort: str, df: pd.DataFrame, **extra) -> int:
    """Replace ``cohort``'s partition of ``table`` (and ``extra`` partition columns) by ``df``; returns rows."""
    with warehouse.get_connection() as conn:
        return replace_partition(conn, table, tag_partition(df, cohort, **extra), {"cohort": cohort, **extra})


def clear_rows(warehouse: DuckDBResource, table: str, where: dict) -> None:
    """Delete the rows of ``table`` matching ``where`` if the table exists (a partition that now has no rows)."""
    with warehouse.get_connection() as conn:
        if table_exists(conn, table):
            cond = " AND ".join(f"{ident(c)} = ?" for c in where)
            conn.execute(f"DELETE FROM {ident(table)} WHERE {cond}", list(where.values()))


def missing_metrics(warehouse: DuckDBResource, cohorts: list[str], recipes: list[str]) -> dict[str, list[str]]:
    """``{cohort: [recipe, ...]}`` of the (cohort, recipe) pairs with no row in ``probe_metrics`` yet (every pair when
    the table does not exist); empty when every recipe has metrics in every cohort."""
    with warehouse.get_connection() as conn:
        have = set()
        if table_exists(conn, "probe_metrics"):
            have = set(map(tuple, conn.execute("SELECT DISTINCT cohort, recipe FROM probe_metrics").fetchall()))
    out = {c: [r for r in recipes if (c, r) not in have] for c in cohorts}
    return {c: rs for c, rs in out.items() if rs}


def describe_missing(missing: dict[str, list[str]], recipes: list[str]) -> str:
    """``combined (all), msk (sft, jepa)``: what :func:`missing_metrics` found, in one line."""
    return ", ".join(f"{c} ({'all' if len(rs) == len(recipes) else ', '.join(rs)})" for c, rs in missing.items())


def save_embeddings(dest, emb: np.ndarray, index: pd.DataFrame) -> None:
    """``dest/embeddings.safetensors`` (float32 [nodes, dim]) and ``dest/index.parquet`` (one row per node),
    written atomically."""
    from safetensors.numpy import save_file

    with atomic_dir(dest) as tmp:
        save_file({"embeddings": np.ascontiguousarray(emb, dtype=np.float32)}, str(tmp / "embeddings.safetensors"))
        index.to_parquet(tmp / "index.parquet", index=False)


def load_embeddings(folder) -> tuple[np.ndarray, pd.DataFrame]:
    """The embeddings and node index written by :func:`save_embeddings`."""
    from safetensors.numpy import load_file

    emb = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
    index = pd.read_parquet(folder / "index.parquet")
    index["prediction_time"] = index["prediction_time"].astype("datetime64[us]")
    return emb, index
