"""Tokenize stage (CPU actors): every (text, hypothesis) pair of a block -> token id columns.

Each text is tokenized once and joined to every hypothesis of its config (``engine.PairEncoder``), or,
for a supervised classifier, encoded alone (``engine.supervised.TextEncoder``: one sequence per row; a
multi-language run gives each config its own tokenizer, template and labels, loaded when its first row
comes). The pairs travel
to the model stage as two Arrow columns, ``input_ids`` and ``token_type_ids`` (list<list<int32>>: per row,
one token id list per candidate label), built from flat arrays with no Python list per pair. Rows whose
text is empty or missing get null token columns and are never sent to the model.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from zs_ray.engine import PairEncoder, Verbalizer
from zs_ray.engine.supervised import CLASSIFIER, TextEncoder
from zs_ray.output import config_runs
from zs_ray.stages.base import TEXT

TOKEN_COLUMNS = ("input_ids", "token_type_ids")
NEEDS = (TEXT,)  # and ``config`` where the dataset has configs
MAKES = TOKEN_COLUMNS
PAIRS_TYPE = pa.list_(pa.list_(pa.int32()))
TEXTS_PER_BATCH = 256  # one tokenizer call: ~0.2 s of full articles on one CPU


class TokenizeStage:
    """``settings``: config (None without configs) -> {"model", "labels", "hypothesis_template", "kind",
    "verbalizers", "aggregate"} (or {"model", "hypotheses"}: pairs with these hypotheses as given)."""

    def __init__(self, settings: dict, text_field: str):
        self.settings, self.text_field = settings, text_field
        self.encoders: dict = {}
        self.encoder(next(iter(settings)))  # the first config's tokenizer loads with the actor

    def encoder(self, config) -> "PairEncoder | TextEncoder":
        if config not in self.encoders:
            s = self.settings[config]
            if s.get("kind") == CLASSIFIER:
                self.encoders[config] = TextEncoder(s["model"])
            elif s.get("hypotheses"):  # zs-ray tune: every distinct hypothesis of its candidates, as given
                self.encoders[config] = PairEncoder.for_hypotheses(s["model"], s["hypotheses"])
            else:
                self.encoders[config] = PairEncoder(s["model"], s["labels"], s["hypothesis_template"], verbalizer(s))
        return self.encoders[config]

    def __call__(self, batch: pa.Table) -> pa.Table:
        parts = [self.tokenize(part, self.encoder(config)) for config, part in config_runs(batch)]
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def tokenize(self, batch: pa.Table, encoder) -> pa.Table:
        texts = batch.column(self.text_field).to_pylist()
        kept = np.array([t is not None and bool(t.strip()) for t in texts], dtype=bool)
        pairs = encoder.encode([t for t, k in zip(texts, kept) if k])
        batch = batch.append_column("input_ids", pairs_column(pairs.ids, pairs.lengths, kept, pairs.n_labels))
        types = (pairs_column(pairs.type_ids, pairs.lengths, kept, pairs.n_labels) if pairs.type_ids is not None
                 else pa.nulls(len(texts), PAIRS_TYPE))
        return batch.append_column("token_type_ids", types)


def verbalizer(settings: dict):
    """The ``Verbalizer`` of a config's settings (None without verbalizers)."""
    if not settings.get("verbalizers"):
        return None
    return Verbalizer.of(settings["labels"], settings["verbalizers"], settings.get("aggregate") or "max")


def pairs_column(values: np.ndarray, lengths: np.ndarray, kept: np.ndarray, n_labels: int) -> pa.Array:
    """list<list<int32>>: per row, its ``n_labels`` pairs' token ids; null for rows not ``kept``."""
    pair_offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=pair_offsets[1:])
    row_offsets = np.zeros(len(kept) + 1, dtype=np.int32)
    np.cumsum(np.where(kept, n_labels, 0), out=row_offsets[1:])
    inner = pa.ListArray.from_arrays(pa.array(pair_offsets), pa.array(values, pa.int32()))
    return pa.ListArray.from_arrays(pa.array(row_offsets), inner, mask=pa.array(~kept))


def flat_pairs(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(all token ids end to end, length of each pair) of a ``pairs_column``'s non-null rows."""
    pairs = column.flatten()  # the pairs of the non-null rows, slicing offsets handled
    lengths = np.diff(pairs.offsets.to_numpy()).astype(np.int64)
    return pairs.flatten().to_numpy(zero_copy_only=False), lengths
