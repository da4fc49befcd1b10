"""The collapse monitor: every few steps the online encoder embeds a fixed set of contexts, and the spread of those
embeddings (per-dimension std, effective rank) goes into the loss curve. JEPA can collapse to a constant embedding
that predicts itself perfectly; these numbers show it while the run goes on.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.backbone import decoder_of
from ..stats import embedding_stats
from ..text.contexts import crop_context
from .data import TrainData


def monitor_contexts(data: TrainData, seq_len: int, n: int) -> list[np.ndarray]:
    """A fixed set of up to ``n`` contexts the collapse monitor embeds: decision-node contexts (at most ``seq_len``
    tokens up to each node, cropped as everywhere: :func:`ehr_assets.text.contexts.crop_context`), evenly spread over
    the examples; SFT-only data: the first ``seq_len`` tokens."""
    if n <= 0:
        return []
    if data.jepa_examples:
        pick = np.unique(np.linspace(0, len(data.jepa_examples) - 1, min(n, len(data.jepa_examples))).astype(int))
        examples = [data.jepa_examples[i] for i in pick]
        return [np.asarray(crop_context(ids, b, seq_len, (*h, 0)[0]), dtype=np.int64) for ids, b, *h in examples]
    seqs = [s for s in data.sft_sequences if len(s)]
    pick = np.unique(np.linspace(0, len(seqs) - 1, min(n, len(seqs))).astype(int)) if seqs else []
    return [np.asarray(seqs[i][:seq_len], dtype=np.int64) for i in pick]


@torch.no_grad()
def collapse_stats(model, contexts: list[np.ndarray], pad_id: int, device: torch.device, autocast) -> dict[str, float]:
    """Last-token hidden states of the online encoder on the monitor contexts -> std and effective rank."""
    if len(contexts) < 2:
        return {}
    dec, _ = decoder_of(model)
    was = model.training
    model.eval()
    try:
        L = max(len(c) for c in contexts)
        inp = torch.full((len(contexts), L), pad_id, dtype=torch.long)
        am = torch.zeros((len(contexts), L), dtype=torch.long)
        for i, c in enumerate(contexts):
            inp[i, : len(c)] = torch.from_numpy(c)
            am[i, : len(c)] = 1
        inp, am = inp.to(device), am.to(device)
        with autocast():
            h = dec(input_ids=inp, attention_mask=am, use_cache=False).last_hidden_state
        last = am.sum(1) - 1
        emb = h[torch.arange(len(contexts), device=device), last].float().cpu().numpy()
    finally:
        model.train(was)
    return embedding_stats(emb)
