"""The model card of an exported encoder (``python -m ehr_assets.export``): a ``README.md`` with YAML front matter in
the Hugging Face convention, written with ``huggingface_hub``'s own ``ModelCardData`` / ``EvalResult`` so that the
Hub and ``ModelCard.load`` read it (``model-index`` holds the held-out probe results).

It states where the weights come from (the cohort's data source), the recipe and its ``init_from`` chain, the
optimizer steps and tokens seen by each phase, how an embedding is taken, and the probe table of the recipe beside
the count baseline. Pure: no torch, no Dagster; the numbers come in as arguments.
"""

from __future__ import annotations

import math

import pandas as pd

from ..specs import CohortSpec, RecipeSpec

__all__ = ["HEADLINE", "card_text", "phase_rows", "probe_table"]

HEADLINE = {"auroc": "roc_auc", "c_index": "c_index"}  # project metric -> model-index metric type


def source_line(cohort: str, specs: dict[str, CohortSpec], members: list[str]) -> str:
    """One line per member cohort: its source kind and where it comes from (path, or simulator profile)."""
    lines = []
    for m in members:
        src = specs[m].source
        where = getattr(src, "path", None) or f"profile {getattr(src, 'profile', '?')}"
        extra = f", {src.subjects} subjects, seed {src.seed}" if src.kind == "synthetic" else ""
        lines.append(f"- `{m}`: {src.kind} ({where}{extra})")
    head = f"Cohort `{cohort}`" + (f" (the union of {', '.join(members)})" if members != [cohort] else "")
    return head + ":\n" + "\n".join(lines)


def phase_rows(chain: list[tuple[RecipeSpec, dict]]) -> pd.DataFrame:
    """One row per training phase (``init_from`` chain, first phase first): recipe, objective, steps, tokens seen
    (None when the checkpoint predates the record), batch, sequence length, learning rate."""
    rows = []
    for recipe, log in chain:
        tokens = log.get("tokens_seen")
        rows.append(
            {
                "recipe": recipe.name,
                "objective": recipe.objective,
                "steps": int(log.get("steps", recipe.training.steps)),
                "tokens_seen": int(tokens) if tokens else None,
                "batch_size": recipe.training.batch_size,
                "seq_len": recipe.training.seq_len,
                "lr": recipe.optimizer.lr,
            }
        )
    return pd.DataFrame(rows)


def probe_table(metrics: pd.DataFrame, recipe: str, baseline: str = "count_baseline") -> pd.DataFrame:
    """Headline held-out metrics (AUROC, Harrell's C) of ``recipe`` with CIs and n, and the baseline's value."""
    m = metrics[metrics["metric"].isin(list(HEADLINE))]
    mine = m[m["recipe"] == recipe]
    base = m[m["recipe"] == baseline].set_index(["task", "horizon_days", "metric"])["value"]
    out = mine[["task", "horizon_days", "metric", "value", "ci_low", "ci_high", "n"]].copy()
    out["baseline"] = [
        base.get((t, h, k), float("nan")) for t, h, k in zip(out["task"], out["horizon_days"], out["metric"])
    ]
    return out.sort_values(["task", "horizon_days"]).reset_index(drop=True)


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns)
    body = [
        "| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in r) + " |" for r in df.itertuples(False)
    ]
    return "\n".join([head, *body])


def _eval_results(table: pd.DataFrame, cohort: str):
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type="tabular-classification" if r.metric == "auroc" else "time-to-event",
            task_name=f"{r.task}" + (f" within {int(r.horizon_days)} days" if r.horizon_days else ""),
            dataset_type=cohort,
            dataset_name=f"{cohort} (held_out)",
            dataset_config=f"{r.task}_{int(r.horizon_days)}d" if r.horizon_days else r.task,  # one group per task
            dataset_split="held_out",
            metric_type=HEADLINE[r.metric],
            metric_value=round(float(r.value), 4),
            metric_name=r.metric,
        )
        for r in table.itertuples()
        if not math.isnan(r.value)
    ]


def card_text(
    recipe: RecipeSpec,
    cohort: str,
    sources: str,
    phases: pd.DataFrame,
    probes: pd.DataFrame,
    how_to_embed: str,
    base_model: str | None = None,
) -> str:
    """The whole ``README.md``: front matter (``huggingface_hub.ModelCardData``) and the body."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(
        model_name=f"{recipe.name}-{cohort}",
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=["ehr", "meds", "smb-structure", recipe.objective, "lora-merged", recipe.format],
        base_model=base_model,
        eval_results=_eval_results(probes, cohort) or None,
    )
    total_tokens = phases["tokens_seen"].dropna()
    tokens = f"{int(total_tokens.sum()):,}" if len(total_tokens) == len(phases) else "not recorded for every phase"
    probe_md = _markdown(probes) if len(probes) else "No probe results in the warehouse for this recipe and cohort."
    return "\n".join(
        [
            "---",
            data.to_yaml(),
            "---",
            f"# {recipe.name} on {cohort}",
            "",
            f"{recipe.description or recipe.objective} Trained with the SMB-Structure recipe `{recipe.name}` "
            f"(objective `{recipe.objective}`, LoRA r={recipe.lora.rank} merged into the weights).",
            "",
            "## Data",
            "",
            sources,
            "",
            "## Training",
            "",
            _markdown(phases),
            "",
            f"Steps in all: {int(phases['steps'].sum())}; tokens seen in all: {tokens}.",
            "",
            "## Held-out linear probes",
            "",
            "Frozen embeddings, linear probes fit on `train`, regularization chosen on `tuning`, scored on `held_out` "
            "(AUROC for binary tasks, Harrell's C for survival; 95 % subject-bootstrap CIs); `baseline` is the count "
            "baseline (log code counts + age) on the same rows.",
            "",
            probe_md,
            "",
            "## Use",
            "",
            how_to_embed,
            "",
        ]
    )
