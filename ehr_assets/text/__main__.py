"""The serialize command: print one subject's serialized timeline, in either format (what a model reads)::

    python -m ehr_assets.serialize --format smb_v1|delimited --meds-parquet FILE --subject ID [--end-time T]
        [--bins START:END,...] [--tokenizer FOLDER]

(``python -m ehr_assets.text`` is the same command.) The input is MEDS events with optional ``table`` and ``unit``
columns, a parquet file or a folder of shards; rows without a time are placed at birth, as the pipeline does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..data.sources import place_static_rows
from .delimited import value_bin_edges
from .sequence_tables import serialize_subject
from .smb_v1 import smb_v1_text
from .tokenizers import load_tokenizer

FORMATS = ("smb_v1", "delimited")


def _read_events(path: Path) -> pd.DataFrame:
    """The MEDS events of a parquet file or a folder of shards, static rows placed at birth."""
    if path.is_dir():
        files = sorted(path.glob("**/*.parquet"))
        if not files:
            raise SystemExit(f"{path}: no parquet files")
    elif path.is_file():
        files = [path]
    else:
        raise SystemExit(f"{path}: no such file")
    frames = [pq.read_table(f).to_pandas() for f in files]
    df = pd.concat(frames, ignore_index=True)
    missing = [c for c in ("subject_id", "time", "code") if c not in df.columns]
    if missing:
        raise SystemExit(f"{path}: missing MEDS column(s) {missing}")
    df["time"] = pd.to_datetime(df["time"])
    return place_static_rows(df)[0]  # static rows sit at birth, as in the pipeline (data.sources.read_meds)


def subject_text(
    events: pd.DataFrame, fmt: str, subject: str, *, end_time=None, time_bins=None, tokenizer_dir: Path | None = None
) -> str:
    """The text of one subject of a MEDS events frame, in ``fmt``; ``subject`` matches subject_id or patient_id."""
    if "patient_id" in events.columns and (events["patient_id"].astype(str) == subject).any():
        ev = events[events["patient_id"].astype(str) == subject]
    else:
        try:
            sid = int(subject)
        except ValueError:
            raise SystemExit(f"subject {subject!r} not found (subject_id is an integer)") from None
        ev = events[events["subject_id"] == sid]
    if ev.empty:
        raise SystemExit(f"subject {subject!r} not found")
    if fmt == "smb_v1":
        return smb_v1_text(ev, end_time=end_time, time_bins=time_bins)
    if end_time is not None:
        ev = ev[ev["time"] <= pd.Timestamp(end_time)]
    defaults = {"numeric_value": np.nan, "text_value": None, "table": None}
    ev = ev.assign(**{c: v for c, v in defaults.items() if c not in ev.columns}).sort_values("time", kind="stable")
    if tokenizer_dir is not None:
        _, edges = load_tokenizer(tokenizer_dir)
    else:
        allv = events.assign(**{c: v for c, v in defaults.items() if c not in events.columns})
        edges = value_bin_edges(allv)
    node = None  # at a decision node, the block that ends the context carries the age at the node
    if end_time is not None:
        node = pd.DataFrame({"subject_id": ev["subject_id"].iloc[:1], "prediction_time": [pd.Timestamp(end_time)]})
    return serialize_subject(ev, edges, node).text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ehr_assets.serialize",
        description="Print one subject's serialized timeline (what a model reads).",
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument(
        "--meds-parquet",
        type=Path,
        required=True,
        help="MEDS events (a parquet file or a folder of shards) with optional table/unit columns",
    )
    p.add_argument("--subject", required=True, help="subject_id (or a patient_id column's value)")
    p.add_argument("--end-time", default=None, help="keep events at or before this time (a decision node)")
    p.add_argument(
        "--bins",
        default=None,
        help="smb_v1 binned mode with --end-time: 'START:END,...' days back, most recent first, e.g. '365:0,3650:365'",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="delimited: a fitted tokenizer folder (value bins); default: bins fitted on the given file",
    )
    args = p.parse_args(argv)
    bins = None
    if args.bins:
        if args.format != "smb_v1" or args.end_time is None:
            p.error("--bins needs --format smb_v1 and --end-time")
        try:
            bins = [tuple(int(x) for x in b.split(":")) for b in args.bins.split(",")]
        except ValueError:
            p.error(f"--bins: expected START:END pairs, got {args.bins!r}")
    events = _read_events(args.meds_parquet)
    text = subject_text(
        events, args.format, args.subject, end_time=args.end_time, time_bins=bins, tokenizer_dir=args.tokenizer
    )
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
