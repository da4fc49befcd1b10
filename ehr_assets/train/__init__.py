"""Training a recipe: LoRA fine-tuning of an LLM backbone on serialized EHR timelines, SFT (next token) and JEPA
(masked future latents), without Dagster, so it runs as-is on GPU machines (``python -m ehr_assets.train``, or the
older spelling ``python -m ehr_assets.training``). The model itself is :mod:`ehr_assets.model`; this package never
names a warehouse table (the CLI reads them through :mod:`ehr_assets.warehouse`).

``data``         :class:`TrainData` (and its file bundle), built from DataFrames; the :class:`Sampler`
``loop``         :func:`train`: setup, resume, optimizer steps, logging, saving; :class:`TrainResult`
``checkpoint``   the final checkpoint folder and the resumable step checkpoints
``distributed``  process group, gradient all-reduce (``accelerate launch`` / torchrun)
``monitor``      the collapse monitor (embedding std and effective rank during training)
``cli``          the command line (``__main__`` runs it)
"""

from .data import TrainData
from .loop import TrainResult, train

__all__ = ["train", "TrainData", "TrainResult"]
