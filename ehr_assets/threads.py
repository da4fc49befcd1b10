"""The thread policy: how many threads one step of the pipeline gives torch, BLAS / OpenMP (numpy, scipy,
scikit-learn, scikit-survival) and the tokenizers' Rust pool, so that the steps that may run at once never ask for
more threads than the machine has cores.

    threads per step = max(1, usable cores // steps that may run at once)

* **usable cores**: the CPU affinity mask (``taskset``, cgroup cpusets), capped by the cgroup CPU quota (a container
  limited to 2 CPUs on a 64-core host has 2);
* **steps that may run at once**: ``EHR_CONCURRENT_STEPS``, else the caller's figure (the Dagster layer: its
  multiprocess executor's ``max_concurrent``, which it sets from this same function, by default the usable cores;
  a training process: its processes on this machine, ``LOCAL_WORLD_SIZE``), else 1;
* **overrides**, the most specific first: an explicit value (the ``compute`` resource's ``threads`` in run config,
  ``python -m ehr_assets.training --threads N``, ``embed(..., threads=N)``), then the environment variable
  ``EHR_THREADS``.

Why: torch and OpenBLAS each start one thread per core by default, and their threads spin while they wait. Two steps
side by side on two cores (or one step beside other jobs) then run 4+ busy threads on 2 cores, and each parallel
region waits for its slowest, descheduled thread: on this project's 2-core machine the embedding pass ran 14-18x and
the training step 3-10x slower with the default threads than with one (``bench/threads.py`` measures it).

:func:`apply` sets the limit in this process: threadpoolctl for the BLAS / OpenMP libraries already loaded,
``torch.set_num_threads`` when torch is loaded, and ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
``RAYON_NUM_THREADS`` and ``EHR_THREADS`` for libraries loaded later and for child processes (a subprocess trainer
inherits its step's share). This module imports neither torch nor dagster (torch is limited only when some other
module has loaded it), so every layer may use it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ENV_THREADS = "EHR_THREADS"
ENV_CONCURRENT = "EHR_CONCURRENT_STEPS"
# what libraries loaded after apply() (and child processes) read for their thread count
LIBRARY_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``),
    or None when there is no quota (or no cgroup file)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may run on: the affinity mask, capped by the cgroup CPU quota (rounded up), >= 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def positive_env(name: str) -> int | None:
    """The positive integer in environment variable ``name``, None when unset or empty; a ValueError naming the
    variable for anything else."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        v = int(raw)
    except ValueError:
        v = 0
    if v < 1:
        raise ValueError(f"environment variable {name}={raw!r}: expected a positive integer (threads)")
    return v


def concurrent_steps(explicit: int | None = None, default: int | None = None) -> int:
    """Steps (processes) that may compute at once: ``explicit``, else ``EHR_CONCURRENT_STEPS``, else ``default``,
    else 1."""
    if explicit is not None:
        if int(explicit) < 1:
            raise ValueError(f"concurrent steps must be a positive integer, got {explicit!r}")
        return int(explicit)
    return positive_env(ENV_CONCURRENT) or max(1, int(default or 1))


def orchestrator_steps() -> int:
    """The steps the Dagster layer runs at once: ``EHR_CONCURRENT_STEPS``, else one per usable core (its multiprocess
    executor's ``max_concurrent`` and the divisor of every step's threads)."""
    return concurrent_steps(default=usable_cores())


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int  # per step (process)
    cores: int  # usable cores of the machine
    concurrent: int  # steps that may run at once
    source: str  # what decided: "explicit", "EHR_THREADS" or "cores / steps"

    def describe(self) -> str:
        """One line for the logs, e.g. ``1 thread per step (2 usable cores / 2 steps at once)``."""
        n = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if self.source == "cores / steps":
            return f"{n} per step ({self.cores} usable cores / {self.concurrent} steps at once)"
        return f"{n} ({self.source}; {self.cores} usable cores, {self.concurrent} steps at once)"


def resolve(threads: int | None = None, concurrent: int | None = None, *, default_concurrent: int = 1) -> ThreadPolicy:
    """The policy for one step: ``threads`` when given, else ``EHR_THREADS``, else the usable cores divided by the
    steps that may run at once (``concurrent``, else ``EHR_CONCURRENT_STEPS``, else ``default_concurrent``), >= 1."""
    cores = usable_cores()
    steps = concurrent_steps(concurrent, default_concurrent)
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        return ThreadPolicy(int(threads), cores, steps, "explicit")
    env = positive_env(ENV_THREADS)
    if env is not None:
        return ThreadPolicy(env, cores, steps, ENV_THREADS)
    return ThreadPolicy(max(1, cores // steps), cores, steps, "cores / steps")


def torch_threads() -> int | None:
    """torch's intra-op threads, or None when torch is not loaded (this module never imports it)."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def apply(policy: ThreadPolicy | int) -> Callable[[], None]:
    """Limit this process (and the child processes it starts) to ``policy`` threads; returns a function that puts
    back what was there before (environment, BLAS / OpenMP limits, torch's threads)."""
    from threadpoolctl import threadpool_limits

    n = policy.threads if isinstance(policy, ThreadPolicy) else int(policy)
    if n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    names = (*LIBRARY_ENV, ENV_THREADS)
    old_env = {k: os.environ.get(k) for k in names}
    old_torch = torch_threads()
    for k in names:
        os.environ[k] = str(n)
    limiter = threadpool_limits(limits=n)  # every BLAS and OpenMP library loaded so far
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)

    def restore() -> None:
        limiter.restore_original_limits()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        t = sys.modules.get("torch")
        if t is not None:  # loaded before apply: its old count; loaded since: what it would have started with
            t.set_num_threads(old_torch or positive_env("OMP_NUM_THREADS") or usable_cores())

    return restore


@contextlib.contextmanager
def limited(threads: ThreadPolicy | int | None) -> Iterator[None]:
    """``with limited(n):`` the block runs with ``n`` threads (:func:`apply`), then the old limits come back;
    ``None`` leaves the process as it is."""
    if threads is None:
        yield
        return
    restore = apply(threads)
    try:
        yield
    finally:
        restore()
