"""The model of SMB-Structure (arXiv 2601.22128): an LLM backbone with LoRA adapters, the JEPA predictor and
momentum encoder, the masking that makes JEPA examples, the two losses and their schedules. torch / transformers /
peft only: no Dagster, and nothing of the training loop (:mod:`ehr_assets.train` imports this package, never the
reverse).

``base``      the backbone before any adapter: made from a config or read from a local folder (safetensors only),
              saved into and read back from a checkpoint; its decoder stack, its device
``backbone``  how it trains (``finetune``: LoRA + the added tokens' rows, or every weight), the trained model read
              back, the parameter budget
``jepa``      :class:`Predictor`, :class:`MomentumEncoder` (EMA of the trainable tensors, shared frozen base)
``batches``   crop and mask decision-node examples, SFT windows (numpy; masking kept apart from the model)
``losses``    SFT and JEPA losses, and the optimized step that computes both (:func:`step_losses`)
``schedules`` EMA momentum and learning-rate schedules
"""

from .backbone import build_model, load_trained, parameter_budget, trainable_parameters
from .base import decoder_of, load_base, pick_device, require_safetensors
from .batches import JepaBatch, crop_example, make_jepa_batch, make_sft_batch, n_masked
from .jepa import MomentumEncoder, Predictor
from .losses import jepa_loss, sft_loss, step_losses
from .schedules import lr_factor, tau_at

__all__ = [
    "build_model",
    "load_trained",
    "parameter_budget",
    "trainable_parameters",
    "decoder_of",
    "load_base",
    "pick_device",
    "require_safetensors",
    "JepaBatch",
    "crop_example",
    "make_jepa_batch",
    "make_sft_batch",
    "n_masked",
    "MomentumEncoder",
    "Predictor",
    "jepa_loss",
    "sft_loss",
    "step_losses",
    "lr_factor",
    "tau_at",
]
