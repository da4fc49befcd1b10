"""What a run trains on: :class:`TrainData` (token ids of whole timelines and decision-node examples, plus the
special ids), its file bundle, the :class:`Sampler` that picks every micro-batch, and the fingerprint a resumed run
checks.

TrainData is built from DataFrames (:func:`train_data_from_tables`, :func:`recipe_train_data_from_tables`): this
package never names a warehouse table; reading them is :func:`ehr_assets.warehouse.read_training_tables`'s job, and the
CLI (or the Dagster layer) composes the two. The bundle (:meth:`TrainData.save`) lets a training process on another
machine read the same data without the warehouse. Every objective draws its SFT term from ``sft_sequences`` (windows
of whole timelines) and its JEPA term from ``jepa_examples``: the regimes differ in their losses, not in their SFT
data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TrainData:
    sft_sequences: list[np.ndarray]  # int64 ids of whole train timelines (each starts with bos)
    # (ids, boundary[, header_len]): boundary = index of the first future token; header_len = the subject's header
    # at the start of ids, which a cropped context keeps (ehr_assets.text.contexts.crop_context)
    jepa_examples: list[tuple]
    vocab_size: int
    pad_id: int
    mask_id: int
    bos_id: int
    eos_id: int
    # ids of the tokens the project added to a backbone's vocabulary (the rows LoRA recipes train); None: derived
    # from the recipe (:func:`ehr_assets.model.backbone.added_token_ids`)
    added_token_ids: list[int] | None = None

    SPECIAL = ("vocab_size", "pad_id", "mask_id", "bos_id", "eos_id")

    def save(self, folder: Path) -> None:
        """A self-contained bundle a training process on another machine can read (parquet + JSON, no pickle):
        ``sequences.parquet`` (input_ids), ``examples.parquet`` (sequence row, boundary), ``special.json``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        seqs = [np.asarray(s, dtype=np.int64) for s in self.sft_sequences]
        row = {id(s): i for i, s in enumerate(self.sft_sequences)}
        extra, ex_rows = [], []
        for ids, b, *h in self.jepa_examples:  # examples normally point at a timeline of sft_sequences
            i = row.get(id(ids))
            if i is None:
                i = len(seqs) + len(extra)
                extra.append(np.asarray(ids, dtype=np.int64))
                row[id(ids)] = i
            ex_rows.append((i, int(b), *h[:1]))
        all_seqs = seqs + extra
        pq.write_table(
            pa.table(
                {
                    "input_ids": pa.array([s.tolist() for s in all_seqs], pa.list_(pa.int64())),
                    "is_sft": pa.array([True] * len(seqs) + [False] * len(extra)),
                }
            ),
            folder / "sequences.parquet",
        )
        cols = {
            "sequence": pa.array([r[0] for r in ex_rows], pa.int64()),
            "boundary": pa.array([r[1] for r in ex_rows], pa.int64()),
        }
        if any(len(r) > 2 for r in ex_rows):  # examples that carry their header length
            cols["header"] = pa.array([int((*r[2:], 0)[0]) for r in ex_rows], pa.int64())
        pq.write_table(pa.table(cols), folder / "examples.parquet")
        special = {k: int(getattr(self, k)) for k in self.SPECIAL}
        if self.added_token_ids is not None:
            special["added_token_ids"] = [int(i) for i in self.added_token_ids]
        (folder / "special.json").write_text(json.dumps(special))

    @classmethod
    def load(cls, folder: Path) -> TrainData:
        """The data of a bundle written by :meth:`save`."""
        import pyarrow.parquet as pq

        folder = Path(folder)
        missing = [f for f in ("sequences.parquet", "examples.parquet", "special.json") if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: not a training-data bundle (missing {missing})")
        st = pq.read_table(folder / "sequences.parquet")
        seqs = [np.asarray(x, dtype=np.int64) for x in st.column("input_ids").to_pylist()]
        is_sft = st.column("is_sft").to_pylist()
        ex = pq.read_table(folder / "examples.parquet")
        rows = zip(ex.column("sequence").to_pylist(), ex.column("boundary").to_pylist())
        examples = [(seqs[i], int(b)) for i, b in rows]
        if "header" in ex.column_names:
            examples = [(s, b, int(h)) for (s, b), h in zip(examples, ex.column("header").to_pylist())]
        special = json.loads((folder / "special.json").read_text())
        return cls(
            [s for s, f in zip(seqs, is_sft) if f],
            examples,
            **{k: int(special[k]) for k in cls.SPECIAL},
            added_token_ids=special.get("added_token_ids"),
        )


# ------------------------------------------------------------------------------------------- from DataFrames
def tokenizer_special_ids(tokenizer_dir: Path) -> dict:
    """``vocab_size`` and pad / mask / bos / eos ids of a cohort's word-level tokenizer folder (the default
    tokenization), as :class:`TrainData` fields."""
    from ..text.tokenizers import load_tokenizer

    fast, _ = load_tokenizer(tokenizer_dir)
    return {
        "vocab_size": len(fast),
        "pad_id": fast.pad_token_id,
        "mask_id": fast.mask_token_id,
        "bos_id": fast.bos_token_id,
        "eos_id": fast.eos_token_id,
    }


def recipe_tokenizer_special_ids(tokens_dir: Path) -> dict:
    """``vocab_size`` and pad / mask / bos / eos ids of a ``<recipe>_tokens`` asset's local HF tokenizer folder."""
    from ..text.tokenizers import load_tokenizer_folder, special_ids

    tok = load_tokenizer_folder(tokens_dir)
    return {**special_ids(tok), "vocab_size": len(tok)}


def _train_split_ids(sequences):
    """``{subject_id: int64 token ids}`` of the train split's timelines, in row order."""
    from meds import train_split

    seq = sequences[sequences["split"] == train_split]
    return {s: np.asarray(x, dtype=np.int64) for s, x in zip(seq["subject_id"], seq["input_ids"])}


def train_data_from_tables(sequences, contexts, special: dict) -> TrainData:
    """The train split's timelines and decision-node (context, future) examples of one cohort, from its token
    sequences (``subject_id``, ``split``, ``input_ids``) and node contexts (``subject_id``, ``split``,
    ``context_end``, ``n_tokens``, ``header_end``, ordered by subject and prediction time), with the tokenizer's
    ids (:func:`tokenizer_special_ids`)."""
    from meds import train_split

    ids = _train_split_ids(sequences)
    ctx = contexts[contexts["split"] == train_split]
    head = ctx["header_end"].fillna(0) if "header_end" in ctx else [0] * len(ctx)
    examples = [
        (ids[s], int(e), int(h))
        for s, e, n, h in zip(ctx["subject_id"], ctx["context_end"], ctx["n_tokens"], head)
        if e < n
    ]  # a node with no future token teaches JEPA nothing
    return TrainData(sft_sequences=list(ids.values()), jepa_examples=examples, **special)


def recipe_train_data_from_tables(sequences, contexts, special: dict) -> TrainData:
    """:class:`TrainData` from a ``<recipe>_tokens`` asset's frames (token sequences as in
    :func:`train_data_from_tables`; node contexts with ``context_ids`` and ``future_start``): whole train timelines
    for SFT; per train node, its context tokens (tokenized on their own) followed by the timeline's tokens after the
    context for JEPA. ``special``: :func:`recipe_tokenizer_special_ids`."""
    from meds import train_split

    ids = _train_split_ids(sequences)
    ctx = contexts[contexts["split"] == train_split]
    examples = []
    head = ctx["n_header_tokens"].fillna(0) if "n_header_tokens" in ctx else [0] * len(ctx)
    for s, c, fs, h in zip(ctx["subject_id"], ctx["context_ids"], ctx["future_start"], head):
        c = np.asarray(c, dtype=np.int64)
        future = ids[s][int(fs) :]
        if len(c) and len(future):  # a node with no future token teaches JEPA nothing
            examples.append((np.concatenate([c, future]), len(c), int(h)))
    return TrainData(sft_sequences=list(ids.values()), jepa_examples=examples, **special)


def read_train_data(conn, cohort: str, tokens_asset: str | None, tokenizer_dir: Path) -> TrainData:
    """The cohort's :class:`TrainData` in the warehouse: the default tokenization (``tokens_asset`` None, the cohort's
    tokenizer folder) or a ``<recipe>_tokens`` asset (its HF tokenizer folder). The tokenizer is read first, so a
    missing tokenizer is reported before a missing table."""
    from ..warehouse import read_training_tables

    if tokens_asset:
        special = recipe_tokenizer_special_ids(tokenizer_dir)
        return recipe_train_data_from_tables(*read_training_tables(conn, cohort, tokens_asset), special)
    special = tokenizer_special_ids(tokenizer_dir)
    return train_data_from_tables(*read_training_tables(conn, cohort, None), special)


# ---------------------------------------------------------------------------------------------------- sampling
class Sampler:
    """Which examples a micro-batch of one stream reads, and its random stream, as pure functions of (seed, step).

    A run reads up to two streams: ``sft`` (windows of whole timelines) and ``jepa`` (decision-node examples).
    Example ``g`` of a stream (counted over steps, accumulation rounds and the global batch, from ``start``) is
    ``perm(g // n)[g % n]``, where ``perm(e)`` is epoch ``e``'s permutation drawn from ``default_rng([seed, 1,
    stream, e])``; the masks or windows of a micro-batch come from ``default_rng([seed, 2, stream, g0])``, ``g0`` its
    first example. ``start``: where the ``init_from`` run left the stream (:meth:`end`), so a curriculum's phases
    read one stream as a single run of both phases would, and a hybrid run of the same length reads the same SFT
    windows. A run resumed at step ``k`` reads exactly what the uninterrupted run read, with no sampler state to save.
    """

    STREAMS = ("sft", "jepa")

    def __init__(
        self,
        n: int,
        seed: int,
        batch_size: int,
        grad_accum: int,
        world: int = 1,
        rank: int = 0,
        *,
        stream: str = "sft",
        start: int = 0,
    ):
        if n <= 0:
            raise ValueError("no training examples")
        self.n, self.seed, self.B, self.A, self.world, self.rank = n, seed, batch_size, grad_accum, world, rank
        self.stream, self.sid, self.start = stream, self.STREAMS.index(stream), int(start)
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, 1, self.sid, epoch]).permutation(self.n)
        return self._perms[epoch]

    def first(self, step: int, micro: int) -> int:
        """The stream position of the first example of (step, accumulation round) on this process."""
        return self.start + ((step * self.A + micro) * self.world + self.rank) * self.B

    def indices(self, step: int, micro: int) -> list[int]:
        first = self.first(step, micro)
        return [int(self._perm(g // self.n)[g % self.n]) for g in range(first, first + self.B)]

    def rng(self, step: int, micro: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 2, self.sid, self.first(step, micro)])

    def end(self, steps: int) -> int:
        """The stream position after ``steps`` optimizer steps from ``start`` (where a continuing run starts)."""
        return self.start + steps * self.A * self.world * self.B


def data_fingerprint(data: TrainData) -> str:
    """sha256 over every token id, boundary and special id the run reads (what a resumed run must also read)."""
    h = hashlib.sha256()
    h.update(np.asarray([data.vocab_size, data.pad_id, data.mask_id, data.bos_id, data.eos_id], np.int64).tobytes())
    for s in data.sft_sequences:
        a = np.ascontiguousarray(s, dtype=np.int64)
        h.update(np.int64(a.size).tobytes())
        h.update(a.tobytes())
    for ids, b, *head in data.jepa_examples:
        a = np.ascontiguousarray(ids, dtype=np.int64)
        h.update(np.asarray([a.size, int(b), *head], np.int64).tobytes())
        h.update(a.tobytes())
    if data.added_token_ids is not None:
        h.update(b"added")
        h.update(np.asarray(data.added_token_ids, np.int64).tobytes())
    return h.hexdigest()
