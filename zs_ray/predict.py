"""Model stage (GPU or CPU actors): the NLI model over a block's token columns -> the prediction columns.

Sorts the block's pairs by length, runs the model (``engine.NliScorer``), ranks each row's labels and
replaces the token columns by ``output.PREDICTION_SCHEMA``'s columns (nulls for rows without text).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa

from zs_ray.engine import NliScorer, Pairs, precision_name, ranked, resolve_dtype, torch_threads_for
from zs_ray.output import PREDICTION_SCHEMA, prediction_table
from zs_ray.tokenize import TOKEN_COLUMNS, flat_pairs

# Texts per call, whose pairs are sorted by length and cut into forward passes by the token budget: on a
# GPU (65,536 tokens per pass) 256 summaries x 6 labels fill barely 1.3 passes, so GPU calls take 1,024
# texts (~5 full passes of summaries, ~48 of full articles).
TEXTS_PER_BATCH = {"cpu": 256, "cuda": 1024}


class ModelStage:
    def __init__(self, model: str, labels, multi_label: bool, precision: str, batch_size, device: str,
                 cpus: float):
        import torch

        if device == "cpu":
            torch.set_num_threads(torch_threads_for(cpus))
        self.scorer = NliScorer(model, multi_label, precision, device, batch_size)
        self.labels = list(labels)

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Token ids go from Arrow to numpy without a Python list per pair (it matters when a GPU is fast).
        ids = batch.column("input_ids").combine_chunks()
        keep = np.flatnonzero(ids.is_valid().to_numpy(zero_copy_only=False))
        flat, lengths = flat_pairs(ids)
        flat_types = None
        types = batch.column("token_type_ids").combine_chunks()
        if len(keep) and types.null_count < len(types):
            flat_types, _ = flat_pairs(types)
        probs = self.scorer.probabilities(Pairs(flat, lengths, flat_types, len(self.labels)))
        labels, scores = [None] * len(ids), [None] * len(ids)
        for j, i in enumerate(keep):
            labels[i], scores[i] = ranked(self.labels, probs[j])
        result = prediction_table(labels, scores)
        batch = batch.drop_columns(list(TOKEN_COLUMNS))
        for name in PREDICTION_SCHEMA.names:
            batch = batch.append_column(PREDICTION_SCHEMA.field(name), result.column(name))
        return batch


def _precision_on_worker(precision: str, device: str) -> str:
    return precision_name(resolve_dtype(precision, device))


def worker_precision(precision: str, device: str, num_gpus: float) -> Callable[[], str]:
    """The precision the model actors run (``auto`` resolved on a worker's own hardware), as a function
    to call at the end: the probe task runs while the job streams."""
    if precision != "auto":
        return lambda: precision
    import ray

    ref = ray.remote(_precision_on_worker).options(num_gpus=num_gpus, num_cpus=0.25).remote(precision, device)
    return lambda: ray.get(ref)
