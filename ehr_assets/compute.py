"""What a recipe's training cost: tokens seen per loss and forward-pass equivalents, read from a checkpoint's
``train_log.json``. Torch-free, so the report, the asset metadata and the checks can read it without loading a model.

A training run counts the real (non-pad) tokens each loss read: ``sft`` (windows of whole timelines) and ``jepa``
(decision-node examples; the online pass reads them masked, the momentum pass unmasked). A checkpoint started from
an ``init_from`` checkpoint also carries its ancestors' counts (``tokens_seen_total``): a curriculum's JEPA phase
costs its SFT phase plus itself.

Forward-token equivalents put both losses on one scale: a token read by a pass with gradients costs ``g`` forward
passes (``g = 2`` under LoRA, where the frozen base needs input gradients but no weight gradients; ``g = 3`` under
full fine-tuning), a token of the no-grad momentum pass costs 1. SFT tokens cost ``g`` each, JEPA tokens ``g + 1``
(online with gradients, momentum without). Multiply by ``2 x`` the matmul parameters for FLOPs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

GRAD_PASS_COST = {"lora": 2, "full": 3}  # forward-pass equivalents of one pass with gradients
STREAMS = ("sft", "jepa")
# the figures of :func:`compute_record` a recipe's compute is shown by (asset metadata, README table, report)
COMPUTE_KEYS = (
    "sft_tokens",
    "jepa_tokens",
    "sft_tokens_total",
    "jepa_tokens_total",
    "forward_token_equivalents",
    "forward_token_equivalents_total",
)


def forward_equivalents(tokens: dict[str, int], finetune: str = "lora") -> float:
    """Forward-token equivalents of ``tokens`` (``{"sft": n, "jepa": m}``) under ``finetune`` (module docstring)."""
    g = GRAD_PASS_COST[finetune]
    return float(g * tokens.get("sft", 0) + (g + 1) * tokens.get("jepa", 0))


def add_tokens(a: dict[str, int] | None, b: dict[str, int] | None) -> dict[str, int]:
    """Token counts of two runs together, per stream."""
    a, b = a or {}, b or {}
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in STREAMS}


def compute_record(train_log: dict) -> dict:
    """One flat row of a ``train_log.json``: steps, finetune, tokens seen by this run and with its ancestors, and
    forward-token equivalents of both. Logs written before tokens were counted per loss give NaN."""
    nan = float("nan")
    own = train_log.get("tokens_seen")
    own = own if isinstance(own, dict) else None  # an int: one count for both losses, from before they were split
    total = train_log.get("tokens_seen_total", own)
    ft = train_log.get("finetune", "lora")
    row = {"steps": train_log.get("steps"), "finetune": ft, "init_from": train_log.get("init_from")}
    for label, counts in (("", own), ("_total", total)):
        for k in STREAMS:
            row[f"{k}_tokens{label}"] = int(counts[k]) if counts else nan
        row[f"forward_token_equivalents{label}"] = forward_equivalents(counts, ft) if counts else nan
    return row


def compute_table(artifact_root: str | Path, cohort: str | None = None) -> pd.DataFrame:
    """A :func:`compute_record` row per checkpoint under ``artifact_root`` (``<recipe>_checkpoint/<cohort>/``),
    with ``recipe`` and ``cohort`` columns; optionally of one cohort."""
    rows = []
    for log in sorted(Path(artifact_root).glob("*_checkpoint/*/train_log.json")):
        ck = log.parent
        if cohort is not None and ck.name != cohort:
            continue
        rec = compute_record(json.loads(log.read_text()))
        rows.append({"cohort": ck.name, "recipe": ck.parent.name.removesuffix("_checkpoint"), **rec})
    return pd.DataFrame(rows)
