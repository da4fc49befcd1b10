"""``python -m ehr_assets.train`` (and ``python -m ehr_assets.training``): train one recipe on one cohort, no Dagster.

The data comes from the warehouse (read-only: :func:`ehr_assets.warehouse.read_training_tables` reads the frames,
:mod:`ehr_assets.train.data` turns them into :class:`TrainData`) or from a training-data bundle (``--data``); the
checkpoint goes to ``<artifacts>/<recipe>_checkpoint/<cohort>/``, written atomically. When the Dagster layer launches
this process (subprocess trainer), its logs stream back through Dagster Pipes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .. import keys
from ..specs import RecipeSpec, SpecError, default_project_dir, load_project, load_spec, resolve_backbone_paths
from ..threads import ThreadPolicy, apply, resolve
from ..warehouse import atomic_dir, connect, default_artifact_root, default_warehouse
from ..warehouse import resume_dir as default_resume_dir
from .data import TrainData, read_train_data
from .loop import train


def pipes():
    """The Dagster Pipes context when this process was launched by the ``<recipe>_checkpoint`` asset in subprocess
    mode (logs then stream to the Dagster run), else None. ``dagster-pipes`` is a small standalone package; a GPU
    machine without it simply logs to stdout."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    try:
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
    except ImportError:
        return None
    return open_dagster_pipes() if PipesEnvVarParamsLoader().is_dagster_pipes_process() else None


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.training", description=description)
    ap.add_argument("--recipe", required=True, help="a recipe name in <project>/models/, or a recipe YAML file")
    ap.add_argument("--cohort", help="cohort partition (reads the warehouse; names the default output folder)")
    ap.add_argument("--data", type=Path, help="training-data bundle folder instead of the warehouse")
    ap.add_argument("--project", type=Path, default=None, help="project folder (default: this repository)")
    ap.add_argument("--warehouse", type=Path, help="DuckDB file (default: $EHR_WAREHOUSE or <home>/warehouse.duckdb)")
    ap.add_argument("--artifacts", type=Path, help="artifact root (default: $EHR_ARTIFACT_ROOT or <home>/artifacts)")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: <artifacts>/tokenizer/<cohort>)")
    ap.add_argument(
        "--init-dir", type=Path, help="checkpoint of init_from (default: <artifacts>/<parent>_checkpoint/<cohort>)"
    )
    ap.add_argument("--resume-dir", type=Path, help="step checkpoints (default: <artifacts>/.resume/<asset>/<cohort>)")
    ap.add_argument(
        "--out", type=Path, help="output checkpoint folder (default: <artifacts>/<recipe>_checkpoint/<cohort>)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        help="torch / BLAS threads of this process (default: $EHR_THREADS, else the usable cores divided by the "
        "training processes on this machine, $LOCAL_WORLD_SIZE)",
    )
    return ap.parse_args(argv)


def thread_policy(args: argparse.Namespace) -> ThreadPolicy:
    """This process's threads (:mod:`ehr_assets.threads`): ``--threads``, else ``EHR_THREADS`` (a Dagster step that
    launched this process passes its own share), else the usable cores shared by the local processes."""
    return resolve(args.threads, default_concurrent=int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def resolve_recipe(args: argparse.Namespace, project_dir: Path) -> tuple[RecipeSpec, str | None]:
    """The recipe to train and its tokens asset (None: the cohort's shared tokenization), after the argument checks
    that need it."""
    rpath = Path(args.recipe)
    tokens_key = None
    if rpath.suffix in (".yaml", ".yml"):
        # a recipe file: relative backbone paths resolve against its project (the folder holding models/)
        root = rpath.resolve().parent.parent if rpath.resolve().parent.name == "models" else project_dir
        recipe = resolve_backbone_paths(load_spec(rpath, RecipeSpec), root)
        if not recipe.default_tokenization and args.data is None:
            raise SystemExit(
                f"error: recipe {recipe.name!r} reads its own tokens asset; name it by its name in "
                "the project (--recipe NAME) or give --data"
            )
    else:
        project = load_project(project_dir)
        if args.recipe not in project.recipes:
            raise SpecError(f"{project_dir / 'models'}: no recipe {args.recipe!r} (known: {sorted(project.recipes)})")
        recipe = project.recipes[args.recipe]
        tokens_key = project.tokens_asset(recipe.name)
    if recipe.is_frozen:
        raise SystemExit(f"error: recipe {recipe.name!r} is frozen: it embeds a model folder as it is, no training")
    if args.data is None and args.cohort is None:
        raise SystemExit("error: give --cohort (read the warehouse) or --data (a training-data bundle)")
    if args.cohort is None and args.out is None:
        raise SystemExit("error: --out is required with --data and no --cohort")
    return recipe, tokens_key


def load_data(args: argparse.Namespace, project_dir: Path, tokens_key: str | None, tok: Path | None) -> TrainData:
    """The bundle of ``--data``, else the cohort's data in the warehouse (opened read-only)."""
    if args.data is not None:
        return TrainData.load(args.data)
    wh = Path(args.warehouse or default_warehouse(project_dir))
    if not wh.is_file():
        raise FileNotFoundError(f"{wh}: no warehouse; materialize the cohort's token_sequences first")
    with connect(wh, read_only=True) as conn:
        return read_train_data(conn, args.cohort, tokens_key, tok)


def run(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    """Resolve the recipe, data and folders of ``args``, and train (process 0 publishes the checkpoint)."""
    project_dir = Path(args.project or default_project_dir())
    recipe, tokens_key = resolve_recipe(args, project_dir)
    artifacts = Path(args.artifacts or default_artifact_root(project_dir))
    asset = keys.checkpoint(recipe.name)
    tok = args.tokenizer or (artifacts / (tokens_key or "tokenizer") / args.cohort if args.cohort else None)
    data = load_data(args, project_dir, tokens_key, tok)
    init_dir = args.init_dir
    if recipe.init_from and init_dir is None:
        if args.cohort is None:
            raise SystemExit(f"error: recipe {recipe.name!r} starts from {recipe.init_from!r}: give --init-dir")
        init_dir = artifacts / keys.checkpoint(recipe.init_from) / args.cohort
    out = Path(args.out or artifacts / asset / args.cohort)
    rdir = args.resume_dir or (
        default_resume_dir(artifacts, asset, args.cohort) if args.cohort else out.parent / f".{out.name}.resume"
    )
    if int(os.environ.get("RANK", "0")) == 0:
        with atomic_dir(out) as tmp:
            train(recipe, data, tmp, init_dir=init_dir, tokenizer_dir=tok, resume_dir=rdir, log=log)
        shutil.rmtree(rdir, ignore_errors=True)  # done: nothing left to resume
        log(f"wrote {out}")
    else:
        train(recipe, data, out, init_dir=init_dir, resume_dir=rdir, log=log)  # rank > 0 writes nothing


def main(argv: list[str] | None = None) -> int:
    """``python -m ehr_assets.training --recipe NAME --cohort KEY``: train one recipe on one cohort, no Dagster.

    Reads the cohort's ``token_sequences`` / ``node_contexts`` from the DuckDB warehouse (read-only) and its
    tokenizer from the artifact root, or a training-data bundle (``--data``, written by :meth:`TrainData.save`), and
    writes ``<artifacts>/<recipe>_checkpoint/<cohort>/`` atomically. A killed run resumes from its last step
    checkpoint when started again. Runs under ``accelerate launch`` / torchrun for several GPUs.
    """
    args = parse_args(argv, main.__doc__.splitlines()[0])
    p = pipes()
    log = p.log.info if p is not None else (lambda m: print(m, flush=True))
    restore = None
    try:
        policy = thread_policy(args)
        restore = apply(policy)
        log(f"threads: {policy.describe()}")
        run(args, log)
    except (SpecError, FileNotFoundError, LookupError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if restore is not None:  # main() called in-process: the caller's limits come back
            restore()
        if p is not None:
            p.close()
    return 0
