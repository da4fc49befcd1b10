"""Reference: decision-node contexts and their leakage check before the vectorized rewrite (a search per node in
Python), verbatim apart from imports. ``tests/text/test_contexts.py`` proves the new code gives the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd


def node_contexts(sequences: pd.DataFrame, nodes: pd.DataFrame) -> pd.DataFrame:
    """For each decision node: the token index ending its context (all blocks with time <= prediction_time) and the
    time of the last block inside it. ``context_end`` tokens ``ids[:context_end]`` are what a model may read."""
    seq = sequences.set_index("subject_id")
    ends, last_times, n_tokens = [], [], []
    for sid, pt in zip(nodes["subject_id"].to_numpy(), nodes["prediction_time"].to_numpy()):
        bt = np.asarray(seq.at[sid, "block_times"], dtype="datetime64[us]")
        be = seq.at[sid, "block_ends"]
        k = int(np.searchsorted(bt, pt, side="right"))  # blocks [0, k) are at or before pt
        k = max(k, 1)  # the demographics block is always context
        ends.append(int(be[k - 1]))
        last_times.append(bt[k - 1])
        n_tokens.append(int(seq.at[sid, "n_tokens"]))
    out = nodes[["subject_id", "prediction_time", "split", "source_cohort"]].copy()
    out["context_end"] = np.asarray(ends, dtype=np.int64)
    out["context_last_time"] = np.asarray(last_times, dtype="datetime64[us]")
    out["n_tokens"] = np.asarray(n_tokens, dtype=np.int64)
    return out.reset_index(drop=True)


def context_violations(contexts: pd.DataFrame, sequences: pd.DataFrame) -> pd.DataFrame:
    """Rows whose context reads data after the prediction time: the recorded last context time is later than the
    prediction time, or a block that ends inside the context (from the stored token blocks) is later."""
    seq = sequences.set_index("subject_id")
    bad = []
    for i, (sid, pt, ce, lt) in enumerate(
        zip(contexts["subject_id"], contexts["prediction_time"], contexts["context_end"], contexts["context_last_time"])
    ):
        pt = np.datetime64(pt, "us")
        bt = np.asarray(seq.at[sid, "block_times"], dtype="datetime64[us]")
        be = np.asarray(seq.at[sid, "block_ends"])
        inside = np.searchsorted(be, ce, side="left")  # blocks whose start lies before context_end are read
        read_times = bt[: min(inside + 1, len(bt))]
        if np.datetime64(lt, "us") > pt or bool((read_times > pt).any()):
            bad.append(i)
    return contexts.iloc[bad]
