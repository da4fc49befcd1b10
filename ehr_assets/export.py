"""``python -m ehr_assets.export --recipe R --cohort C --out DIR``: a trained checkpoint as a standalone Hugging Face
folder that plain ``transformers`` loads (``AutoModel.from_pretrained(DIR)``), outside this project.

The folder holds the LoRA adapter merged into the base weights (peft ``merge_and_unload``; the trained embedding and
output rows included), or a ``finetune: full`` checkpoint's whole model, as ``model.safetensors`` with ``config.json``
and ``generation_config.json``; the tokenizer the recipe read, with every token the project added (``tokenizer.json``
...; ``value_bins.json`` for the delimited format's value bins); ``ehr_assets.json`` (format, pooling, context length:
how the project takes an embedding); and ``README.md``, the model card (:mod:`ehr_assets.eval.model_card`: data source,
recipe, steps, tokens seen, probe table). The folder is written beside ``DIR`` and renamed into place, so a failed
export leaves nothing behind.

An embedding is the last hidden state (after the final norm) of ``AutoModel`` at the last context token (``pool:
last``) or its mean (``pool: mean``), exactly as :mod:`ehr_assets.embed` computes it from the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from . import keys
from .eval.model_card import card_text, phase_rows, probe_table, source_line
from .specs import Project, SpecError, default_project_dir, load_project
from .text.tokenizers import add_special_tokens
from .warehouse import atomic_dir, connect, default_artifact_root, default_warehouse, read_partition, table_exists

TOKENIZER_EXTRAS = ("value_bins.json", "tokenization.json")


def merged_model(ckpt_dir: Path):
    """The checkpoint's base with its adapter merged in (``finetune: full``: the trained model as it is): a plain
    ``*ForCausalLM`` (fp32, CPU)."""
    from .embed import load_encoder
    from .model.backbone import is_peft

    model, _ = load_encoder(ckpt_dir, device="cpu")
    return model.merge_and_unload() if is_peft(model) else model


def write_tokenizer(src: Path, dest: Path) -> None:
    """The checkpoint's tokenizer folder re-saved by ``transformers`` (added tokens kept) plus the project's extras."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    tok.save_pretrained(str(dest))
    for name in TOKENIZER_EXTRAS:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def how_to_embed(fmt: str, pool: str, max_tokens: int) -> str:
    """The model card's usage section: the few lines of plain transformers that give the project's embedding."""
    special = add_special_tokens(fmt)
    text = (
        "`python -m ehr_assets.serialize --format delimited --end-time T ...` (the delimited text up to T)"
        if fmt == "delimited"
        else "`python -m ehr_assets.serialize --format smb_v1 --end-time T ...` (the SMB-v1 text up to T)"
    )
    pooled = "h[0, -1]" if pool == "last" else "h[0].mean(0)"
    header = " <dt:" if fmt == "delimited" else "\n["  # where the block after the header starts
    # the crop is the project's (ehr_assets.text.contexts.crop_context): the header, then the most recent tokens
    return "\n".join(
        [
            f"The input is a subject's timeline serialized as {text}.",
            "",
            "```python",
            "import torch",
            "from transformers import AutoModel, AutoTokenizer",
            "tok = AutoTokenizer.from_pretrained(DIR, local_files_only=True)",
            "model = AutoModel.from_pretrained(DIR, local_files_only=True).eval()",
            f"enc = tok(text, add_special_tokens={special}, return_offsets_mapping=True)",
            "ids = enc['input_ids']",
            f"if len(ids) > {max_tokens}:  # keep the header (at most half), then the most recent tokens",
            f"    header = text.split({header!r})[0]  # the text's first block (demographics)",
            f"    head = min(sum(end <= len(header) for _, end in enc['offset_mapping']), {max_tokens // 2})",
            f"    ids = ids[:head] + ids[len(ids) - ({max_tokens} - head):]",
            "h = model(input_ids=torch.tensor([ids])).last_hidden_state",
            f"embedding = {pooled}  # pool: {pool}",
            "```",
        ]
    )


def training_chain(project: Project, recipe: str, cohort: str, artifacts: Path) -> list[tuple]:
    """(recipe spec, train_log) of every phase, the ``init_from`` root first; a phase whose log is missing gets {}."""
    chain, name = [], recipe
    while name is not None:
        spec = project.recipes[name]
        log_path = artifacts / keys.checkpoint(name) / cohort / "train_log.json"
        chain.append((spec, json.loads(log_path.read_text()) if log_path.is_file() else {}))
        name = spec.init_from
    return chain[::-1]


def read_metrics(warehouse: Path, cohort: str) -> pd.DataFrame:
    """The cohort's rows of ``probe_metrics`` (read-only), or an empty frame when there are none yet."""
    if not warehouse.is_file():
        return pd.DataFrame(columns=["recipe", "task", "horizon_days", "metric", "value", "ci_low", "ci_high", "n"])
    with connect(warehouse, read_only=True) as conn:
        if not table_exists(conn, "probe_metrics"):
            return pd.DataFrame(columns=["recipe", "task", "horizon_days", "metric", "value", "ci_low", "ci_high", "n"])
        return read_partition(conn, "probe_metrics", {"cohort": cohort})


def export_encoder(project: Project, recipe: str, cohort: str, out: Path, artifacts: Path, warehouse: Path) -> Path:
    """Write the standalone folder of ``recipe`` trained on ``cohort`` to ``out`` (atomically); returns ``out``."""
    if recipe not in project.recipes:
        raise SpecError(f"{project.root / 'models'}: no recipe {recipe!r} (known: {sorted(project.recipes)})")
    if cohort not in project.cohorts:
        raise SpecError(f"{project.root / 'cohorts'}: no cohort {cohort!r} (known: {sorted(project.cohorts)})")
    spec = project.recipes[recipe]
    if spec.is_frozen:
        raise ValueError(f"recipe {recipe!r} is frozen: {spec.backbone.path} is already a standalone model folder")
    ckpt = artifacts / keys.checkpoint(recipe) / cohort
    if not ((ckpt / "adapter").is_dir() or (ckpt / "model").is_dir()):  # finetune: lora or full
        raise FileNotFoundError(f"{ckpt}: no checkpoint; materialize {keys.checkpoint(recipe)}[{cohort}] first")
    chain = training_chain(project, recipe, cohort, artifacts)
    probes = probe_table(read_metrics(warehouse, cohort), recipe)
    card = card_text(
        spec,
        cohort,
        source_line(cohort, project.cohorts, project.members(cohort)),
        phase_rows(chain),
        probes,
        how_to_embed(spec.format, spec.embedding.pool, spec.embed_tokens),
        base_model=Path(spec.backbone.path).name if spec.backbone.path else None,
    )
    model = merged_model(ckpt)
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        write_tokenizer(ckpt / "tokenizer", tmp)
        info = {
            "recipe": recipe,
            "cohort": cohort,
            "format": spec.format,
            "pool": spec.embedding.pool,
            "max_tokens": spec.embed_tokens,
            "add_special_tokens": add_special_tokens(spec.format),
            "recipe_spec": spec.model_dump(mode="json"),
        }
        (tmp / "ehr_assets.json").write_text(json.dumps(info, indent=2))
        (tmp / "README.md").write_text(card)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.export", description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True, help="a recipe of <project>/models/")
    ap.add_argument("--cohort", required=True, help="the cohort partition it was trained on")
    ap.add_argument("--out", required=True, type=Path, help="the folder to write (must not exist, or be empty)")
    ap.add_argument("--project", type=Path, help="project folder (default: this repository)")
    ap.add_argument("--artifacts", type=Path, help="artifact root (default: $EHR_ARTIFACT_ROOT or <home>/artifacts)")
    ap.add_argument("--warehouse", type=Path, help="DuckDB file (default: $EHR_WAREHOUSE or <home>/warehouse.duckdb)")
    args = ap.parse_args(argv)
    root = Path(args.project or default_project_dir())
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    try:
        project = load_project(root)
        artifacts = Path(args.artifacts or default_artifact_root(root))
        out = export_encoder(
            project, args.recipe, args.cohort, args.out, artifacts, Path(args.warehouse or default_warehouse(root))
        )
    except (SpecError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
