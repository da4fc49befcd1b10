"""``python -m ehr_assets.training``: the training command (docs/how-to/scaling-out.md), forwarding to
:mod:`ehr_assets.train.cli` (``python -m ehr_assets.train`` is the same command). The training code lives in
:mod:`ehr_assets.model` and :mod:`ehr_assets.train`."""

import sys

from .train.cli import main

if __name__ == "__main__":
    sys.exit(main())
