"""Compatibility shim: moved to :mod:`ehr_assets.text` (``delimited``, ``tokenizers``, ``contexts``); removed once the
Dagster layer imports the new modules."""

from .text.contexts import context_violations, node_contexts
from .text.delimited import FIXED_VOCAB, age_token, bin_token, gap_token, serialize_cohort, serialize_subject
from .text.tokenizers import encode_words as encode
from .text.tokenizers import load_tokenizer, save_tokenizer, tokenizer_from_events

__all__ = [
    "FIXED_VOCAB",
    "age_token",
    "bin_token",
    "context_violations",
    "encode",
    "gap_token",
    "load_tokenizer",
    "node_contexts",
    "save_tokenizer",
    "serialize_cohort",
    "serialize_subject",
    "tokenizer_from_events",
]
