"""Text: what a model reads. Serialization formats, tokenizers and decision-node contexts; no torch, no Dagster.

- :mod:`.delimited`: the ``delimited`` format (category delimiters, time-gap / age / value-bin tokens), one subject or a
  cohort, and its word offsets as character offsets.
- :mod:`.smb_v1`: the ``smb_v1`` format, the plain-text layout the released SMB-v1 checkpoints read.
- :mod:`.tokenizers`: the word-level tokenizer of the ``delimited`` format, and a recipe's own Hugging Face tokenizer
  with the tokens the project adds and the mapping from character offsets to token offsets.
- :mod:`.contexts`: the prefix of a subject's text each decision node may read, and the leakage check over it.
- :mod:`.__main__`: the command that prints one subject's text (``python -m ehr_assets.serialize``, or
  ``python -m ehr_assets.text``).

Imports: ``pandas``, ``numpy``, ``pyarrow``, ``meds`` and :mod:`ehr_assets.constants`; ``transformers`` and
``tokenizers`` only inside the functions that need them. The command also reads :mod:`ehr_assets.data.sources` (static
rows placed at birth). Neither torch nor dagster, here or in anything it imports; the sequence and token assets of
the Dagster layer call into this package, never the reverse.
"""
