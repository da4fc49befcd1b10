"""Compatibility shim: moved to :mod:`ehr_assets.embed`; removed once the Dagster layer imports the new modules.

Re-exports what the repository imports from here: ``embed``, ``embed_frozen``, ``load_encoder`` (assets.py,
text_assets.py, tests/test_embeddings.py, tests/test_tokenization.py), plus the rest of the old ``__all__``.
"""

from __future__ import annotations

from .embed import embed, embed_frozen, load_encoder, load_frozen, pool_hidden

__all__ = ["load_encoder", "embed", "embed_frozen", "load_frozen", "pool_hidden"]
