"""Dagster resources: the warehouse (dagster-duckdb's ``DuckDBResource`` holding the single-writer lock while a
connection is open), the artifact store, the trainer and the compute limits every step applies."""

import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

from ..threads import ThreadPolicy, apply, orchestrator_steps, resolve
from ..warehouse import artifact_dir, warehouse_lock


class Warehouse(DuckDBResource):
    """The DuckDB warehouse; each connection holds :func:`ehr_assets.warehouse.warehouse_lock` while it is open.

    DuckDB lets one process at a time open the file, so the lock (not a Dagster pool around the whole step) keeps
    one writer: a step computes holding nothing and queues only for its reads and writes, whichever run it belongs
    to. A step that waits says so at INFO, naming the holder."""

    @contextmanager
    def get_connection(self):
        with warehouse_lock(self.database, on_wait=dg.get_dagster_logger().info):
            with super().get_connection() as conn:
                try:
                    yield conn
                finally:  # closed before the lock is released, also when the body raises
                    conn.close()


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


class K8sLaunch(dg.Config):
    """Settings of ``trainer.launcher: k8s`` (:mod:`ehr_assets.defs.k8s`); the pod's resources come from the
    recipe's ``compute:`` block."""

    image: str | None = None  # used when the recipe declares no compute.image
    namespace: str | None = None  # default: the current namespace inside a cluster, else "default"
    artifact_claim: str | None = None  # PersistentVolumeClaim holding the artifact root, mounted at the same path
    project_dir: str | None = None  # the project folder inside the image (default: the same path as here)
    service_account: str | None = None
    kubeconfig_file: str | None = None
    kube_context: str | None = None
    load_incluster_config: bool | None = None  # None: in-cluster when KUBERNETES_SERVICE_HOST is set
    poll_interval_s: float = 10.0
    pod_wait_timeout_s: float = 86400.0


def training_args(project_dir, recipe: str, bundle, tokenizer_dir, dest, rdir, init_dir) -> list[str]:
    """The training CLI's arguments for one launch: the recipe by name in its project (so relative paths, e.g.
    backbones, resolve as the asset resolved them), the data bundle and every folder."""
    args = ["--recipe", recipe, "--project", str(project_dir), "--data", str(bundle), "--tokenizer", str(tokenizer_dir)]
    args += ["--out", str(dest), "--resume-dir", str(rdir)]
    return args + (["--init-dir", str(init_dir)] if init_dir is not None else [])


class Trainer(dg.ConfigurableResource):
    """Where ``<recipe>_checkpoint`` assets train.

    ``in_process`` (default): in the step's own process. ``subprocess``: ``command`` (default ``python -m
    ehr_assets.training``; e.g. ``["accelerate", "launch", "--num_processes", "8", "-m", "ehr_assets.training"]``) is
    launched through Dagster Pipes with a training-data bundle, so training can move to a GPU node (or a cluster
    launcher) while logs stream back into the run. ``k8s``: the same command in a Kubernetes pod sized by the
    recipe's ``compute:`` block, through ``dagster-k8s``'s Pipes client (settings in ``k8s``). Either way a killed
    attempt resumes from its last step checkpoint.
    """

    launcher: str = "in_process"
    command: list[str] = []
    env: dict[str, str] = {}
    k8s: K8sLaunch = K8sLaunch()

    def model_post_init(self, __context) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"trainer.launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")

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
            cmd += training_args(project_root, recipe, bundle, tokenizer_dir, dest, rdir, init_dir)
            dg.PipesSubprocessClient(env=dict(self.env)).run(command=cmd, context=context).get_results()
        if not (dest / "train_log.json").is_file():
            raise RuntimeError(f"training subprocess exited without writing {dest}")

    def run_k8s(self, context, project_root: Path, recipe, data, tokenizer_dir, init_dir, dest: Path, rdir, root):
        """Like :meth:`run_subprocess`, in a pod (:func:`ehr_assets.defs.k8s.launch_training_pod`); ``root`` is the
        artifact root the pod mounts, ``recipe`` the :class:`RecipeSpec`."""
        from .k8s import launch_training_pod, training_command

        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.data-", dir=dest.parent) as bundle:
            data.save(Path(bundle))
            project_dir = self.k8s.project_dir or project_root
            args = training_args(project_dir, recipe.name, bundle, tokenizer_dir, dest, rdir, init_dir)
            cmd = training_command(recipe, self.command) + args
            launch_training_pod(context, self.k8s, recipe, cmd, self.env, Path(root))
        if not (dest / "train_log.json").is_file():
            raise RuntimeError(f"training pod exited without writing {dest}")


LAUNCHERS = ("in_process", "subprocess", "k8s")
