"""The command line: write a synthetic cohort as a MEDS dataset folder.

::

    python -m ehr_assets.synthetic <cohort|profile> --subjects N --out DIR [--seed S] [--chunk-subjects K]

``<cohort>`` names a file of ``cohorts/`` (e.g. ``msk``, ``inspect``): its source's profile, seed and ``id_start``
and its declared split fractions and split seed are used, so the subjects and splits equal those of the pipeline's
``cohort_events`` / ``subjects`` for the same number of subjects. A bare profile (``oncology``, ``pe``) uses
``--seed`` (default 0) and a 70/10/20 split. The output is a MEDS dataset folder (see
:func:`~.writer.write_meds_dataset`), written chunk by chunk (``data/<k>.parquet``, one shard per chunk of subjects),
plus the hidden state in ``latent/<k>.parquet`` -- outside ``data/``, so MEDS tools never mistake it for events;
only an oracle may read it.

The package's ``__main__`` only calls :func:`main`; the CLI lives here so that ``import ehr_assets.synthetic`` can
re-export :func:`main` without importing ``__main__`` (which ``python -m`` would then warn about).
"""

from __future__ import annotations

import argparse
import resource
import time as _time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..specs import default_project_dir, load_project
from .generator import DEFAULT_ID_START, PROFILES, iter_chunks
from .writer import random_splits, write_meds_dataset_chunked


@dataclass(frozen=True)
class _Target:
    """What the CLI generates: a profile, its seed and id range, the split fractions/seed and a dataset name."""

    profile: str
    seed: int
    id_start: int | None
    fractions: tuple[float, float, float]
    split_seed: int
    name: str
    subjects: int | None  # the cohort's declared size (None for a bare profile)


def _resolve_target(name: str, seed: int | None, project_dir: Path | None) -> _Target:
    """A cohort name from ``cohorts/*.yaml`` (its synthetic source and splits), else a profile name."""
    project = load_project(project_dir or default_project_dir())
    if name in project.cohorts:
        spec = project.cohorts[name]
        where = project.root / "cohorts" / f"{name}.yaml"
        if spec.is_union:
            raise SystemExit(
                f"error: {where}: cohort {name!r} is the union of {', '.join(spec.union)}; generate each member, "
                f"e.g. python -m ehr_assets.synthetic {spec.union[0]} --subjects N --out DIR"
            )
        src = spec.source
        if getattr(src, "kind", None) != "synthetic":
            raise SystemExit(
                f"error: {where}: source.kind is {getattr(src, 'kind', None)!r}, not 'synthetic'; "
                "only synthetic cohorts can be generated"
            )
        sp = spec.splits
        return _Target(
            src.profile,
            src.seed if seed is None else seed,
            src.id_start,
            (sp.train, sp.tuning, sp.held_out),
            sp.seed,
            f"synthetic_{name}",
            src.subjects,
        )
    if name in PROFILES:
        s = 0 if seed is None else seed
        return _Target(name, s, None, (0.7, 0.1, 0.2), s, f"synthetic_{name}", None)
    raise SystemExit(
        f"error: {name!r} is neither a cohort of {project.root / 'cohorts'} ({', '.join(sorted(project.cohorts))}) "
        f"nor a synthetic profile ({', '.join(PROFILES)})"
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ehr_assets.synthetic", description="Write a synthetic MEDS dataset (see module docstring)."
    )
    p.add_argument("cohort", help="a cohort of cohorts/*.yaml (msk, inspect, ...) or a profile (oncology, pe)")
    p.add_argument(
        "--subjects",
        type=int,
        default=None,
        help="number of subjects (default: the cohort's declared size; 600 for a bare profile)",
    )
    p.add_argument("--out", type=Path, required=True, help="output MEDS dataset folder")
    p.add_argument("--seed", type=int, default=None, help="override the random seed (default: the cohort's; 0)")
    p.add_argument("--chunk-subjects", type=int, default=2_500, help="subjects per chunk and shard (default 2500)")
    p.add_argument("--id-start", type=int, default=None, help="first subject_id (default: the cohort's / profile's)")
    p.add_argument("--name", default=None, help="dataset name (default synthetic_<cohort>)")
    p.add_argument("--project", type=Path, default=None, help="project folder with cohorts/ (default: this repo)")
    p.add_argument("--no-latent", action="store_true", help="do not write the hidden state (latent/)")
    args = p.parse_args(argv)
    if args.subjects is not None and args.subjects <= 0:
        p.error(f"--subjects must be a positive integer, got {args.subjects}")
    if args.chunk_subjects <= 0:
        p.error(f"--chunk-subjects must be a positive integer, got {args.chunk_subjects}")

    t0 = _time.perf_counter()
    target = _resolve_target(args.cohort, args.seed, args.project)
    n = args.subjects or target.subjects or 600
    id_start = args.id_start if args.id_start is not None else target.id_start
    first_id = DEFAULT_ID_START[target.profile] if id_start is None else id_start
    splits = random_splits(first_id + np.arange(n, dtype=np.int64), target.split_seed, target.fractions)
    chunks = iter_chunks(target.profile, n, target.seed, id_start, args.chunk_subjects)
    stats = write_meds_dataset_chunked(chunks, args.out, args.name or target.name, splits, latent=not args.no_latent)
    total = _time.perf_counter() - t0

    print(
        f"cohort={args.cohort} profile={target.profile} seed={target.seed} subjects={stats.subjects} "
        f"events={stats.events} events/subject={stats.events / max(stats.subjects, 1):.1f} codes={stats.codes} "
        f"deaths={stats.deaths} latent_rows={stats.latent_rows}"
    )
    print(
        f"patient-years: lifetime (birth to last event) {stats.lifetime_years:,.0f}, "
        f"record (first clinical event to last) {stats.record_years:,.0f}"
    )
    print("splits: " + ", ".join(f"{k}={v}" for k, v in splits["split"].value_counts().sort_index().items()))
    print(
        f"wrote {args.out} ({stats.shards} shard(s) of <= {args.chunk_subjects} subjects) | generate "
        f"{stats.generate_s:.2f}s, write {stats.write_s:.2f}s, total {total:.2f}s | peak RSS {peak_rss_mb():.0f} MiB"
    )
    return 0
