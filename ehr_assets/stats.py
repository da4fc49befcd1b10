"""Numeric helpers shared by training (collapse monitor), embeddings and the asset checks. numpy only."""

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
