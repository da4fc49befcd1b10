"""``models/*.yaml``: a training recipe (backbone, LoRA, objective, JEPA settings, optimizer, training, embedding)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel, check_name, check_replicate_seeds


class TinyBackboneConfig(StrictModel):
    """A small transformer made from a config (random weights); the vocabulary comes from the cohort's tokenizer."""

    hidden_size: int = Field(default=64, gt=0, description="width of the hidden states (and of the embeddings)")
    num_hidden_layers: int = Field(default=2, gt=0, description="decoder layers")
    num_attention_heads: int = Field(default=4, gt=0, description="attention heads (divides hidden_size)")
    num_key_value_heads: int = Field(
        default=2, gt=0, description="key/value heads (grouped-query attention; divides num_attention_heads)"
    )
    intermediate_size: int = Field(default=128, gt=0, description="width of the MLP inside each layer")
    max_position_embeddings: int = Field(default=4096, gt=0, description="longest sequence the rotary positions cover")
    head_dim: int | None = Field(default=None, description="width of one head; default hidden_size / heads")

    @model_validator(mode="after")
    def _heads(self) -> TinyBackboneConfig:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads (or set head_dim)")
        return self


class Backbone(StrictModel):
    architecture: Literal["llama", "qwen3"] = Field(
        default="llama", description="the transformers model class (Llama or Qwen3) built or loaded"
    )
    config: TinyBackboneConfig | None = Field(
        default=None, description="build a small model with random weights from these sizes (exclusive with path)"
    )
    path: str | None = Field(
        default=None,
        description="local Hugging Face model folder (never downloaded; safetensors only); exclusive with config",
    )
    tokenizer: str | None = Field(
        default=None,
        description="local tokenizer folder; default: the path folder's own tokenizer, or (config) the cohort's "
        "word-level tokenizer",
    )

    @model_validator(mode="after")
    def _one(self) -> Backbone:
        if (self.config is None) == (self.path is None):
            raise ValueError("declare exactly one of 'config' (tiny model from a config) or 'path' (local HF folder)")
        return self


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOKEN_MODULES = ("embed_tokens", "lm_head")  # the input embeddings and the output head of Llama / Qwen3


class Lora(StrictModel):
    rank: int = Field(default=8, gt=0, description="rank r of the LoRA adapters")
    alpha: float = Field(default=16.0, gt=0, description="LoRA scaling numerator (the update is scaled by alpha / r)")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout on the LoRA branch's input")
    target_modules: list[str] = Field(
        default_factory=lambda: list(ALL_LINEAR),
        min_length=1,
        description="modules that get adapters; default every linear layer of attention and MLP",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="modules trained whole (a full copy each, with its optimizer and EMA state); none by default",
    )
    trainable_tokens: list[str] = Field(
        default_factory=lambda: list(TOKEN_MODULES),
        description="modules whose rows of the tokens the project adds to the vocabulary are trained (PEFT "
        "trainable_token_indices), not the whole matrix; [] trains no token row",
    )

    @model_validator(mode="after")
    def _tokens_or_whole(self) -> Lora:
        both = sorted(set(self.modules_to_save) & set(self.trainable_tokens))
        if both:
            raise ValueError(
                f"{both} in both modules_to_save (train the whole matrix) and trainable_tokens (train the added "
                "tokens' rows): choose one"
            )
        return self


class Jepa(StrictModel):
    mask_ratio: float = Field(default=0.5, gt=0, lt=1, description="fraction of future tokens replaced by <mask>")
    ema_tau: float = Field(default=0.996, ge=0, le=1, description="momentum of the EMA target encoder (1: never moves)")
    ema_tau_end: float | None = Field(default=None, ge=0, le=1, description="cosine schedule of tau toward this value")
    predictor_depth: int = Field(default=2, ge=1, description="layers of the MLP predictor")
    predictor_width: int | None = Field(default=None, gt=0, description="default: the backbone's hidden size")
    max_future_tokens: int | None = Field(default=None, gt=0, description="default: half the sequence length")
    # design choices of the JEPA literature for hard-to-predict targets (bench/results/jepa_diagnosis.md measured
    # them); the defaults are the paper's recipe
    target_norm: Literal["none", "layer"] = Field(
        default="none",
        description="layer: every target vector layer-normed without affine weights (data2vec, I-JEPA), so no few "
        "high-variance dimensions dominate the MSE",
    )
    target_layers: int = Field(
        default=1, ge=1, description="targets = the mean of the top K layers' outputs (data2vec); 1: the final layer"
    )
    mask_span: int = Field(
        default=1,
        ge=1,
        description="masked future positions come as whole aligned spans of this many tokens (the last one cut to "
        "the mask ratio); 1: single tokens drawn independently",
    )
    predict_from: Literal["masked", "previous", "context"] = Field(
        default="masked",
        description="masked: the predictor reads the online hidden state at each masked position; previous: at the "
        "position before it (where a causal LM already predicts the token); context: at the last context position "
        "(the node embedding) plus a learned embedding of the target's offset",
    )
    predictor_lr_scale: float = Field(default=1.0, gt=0, description="the predictor's lr relative to optimizer.lr")


class LossWeights(StrictModel):
    """Weights of the two losses in a jepa or hybrid recipe (an sft recipe needs sft > 0)."""

    sft: float = Field(default=1.0, ge=0, description="weight of the next-token loss (0: JEPA only)")
    jepa: float = Field(default=1.0, ge=0, description="weight of the JEPA loss (must be > 0 for jepa and hybrid)")


class Optimizer(StrictModel):
    name: Literal["adamw"] = Field(default="adamw", description="the optimizer (AdamW only)")
    lr: float = Field(default=1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW betas, a list of two numbers")
    schedule: Literal["constant", "cosine", "linear"] = Field(
        default="cosine", description="learning-rate decay after warm-up (cosine and linear decay to 0 at the end)"
    )
    warmup_steps: int = Field(default=10, ge=0, description="steps of linear warm-up up to lr")
    grad_clip: float | None = Field(default=1.0, gt=0, description="clip the gradient norm to this; null: no clipping")

    @field_validator("betas", mode="before")
    @classmethod
    def _list_to_tuple(cls, v):  # YAML has no tuples
        return tuple(v) if isinstance(v, list) else v


class Training(StrictModel):
    steps: int = Field(default=200, gt=0, description="optimizer steps of this recipe (not counting init_from's)")
    batch_size: int = Field(
        default=8,
        gt=0,
        description="sequences per micro-batch on each process (global batch: x processes x grad_accum)",
    )
    seq_len: int = Field(default=256, ge=16, description="tokens per training window (and the default context length)")
    grad_accum: int = Field(default=1, gt=0, description="micro-batches accumulated per optimizer step")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations in backward to save memory")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16: frozen base in bf16 with autocast on CUDA (a CPU runs fp32 and says so)"
    )
    seed: int = Field(default=0, description="training seed: initialization, sampler and masks")
    log_every: int = Field(default=10, gt=0, description="log the losses every this many steps")
    checkpoint_every: int = Field(default=0, ge=0, description="0: no step checkpoints (and nothing to resume from)")
    keep_checkpoints: int = Field(default=2, gt=0, description="step checkpoints kept for resume (the latest ones)")
    resume: bool = Field(default=True, description="resume from the latest matching step checkpoint of a killed run")
    monitor_every: int = Field(default=0, ge=0, description="collapse monitor interval in steps; 0: log_every")
    monitor_nodes: int = Field(default=64, ge=0, description="decision-node contexts the collapse monitor embeds")


class Embedding(StrictModel):
    pool: Literal["last", "mean"] = Field(
        default="last",
        description="node embedding: the last context token's hidden state, or the mean over the context",
    )
    batch_size: int = Field(default=32, gt=0, description="contexts per batch (a token budget: this x the longest)")
    max_tokens: int | None = Field(default=None, gt=0, description="context tokens embedded; default training.seq_len")
    min_effective_rank: float | None = Field(
        default=None,
        ge=0,
        description="WARN when the node embeddings' effective rank is under this; default max(2, hidden size / 32)",
    )


class Compute(StrictModel):
    """What the recipe's training step needs on a cluster (read by ``defs.recipes`` for the ``dagster-k8s/config``
    tag of ``<recipe>_checkpoint`` and by the ``k8s`` trainer launcher for the training pod). Nothing here changes
    what is computed: a laptop run ignores it."""

    gpus: int = Field(default=0, ge=0, description="GPUs of the training pod (one process per GPU)")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="the cluster's extended resource name for a GPU")
    cpu: str | None = Field(default=None, description="Kubernetes CPU quantity, e.g. '16'")
    memory: str | None = Field(default=None, description="Kubernetes memory quantity, e.g. '200Gi'")
    shm: str | None = Field(default=None, description="size of a memory-backed /dev/shm (data loaders, NCCL)")
    image: str | None = Field(default=None, description="container image with this package and CUDA torch")
    node_selector: dict[str, str] = Field(default_factory=dict, description="e.g. {gpu-type: h100}")
    tolerations: list[dict[str, str]] = Field(default_factory=list, description="Kubernetes tolerations")

    @field_validator("cpu", "memory", "shm", mode="before")
    @classmethod
    def _quantity(cls, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):  # YAML reads `cpu: 16` as a number
            v = str(v)
        if isinstance(v, str) and not re.fullmatch(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", v):
            raise ValueError(f"{v!r} is not a Kubernetes quantity (e.g. '16', '500m', '64Gi')")
        return v


class RecipeSpec(StrictModel):
    """One file of ``models/``: a training recipe; its name becomes the asset keys <name>_checkpoint, ..."""

    name: str = Field(description="the recipe's name in asset keys; must equal the file name (defaults to it)")
    description: str = Field(default="", description="free text for people; changes no output")
    extends: str | None = Field(default=None, description="inherit every key of this recipe, then override")
    format: Literal["delimited", "smb_v1"] = Field(
        default="delimited",
        description="delimited: category-delimiter tokens and time-gap tokens; smb_v1: the SMB-v1 plain-text layout "
        "(needs a subword tokenizer: backbone.path or backbone.tokenizer)",
    )
    backbone: Backbone = Field(description="the model: a tiny one from a config, or a local Hugging Face folder")
    finetune: Literal["lora", "full"] = Field(
        default="lora",
        description="lora: LoRA adapters plus the added tokens' rows, the base frozen (the paper's recipe); full: "
        "every weight of the backbone trains (for a small backbone made from a config, whose random weights are no "
        "encoder when frozen); the lora block is then unused",
    )
    lora: Lora = Field(default=Lora(), description="LoRA settings (finetune: lora)")
    objective: Literal["sft", "jepa", "hybrid", "frozen"] = Field(
        description="sft: next-token loss; jepa: JEPA loss (plus SFT by loss_weights), usually after init_from an sft "
        "recipe (the curriculum); hybrid: both losses every step from the start; frozen: no training, embed with "
        "backbone.path as it is"
    )
    init_from: str | None = Field(
        default=None, description="start from this recipe's checkpoint (same format and tokenizer; no cycle)"
    )
    replicate_seeds: list[int] = Field(
        default_factory=list,
        description="train the recipe again with each of these training seeds: recipes <name>_seed<k> (not inherited "
        "by extends:); the report gives mean and spread across the seeds",
    )
    _seeds = field_validator("replicate_seeds")(check_replicate_seeds)
    jepa: Jepa = Field(default=Jepa(), description="JEPA settings (objective jepa or hybrid)")
    loss_weights: LossWeights = Field(default=LossWeights(), description="weights of the SFT and JEPA losses")
    optimizer: Optimizer = Field(default=Optimizer(), description="optimizer and learning-rate schedule")
    training: Training = Field(default=Training(), description="steps, batches, precision, seed, resume")
    embedding: Embedding = Field(default=Embedding(), description="how node embeddings are read from the model")
    compute: Compute = Field(default=Compute(), description="cluster resources of the training step (Kubernetes)")

    _n = field_validator("name")(check_name)

    @model_validator(mode="after")
    def _format_and_frozen(self) -> RecipeSpec:
        if self.format == "smb_v1" and self.tokenizer_path is None:
            raise ValueError(
                "format: smb_v1 is plain text for a subword tokenizer; set backbone.path or backbone.tokenizer"
            )
        if self.objective == "frozen":
            if self.backbone.path is None:
                raise ValueError("objective: frozen embeds with a given model; set backbone.path (a local HF folder)")
            if self.init_from is not None:
                raise ValueError("init_from: a frozen recipe trains nothing and starts from no checkpoint")
            if self.finetune == "full":
                raise ValueError("finetune: full: a frozen recipe trains nothing")
        return self

    @property
    def is_frozen(self) -> bool:
        """No training: embed with the backbone folder as it is."""
        return self.objective == "frozen"

    @property
    def tokenizer_path(self) -> str | None:
        """The subword tokenizer folder this recipe reads with; None: the cohort's word-level ``tokenizer`` asset."""
        return self.backbone.tokenizer or self.backbone.path

    @property
    def tokenization(self) -> tuple[str, str | None]:
        """(format, tokenizer folder): recipes with equal keys see the same token ids."""
        return (self.format, self.tokenizer_path)

    @property
    def default_tokenization(self) -> bool:
        """The shared cohort path: delimited text, word-level tokenizer fitted per cohort (``token_sequences``)."""
        return self.tokenization == ("delimited", None)

    @property
    def embed_tokens(self) -> int:
        return self.embedding.max_tokens or self.training.seq_len

    @property
    def uses_jepa(self) -> bool:
        return self.objective in ("jepa", "hybrid") and self.loss_weights.jepa > 0

    @property
    def uses_sft(self) -> bool:
        return self.objective == "sft" or (self.objective in ("jepa", "hybrid") and self.loss_weights.sft > 0)
