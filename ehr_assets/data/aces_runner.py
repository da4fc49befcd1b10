"""Run one ACES task config on one MEDS data file, in ACES's own environment (run by path, ``python -I``).

    python -I aces_runner.py --config TASK.yaml [--predicates P.yaml] --events EVENTS.parquet --out LABELS.parquet

Why a separate process: ``es-aces`` needs ``hydra-core`` / ``omegaconf``, which pin ``antlr4-python3-runtime`` to
4.9, while Dagster 1.13 parses asset selections with a grammar generated for antlr 4.13; one environment cannot hold
both (with 4.9 ``dagster asset materialize --select`` fails, with 4.13 ``import omegaconf`` does). So ACES lives in
its own environment (``make aces``: ``.venv-aces``) and this file imports nothing of ``ehr_assets``: only ACES and
what ACES itself depends on (polars, pyarrow).

Steps, all ACES's own: ``TaskExtractorConfig.load``; rows whose code matches one of the config's static
(``patient_demographics``) predicates get a null time, as MEDS ships static rows (``PlainPredicateConfig.
MEDS_eval_expr``); ``predicates.get_predicates_df`` (standard ``meds``); ``query.query``; the label conversion of
ACES's command line (``subject_id``; ``index_timestamp`` -> ``prediction_time``; ``label`` -> ``boolean_value``;
``run.get_and_validate_label_schema``). Added columns: ``label_window_start`` (the label window's start boundary)
and ``label_window_start_inclusive``, for the leakage check. Exit status 3 with a message on stderr when ACES cannot
use the config.
"""

import argparse
import logging
import sys
import tempfile
from pathlib import Path


def load(config: str, predicates: str | None):
    from aces.config import TaskExtractorConfig

    try:
        cfg = TaskExtractorConfig.load(config_path=Path(config), predicates_path=predicates)
    except Exception as e:  # ACES raises ValueError, KeyError, FileNotFoundError ... for a bad config
        raise SystemExit(f"ACES cannot load {config}: {type(e).__name__}: {e}") from None
    missing = [k for k, v in (("label", cfg.label_window), ("index_timestamp", cfg.index_timestamp_window)) if not v]
    if missing:
        raise SystemExit(
            f"{config} declares no window with {' or '.join(missing)}; a probe needs a label and a prediction time "
            "(index_timestamp) per row"
        )
    return cfg


def static_rows_unplaced(events, cfg):
    """Rows of the config's static predicates with a null time, as in a MEDS shard."""
    import polars as pl

    static = [p for p in cfg.plain_predicates.values() if p.static]
    if not static:
        return events
    is_static = pl.any_horizontal([p.MEDS_eval_expr() for p in static])
    return events.with_columns(pl.when(is_static).then(None).otherwise(pl.col("time")).alias("time"))


def extract(cfg, events_path: Path):
    """ACES's query result as MEDS labels, plus the label window's start."""
    import polars as pl
    from aces import predicates, query
    from aces.run import get_and_validate_label_schema
    from omegaconf import DictConfig

    events = pl.read_parquet(events_path).with_columns(
        pl.col("numeric_value").cast(pl.Float32), pl.col("time").cast(pl.Datetime("us"))
    )
    with tempfile.TemporaryDirectory(prefix="aces-") as tmp:
        path = Path(tmp) / "data.parquet"
        static_rows_unplaced(events, cfg).write_parquet(path)
        pred = predicates.get_predicates_df(cfg, DictConfig({"path": str(path), "standard": "meds"}))
        result = query.query(cfg, pred)
    window = cfg.windows[cfg.label_window]
    schema = {"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"), "boolean_value": pl.Boolean}
    if result.is_empty():
        out = pl.DataFrame(schema=schema).with_columns(pl.lit(None, pl.Datetime("us")).alias("label_window_start"))
    else:
        side = "end" if window.root_node == "start" else "start"
        start = pl.col(f"{cfg.label_window}.{side}_summary").struct.field("timestamp_at_start")
        labels = get_and_validate_label_schema(
            result.select("subject_id", "index_timestamp", "label").rename(
                {"index_timestamp": "prediction_time", "label": "boolean_value"}
            )
        )
        out = (
            pl.from_arrow(labels)
            .select(list(schema))
            .with_columns(result.select(start.cast(pl.Datetime("us")).alias("label_window_start")).to_series())
        )
    return out.with_columns(pl.lit(bool(window.start_inclusive)).alias("label_window_start_inclusive"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--predicates")
    ap.add_argument("--events", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # ACES logs every step at INFO
    try:
        cfg = load(args.config, args.predicates)
    except SystemExit as e:
        print(str(e), file=sys.stderr)
        return 3
    extract(cfg, args.events).write_parquet(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
