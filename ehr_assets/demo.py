"""Materialize every asset for every cohort partition on the persistent instance, then print the metrics.

    DAGSTER_HOME=$PWD/dagster_home python -m ehr_assets.demo [--partitions msk,inspect]

Runs are recorded in the instance, so they show in the UI (`dagster dev`) afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time

import dagster as dg

from .definitions import PIPELINE_JOB, REPORT_JOB, defs
from .report import default_warehouse, format_table, load_metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.demo")
    ap.add_argument("--partitions", help="comma-separated cohort keys (default: all)")
    args = ap.parse_args(argv)
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(PIPELINE_JOB)
    keys = args.partitions.split(",") if args.partitions else job.partitions_def.get_partition_keys()
    t_all = time.perf_counter()
    for key in keys:
        t0 = time.perf_counter()
        print(f"[demo] materializing partition {key!r} ...", flush=True)
        res = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
        status = "ok" if res.success else "FAILED"
        print(f"[demo] partition {key!r}: {status} in {time.perf_counter() - t0:.0f} s (run {res.run_id})", flush=True)
        if not res.success:
            return 1
    try:
        report_job = defs.resolve_job_def(REPORT_JOB)
    except Exception:
        report_job = None
    if report_job is not None and not args.partitions:
        res = report_job.execute_in_process(instance=instance, raise_on_error=False)
        if not res.success:
            print("[demo] cross_disease_report FAILED", flush=True)
            return 1
    print(f"[demo] all runs done in {time.perf_counter() - t_all:.0f} s\n")
    print(format_table(load_metrics(default_warehouse())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
