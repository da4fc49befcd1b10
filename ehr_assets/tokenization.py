"""Compatibility shim: moved to :mod:`ehr_assets.text.tokenizers`; removed once the Dagster layer imports the new
modules."""

from .text.tokenizers import (
    TokenizerError,
    encode,
    encode_with_offsets,
    first_token_at,
    load_tokenizer_folder,
    prepare_tokenizer,
    special_ids,
    token_ends,
)

__all__ = [
    "TokenizerError",
    "encode",
    "encode_with_offsets",
    "first_token_at",
    "load_tokenizer_folder",
    "prepare_tokenizer",
    "special_ids",
    "token_ends",
]
