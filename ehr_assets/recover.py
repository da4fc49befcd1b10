"""``python -m ehr_assets.recover``: forwards to :mod:`ehr_assets.defs.recovery` (runs whose process died: marked
failed, their pool slots freed)."""

import sys

from .defs.recovery import main

if __name__ == "__main__":
    sys.exit(main())
