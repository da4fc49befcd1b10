"""A throwaway project for the data-shape tests: cohorts declared as YAML over fixture datasets, materialized with
``dg.materialize`` in a real Dagster instance into a real DuckDB file (each :class:`ShapeProject` its own)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import yaml

from ehr_assets.definitions import build_definitions

DATA_ASSETS = ("cohort_events", "cohort_table", "subjects", "decision_nodes", "task_labels")


class ShapeProject:
    """``cohorts``: name -> cohort YAML; ``probes``: name -> probe YAML; ``smb_v1``: declare a recipe that reads
    the SMB-v1 text, so that the ``smb_v1_text`` asset exists."""

    def __init__(
        self, root: Path, cohorts: dict[str, dict], probes: dict[str, dict], smb_v1: bool = False, instance=None
    ):
        self.root = Path(root)
        self.instance = instance  # a Dagster instance shared by this project's runs (else one per run)
        for d in ("cohorts", "models", "probes"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for name, spec in cohorts.items():
            (self.root / "cohorts" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        for name, spec in probes.items():
            (self.root / "probes" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        if smb_v1:
            # a frozen released model: only its text and token assets are ever materialized here (no folder needed)
            recipe = {"objective": "frozen", "format": "smb_v1", "backbone": {"architecture": "qwen3", "path": "none"}}
            (self.root / "models" / "smb.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        self.db = self.root / "warehouse.duckdb"

    def materialize(self, partition: str, assets=DATA_ASSETS, *, db: Path | None = None):
        """Materialize ``assets`` (and their checks) of one partition; returns the result (never raises)."""
        defs = build_definitions(self.root, warehouse_path=db or self.db, artifact_root=self.root / "artifacts")
        everything = [*defs.assets, *defs.asset_checks]
        selection = dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks_for_assets(*assets)
        kw = {"partition_key": partition, "selection": selection, "raise_on_error": False}
        if self.instance is not None:
            return dg.materialize(everything, instance=self.instance, resources=defs.resources, **kw)
        with dg.instance_for_test() as inst:
            return dg.materialize(everything, instance=inst, resources=defs.resources, **kw)

    def table(self, name: str, cohort: str, db: Path | None = None) -> pd.DataFrame:
        with duckdb.connect(str(db or self.db), read_only=True) as c:
            return c.execute(f'SELECT * FROM "{name}" WHERE cohort = ?', [cohort]).df()

    def types(self, name: str, db: Path | None = None) -> dict[str, str]:
        with duckdb.connect(str(db or self.db), read_only=True) as c:
            return {r[0]: r[1] for r in c.execute(f'DESCRIBE "{name}"').fetchall()}


def step_error(result) -> str:
    """The messages of the first failed step of a run and of the errors that caused it (for tests of refusals)."""
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            err, out = ev.event_specific_data.error, []
            while err is not None:
                out.append(err.message)
                err = err.cause
            return "\n".join(out)
    return ""


def report(result, member: str) -> dict:
    """The ``source[<member>]`` report of the run's ``cohort_events`` materialization."""
    meta = result.asset_materializations_for_node("cohort_events")[0].metadata
    return meta[f"source[{member}]"].value
