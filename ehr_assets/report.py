"""``python -m ehr_assets.report --format summary|table|csv|wide|gap|...``: print the latest probe metrics
(docs/how-to/commands.md), forwarding to :mod:`ehr_assets.eval.report`, where the formats are documented."""

import sys

from .eval.report import main

if __name__ == "__main__":
    sys.exit(main())
