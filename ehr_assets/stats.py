"""Numeric helpers shared by training (collapse monitor), embeddings and the asset checks. numpy only.

Also the two WARN-level health rules the checks apply (``defs/checks.py``): a JEPA run whose normalized loss stays
near 1 (its predictor learned only the targets' mean), and node embeddings whose effective rank falls under a floor.
"""

import numpy as np


def effective_rank(emb: np.ndarray) -> float:
    """exp(entropy of the normalized singular values) of the centered rows (Roy & Vetterli, 2007).

    1.0 means every row lies on one line (collapse); ``min(n, d)`` is the most a matrix can have."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or len(emb) < 2 or not np.isfinite(emb).all():
        return 0.0
    s = np.linalg.svd(emb - emb.mean(0), compute_uv=False)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def embedding_stats(emb: np.ndarray) -> dict[str, float]:
    """Per-dimension std (min, mean) across rows and the effective rank: the collapse monitor's numbers."""
    emb = np.asarray(emb, dtype=np.float64)
    std = emb.std(axis=0) if len(emb) else np.zeros(emb.shape[1] if emb.ndim == 2 else 0)
    return {
        "emb_min_std": float(std.min()) if std.size else float("nan"),
        "emb_mean_std": float(std.mean()) if std.size else float("nan"),
        "emb_eff_rank": effective_rank(emb),
    }


# ------------------------------------------------------------------------------------- WARN-level training health
# a JEPA run whose normalized loss (MSE / the targets' variance at masked positions) ends at or above this explained
# under 10 % of the target variance: its predictor learned little beyond the targets' mean
JEPA_NORM_CEILING = 0.9
JEPA_TAIL_FRACTION = 0.2  # "ends": the mean over the last fifth of the logged steps


def curve_tail_mean(curve: list[dict], key: str, fraction: float = JEPA_TAIL_FRACTION) -> float:
    """Mean of the finite ``key`` values over the last ``fraction`` of the loss-curve records that have one (at
    least one record); NaN when none has."""
    vals = [float(r[key]) for r in curve if key in r and r[key] is not None and np.isfinite(float(r[key]))]
    if not vals:
        return float("nan")
    k = max(1, int(np.ceil(fraction * len(vals))))
    return float(np.mean(vals[-k:]))


def jepa_mean_predictor_problems(curve: list[dict], ceiling: float = JEPA_NORM_CEILING) -> tuple[list[str], dict]:
    """A problem when the run's normalized JEPA loss ends at or above ``ceiling`` (1.0 = a predictor that outputs
    the targets' mean), with the figures; none when the curve has no normalized JEPA loss (the tail is reported)."""
    tail = curve_tail_mean(curve, "jepa_loss_norm")
    first = next((float(r["jepa_loss_norm"]) for r in curve if np.isfinite(r.get("jepa_loss_norm", np.nan))), np.nan)
    md = {"normalized_jepa_loss_end": round(tail, 4), "normalized_jepa_loss_start": round(first, 4)}
    if np.isfinite(tail) and tail >= ceiling:
        return [
            f"normalized JEPA loss ends at {tail:.3f} (>= {ceiling}): the predictor explains under "
            f"{100 * (1 - ceiling):.0f} % of the target variance at masked positions, about what predicting their "
            "mean gives"
        ], md
    return [], md


def effective_rank_floor(dims: int) -> float:
    """The default floor on the effective rank of node embeddings: 2 (everything on a line or a plane is collapse)
    or dims / 32 when larger (a 4096-wide model whose embeddings span under 128 effective dimensions)."""
    return max(2.0, dims / 32)


def effective_rank_problems(emb: np.ndarray, floor: float | None = None) -> tuple[list[str], dict]:
    """A problem when the effective rank of ``emb`` (rows = decision nodes) is under ``floor`` (default
    :func:`effective_rank_floor`), with the figures."""
    emb = np.asarray(emb, dtype=np.float64)
    dims = int(emb.shape[1]) if emb.ndim == 2 else 0
    floor = effective_rank_floor(dims) if floor is None else float(floor)
    er = effective_rank(emb)
    md = {"effective_rank": round(er, 2), "floor": round(floor, 2), "dims": dims, "rows": int(len(emb))}
    if len(emb) < 2 or not np.isfinite(emb).all():  # nothing to measure; NaN/inf fail the blocking collapse check
        return [], md
    if er < floor:
        return [f"effective rank {er:.2f} of {len(emb)} node embeddings is under the floor {floor:.2f}"], md
    return [], md
