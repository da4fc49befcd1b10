"""Print the latest probe metrics from the warehouse: ``python -m ehr_assets.report --format table|csv|wide|gap``.

The command's entry point, forwarding to :mod:`ehr_assets.eval.report` (where the formats are documented).
Compatibility shim for the other names: moved to :mod:`ehr_assets.eval.report`; removed once the Dagster layer
imports the new modules.
"""

import sys

from .eval.report import COLUMNS, format_table, gap_report, load_metrics, main, wide_table

__all__ = ["COLUMNS", "format_table", "gap_report", "load_metrics", "main", "wide_table"]

if __name__ == "__main__":
    sys.exit(main())
