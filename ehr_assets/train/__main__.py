"""``python -m ehr_assets.train``: the training CLI (:mod:`ehr_assets.train.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
