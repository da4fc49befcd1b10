"""Mixed precision, one rule for training, the collapse monitor, the embedding pass and the GPU bench.

A recipe asks for ``training.precision: bf16`` or ``fp32``. :func:`bf16_for` is the project's device policy: bf16 on
CUDA (autocast to bfloat16, the frozen base stored in bfloat16, adapters and optimizer state in fp32); a CPU runs a
bf16 recipe in fp32, because CPU bf16 matmuls are slower than fp32 on processors without bf16 instructions and the
tiny CPU models gain nothing. :func:`autocast` itself works on either device, so the bf16 code path (autocast, a
bf16 base, the chunked cross-entropy under autocast) is exercised on the CPU by the tests.
"""

from __future__ import annotations

import contextlib

import torch


def bf16_for(precision: str, device: torch.device) -> bool:
    """Whether a recipe of ``precision`` runs in bf16 on ``device``: only ``bf16`` on a CUDA device."""
    return precision == "bf16" and torch.device(device).type == "cuda"


def autocast(device: torch.device, bf16: bool):
    """A context: bf16 autocast on ``device``'s type (CUDA or CPU) when ``bf16``, else a no-op."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
