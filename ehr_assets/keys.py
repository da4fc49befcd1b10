"""Asset keys: the one place that builds a recipe's asset names and parses them back.

A recipe ``R`` (``models/R.yaml``) owns the assets ``R_checkpoint``, ``R_embeddings`` and ``R_probe_metrics``; the
root recipe ``R`` of an ``init_from`` chain whose tokenization is not the shared default owns ``R_tokens``. The
count baseline and the oracle variants own ``<name>_probe_metrics`` too, so their rows sit in the same tables as the
recipes'. Asset names double as warehouse table names and artifact folder names (``<root>/<asset>/<partition>/``),
so changing a rule here would orphan existing warehouses: these rules are fixed.

A training-seed replicate of recipe ``R`` (``replicate_seeds`` in its YAML) is the recipe ``R_seed<k>``
(:func:`replicate`), with assets ``R_seed<k>_checkpoint`` and so on; :func:`parse_replicate` reads the name back.
"""

import re

CHECKPOINT = "checkpoint"
EMBEDDINGS = "embeddings"
PROBE_METRICS = "probe_metrics"
TOKENS = "tokens"
RECIPE_ASSET_KINDS = (CHECKPOINT, EMBEDDINGS, PROBE_METRICS, TOKENS)

REPLICATE_RE = re.compile(r"^(?P<recipe>.+)_seed(?P<seed>\d+)$")

COUNT_BASELINE = "count_baseline"
ORACLE = "oracle"  # the full-state oracle; its variants are named oracle_<...> (ehr_assets.eval.oracle.ORACLES)
LATENT = "cohort_latent"  # the synthetic cohorts' hidden state; read by oracle and evaluation assets only
LATENT_DYNAMICS = "latent_dynamics"  # ridge probes of each recipe's embeddings to the hidden state, now and later
LATENT_REPLICATES = "latent_replicates"  # the latent probe's held-out R^2 under each shared bootstrap draw
PAIRED_DIFFERENCES = "paired_differences"  # recipe - reference per task, with paired subject-bootstrap CIs


def checkpoint(recipe: str) -> str:
    """``<recipe>_checkpoint``: the trained PEFT folder of a recipe."""
    return f"{recipe}_{CHECKPOINT}"


def embeddings(recipe: str) -> str:
    """``<recipe>_embeddings``: frozen node embeddings (a recipe, or a frozen model folder)."""
    return f"{recipe}_{EMBEDDINGS}"


def probe_metrics(recipe: str) -> str:
    """``<recipe>_probe_metrics``: probes on a recipe's embeddings, the count baseline or an oracle."""
    return f"{recipe}_{PROBE_METRICS}"


def tokens(root_recipe: str) -> str:
    """``<root>_tokens``: the token ids of an ``init_from`` chain with its own tokenization."""
    return f"{root_recipe}_{TOKENS}"


def parse(asset: str) -> tuple[str, str]:
    """``(recipe, kind)`` of a recipe-owned asset name, e.g. ``"jepa_checkpoint" -> ("jepa", "checkpoint")``;
    a ValueError for any other name."""
    for kind in RECIPE_ASSET_KINDS:
        suffix = f"_{kind}"
        if asset.endswith(suffix) and len(asset) > len(suffix):
            return asset[: -len(suffix)], kind
    raise ValueError(f"{asset!r} is not a recipe asset (<recipe>_{{{', '.join(RECIPE_ASSET_KINDS)}}})")


def replicate(recipe: str, seed: int) -> str:
    """``<recipe>_seed<k>``: the recipe trained again with ``training.seed = k`` (a declared replicate)."""
    return f"{recipe}_seed{int(seed)}"


def parse_replicate(name: str) -> tuple[str, int | None]:
    """``(recipe, seed)`` of a replicate name, ``(name, None)`` for any other name."""
    m = REPLICATE_RE.match(name)
    return (m["recipe"], int(m["seed"])) if m else (name, None)
