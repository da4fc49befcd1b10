"""Dagster resources besides the warehouse (dagster-duckdb's ``DuckDBResource``): the artifact store, the trainer and
the compute limits every step applies."""

import sys
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from ..threads import ThreadPolicy, apply, orchestrator_steps, resolve
from ..warehouse import artifact_dir


class Compute(dg.ConfigurableResource):
    """The thread policy of every step (:mod:`ehr_assets.threads`): torch, BLAS / OpenMP and tokenizers get
    ``threads`` threads in the step's process and the processes it starts (a subprocess trainer).

    Default: ``EHR_THREADS`` if set, else the usable cores divided by ``concurrent_steps`` (default
    ``EHR_CONCURRENT_STEPS``, else one step per usable core: the multiprocess executor's ``max_concurrent``, set by
    :mod:`.definitions` from the same function), so the steps that may run at once never ask for more threads than
    there are cores. Run config overrides both, e.g. for one big step alone:
    ``resources: {compute: {config: {threads: 8}}}``.
    """

    threads: int = Field(default=0, ge=0, description="threads per step; 0: the policy (EHR_THREADS or cores / steps)")
    concurrent_steps: int = Field(
        default=0, ge=0, description="steps that may run at once; 0: EHR_CONCURRENT_STEPS or the executor's limit"
    )
    _restore = PrivateAttr(default=None)

    def policy(self) -> ThreadPolicy:
        return resolve(self.threads or None, self.concurrent_steps or None, default_concurrent=orchestrator_steps())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        policy = self.policy()
        self._restore = apply(policy)
        if context.log is not None:
            context.log.info(f"threads: {policy.describe()}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._restore is not None:  # the in-process executor: the caller's process gets its limits back
            self._restore()
            self._restore = None


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
