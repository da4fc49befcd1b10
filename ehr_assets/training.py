"""Compatibility shim: moved to :mod:`ehr_assets.model` (backbone, JEPA parts, batches, losses, schedules),
:mod:`ehr_assets.train` (data, loop, checkpoints, distributed, monitor, CLI) and :mod:`ehr_assets.embed`; removed
once the Dagster layer imports the new modules. ``python -m ehr_assets.training`` stays the training CLI (it runs
:func:`ehr_assets.train.cli.main`; so does ``python -m ehr_assets.train``).

Re-exported for the code that still imports them from here: the old ``__all__`` and the other public names of the
old module; ``train``, ``TrainData``, ``train_data_from_warehouse`` and ``recipe_train_data_from_warehouse``
(assets.py, text_assets.py, defs/); ``step_losses``, ``require_safetensors``, ``_from_pretrained``,
``_LinearCrossEntropy`` and ``_prune_steps`` (tests). The two ``*_from_warehouse`` readers compose
:func:`ehr_assets.warehouse.read_training_tables` (the tables) with :mod:`ehr_assets.train.data` (the frames to
TrainData), tokenizer first, as before.

Tests monkeypatch ``build_model`` and ``_prune_steps`` on this module; the moved loop looks them up in
:mod:`ehr_assets.train.loop`, so setting either name here sets it there too (:class:`_ForwardingShim`).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from .model.backbone import build_model, decoder_of, load_base, pick_device, require_safetensors
from .model.backbone import from_pretrained as _from_pretrained
from .model.batches import JepaBatch, crop_example, make_jepa_batch, make_sft_batch, n_masked
from .model.jepa import MomentumEncoder, Predictor
from .model.losses import FUSED_CE_MIN_ELEMENTS, jepa_loss, next_token_loss, sft_loss, step_losses
from .model.losses import LinearCrossEntropy as _LinearCrossEntropy
from .model.schedules import lr_factor, tau_at
from .train import loop as _loop
from .train.checkpoint import prune_steps as _prune_steps
from .train.cli import main
from .train.data import (
    Sampler,
    TrainData,
    data_fingerprint,
    recipe_tokenizer_special_ids,
    recipe_train_data_from_tables,
    tokenizer_special_ids,
    train_data_from_tables,
)
from .train.loop import TrainResult, train
from .train.monitor import monitor_contexts
from .warehouse import read_training_tables

__all__ = [
    "TrainData",
    "TrainResult",
    "train",
    "build_model",
    "load_base",
    "decoder_of",
    "Predictor",
    "MomentumEncoder",
    "crop_example",
    "n_masked",
    "make_jepa_batch",
    "make_sft_batch",
    "sft_loss",
    "jepa_loss",
    "tau_at",
    "lr_factor",
    "pick_device",
    "step_losses",
    "next_token_loss",
    "FUSED_CE_MIN_ELEMENTS",
    "JepaBatch",
    "Sampler",
    "data_fingerprint",
    "monitor_contexts",
    "require_safetensors",
    "train_data_from_warehouse",
    "recipe_train_data_from_warehouse",
    "main",
    "_from_pretrained",
    "_LinearCrossEntropy",
    "_prune_steps",
]


def train_data_from_warehouse(conn, cohort: str, tokenizer_dir: Path) -> TrainData:
    """The train split's timelines and decision-node (context, future) examples of ``cohort`` from the warehouse
    (tables ``token_sequences`` and ``node_contexts``) and its tokenizer folder."""
    special = tokenizer_special_ids(tokenizer_dir)
    return train_data_from_tables(*read_training_tables(conn, cohort, None), special)


def recipe_train_data_from_warehouse(conn, cohort: str, tokens_key: str, tokens_dir: Path) -> TrainData:
    """:class:`TrainData` from a ``<recipe>_tokens`` asset (tables ``recipe_token_sequences`` and
    ``recipe_node_contexts``, a local HF tokenizer)."""
    special = recipe_tokenizer_special_ids(tokens_dir)
    return recipe_train_data_from_tables(*read_training_tables(conn, cohort, tokens_key), special)


# name set on this shim -> the name the moved code looks up in ehr_assets.train.loop
_FORWARDED = {"build_model": "build_model", "_prune_steps": "prune_steps"}


class _ForwardingShim(types.ModuleType):
    """This module's type: setting a forwarded name (a test's monkeypatch, and its undo) also sets it in the loop."""

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in _FORWARDED:
            setattr(_loop, _FORWARDED[name], value)


sys.modules[__name__].__class__ = _ForwardingShim

if __name__ == "__main__":
    raise SystemExit(main())
