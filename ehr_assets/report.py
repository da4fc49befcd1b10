"""``python -m ehr_assets.report --format table|csv|wide|gap``: print the latest probe metrics (README), forwarding
to :mod:`ehr_assets.eval.report`, where the formats are documented."""

import sys

from .eval.report import main

if __name__ == "__main__":
    sys.exit(main())
