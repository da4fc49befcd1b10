"""Dagster resources besides the warehouse (dagster-duckdb's ``DuckDBResource``): the artifact store and the trainer."""

import sys
import tempfile
from pathlib import Path

import dagster as dg

from ..warehouse import artifact_dir


class ArtifactStore(dg.ConfigurableResource):
    """Folder root for large artifacts: ``<root>/<asset>/<partition>/``."""

    root: str

    def path(self, asset: str, partition: str) -> Path:
        return artifact_dir(self.root, asset, partition)


class Trainer(dg.ConfigurableResource):
    """Where ``<recipe>_checkpoint`` assets train.

    ``in_process`` (default): in the step's own process. ``subprocess``: ``command`` (default ``python -m
    ehr_assets.training``; e.g. ``["accelerate", "launch", "--num_processes", "8", "-m", "ehr_assets.training"]``) is
    launched through Dagster Pipes with a training-data bundle, so training can move to a GPU node (or a cluster
    launcher) while logs stream back into the run. Either way a killed attempt resumes from its last step checkpoint.
    """

    launcher: str = "in_process"
    command: list[str] = []
    env: dict[str, str] = {}

    def model_post_init(self, __context) -> None:
        if self.launcher not in ("in_process", "subprocess"):
            raise ValueError(f"trainer.launcher must be 'in_process' or 'subprocess', got {self.launcher!r}")

    def run_subprocess(
        self,
        context,
        project_root: Path,
        recipe: str,
        data,
        tokenizer_dir: Path,
        init_dir: Path | None,
        dest: Path,
        rdir: Path,
    ) -> None:
        cmd = list(self.command) or [sys.executable, "-m", "ehr_assets.training"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.data-", dir=dest.parent) as bundle:
            data.save(Path(bundle))
            # the recipe by name in its project, so relative paths (backbones) resolve as the asset resolved them
            cmd += [
                "--recipe",
                recipe,
                "--project",
                str(project_root),
                "--data",
                bundle,
                "--tokenizer",
                str(tokenizer_dir),
                "--out",
                str(dest),
                "--resume-dir",
                str(rdir),
            ]
            if init_dir is not None:
                cmd += ["--init-dir", str(init_dir)]
            dg.PipesSubprocessClient(env=dict(self.env)).run(command=cmd, context=context).get_results()
        if not (dest / "train_log.json").is_file():
            raise RuntimeError(f"training subprocess exited without writing {dest}")
