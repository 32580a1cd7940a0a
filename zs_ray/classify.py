"""Classify stage: two Ray Data map_batches over the engine, each with its own resources.

1. ``TokenizeStage`` (CPU actors): every (text, hypothesis) pair -> token ids.
   Rows whose text is empty or missing get no tokens and are never sent to the model.
2. ``ModelStage`` (one actor per GPU, or CPU actors): sorts the block's pairs by
   length, runs the NLI model, and adds ``labels``, ``scores``, ``prediction``,
   ``score`` (nulls for skipped rows).

``Resources`` decides the actor pools from the cluster's CPUs and GPUs and the
config, so the same flags run on a laptop and on a GPU cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from zs_ray.config import AnnotateConfig
from zs_ray.engine import NliScorer, PairEncoder, Pairs, ranked, torch_threads_for
from zs_ray.errors import ZsRayError

TOKEN_COLUMNS = ("input_ids", "token_type_ids")
PAIRS_TYPE = pa.list_(pa.list_(pa.int32()))  # per row: one token id list per candidate label
RESULT_SCHEMA = pa.schema([
    ("labels", pa.list_(pa.string())),
    ("scores", pa.list_(pa.float64())),
    ("prediction", pa.string()),
    ("score", pa.float64()),
])
TEXTS_PER_TOKENIZE_BATCH = 256
# Texts per model-stage call, which sorts their pairs by length and cuts them into forward passes by the
# token budget: on a GPU (65,536 tokens per pass) 256 summaries x 6 labels fill barely 1.3 passes, so GPU
# calls take 1,024 texts (~5 full passes of summaries, ~48 of full articles).
TEXTS_PER_MODEL_BATCH = {"cpu": 256, "cuda": 1024}
AUX_CPUS = 0.25  # CPU share of a read, tokenize (without GPUs) or write task
TOKENIZERS_PER_GPU_WORKER = 4  # at most; one tokenizer CPU joins ~1,200 full articles/s to 6 labels


@dataclass(frozen=True)
class Resources:
    num_workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    tokenizer_workers: int
    tokenizer_cpus: float

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    @classmethod
    def plan(cls, config: AnnotateConfig, cluster: dict) -> "Resources":
        gpus_total, cpus_total = float(cluster.get("GPU", 0)), float(cluster.get("CPU", 1))
        gpus = config.gpus_per_worker if config.gpus_per_worker is not None else (1.0 if gpus_total else 0.0)
        if config.num_workers:
            workers = config.num_workers
        elif gpus:
            workers = max(1, int(gpus_total // gpus))
        else:
            workers = 1
        if gpus and gpus_total and workers * gpus > gpus_total:
            raise ZsRayError(f"{workers} workers x {gpus:g} GPUs need more than the cluster's {gpus_total:g} GPUs")
        if gpus:
            cpus = config.cpus_per_worker if config.cpus_per_worker is not None else 1.0
            # Tokenizing is what a GPU waits on: at least one tokenizer actor per model worker, growing into
            # the CPUs the model workers leave (Ray Data adds actors while their input queue backs up).
            spare = int(cpus_total - workers * cpus - 2 * AUX_CPUS)
            tok_workers, tok_cpus = max(workers, min(TOKENIZERS_PER_GPU_WORKER * workers, spare)), 1.0
        else:
            spare = cpus_total - 3 * AUX_CPUS  # read, tokenize and write share what the model leaves
            cpus = config.cpus_per_worker if config.cpus_per_worker is not None else max(1.0, spare / workers)
            tok_workers, tok_cpus = 1, AUX_CPUS
        return cls(workers, gpus, cpus, tok_workers, tok_cpus)


def _precision_on_worker(precision: str, device: str) -> str:
    import torch

    from zs_ray.engine import resolve_dtype

    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names[resolve_dtype(precision, device)]


def worker_precision(precision: str, res: Resources) -> Callable[[], str]:
    """The precision the model workers run (``auto`` resolved on a worker's own hardware), as a function
    to call later: the probe task runs while the job streams."""
    if precision != "auto":
        return lambda: precision
    import ray

    probe = ray.remote(_precision_on_worker).options(num_gpus=res.gpus_per_worker, num_cpus=AUX_CPUS)
    ref = probe.remote(precision, res.device)
    return lambda: ray.get(ref)


class TokenizeStage:
    def __init__(self, model: str, labels, hypothesis_template: str, text_field: str):
        self.encoder = PairEncoder(model, labels, hypothesis_template)
        self.text_field = text_field

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(self.text_field).to_pylist()
        kept = np.array([t is not None and bool(t.strip()) for t in texts], dtype=bool)
        pairs = self.encoder.encode([t for t, k in zip(texts, kept) if k])
        batch = batch.append_column("input_ids", pairs_column(pairs.ids, pairs.lengths, kept, pairs.n_labels))
        types = (pairs_column(pairs.type_ids, pairs.lengths, kept, pairs.n_labels) if pairs.type_ids is not None
                 else pa.nulls(len(texts), PAIRS_TYPE))
        return batch.append_column("token_type_ids", types)


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
        result = pa.table(
            [labels, scores, [l[0] if l else None for l in labels], [s[0] if s else None for s in scores]],
            schema=RESULT_SCHEMA,
        )
        batch = batch.drop_columns(list(TOKEN_COLUMNS))
        for name in RESULT_SCHEMA.names:
            batch = batch.append_column(RESULT_SCHEMA.field(name), result.column(name))
        return batch


def pairs_column(values: np.ndarray, lengths: np.ndarray, kept: np.ndarray, n_labels: int) -> pa.Array:
    """list<list<int32>>: per row, its ``n_labels`` pairs' token ids; null for rows not ``kept``."""
    pair_offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=pair_offsets[1:])
    row_offsets = np.zeros(len(kept) + 1, dtype=np.int32)
    np.cumsum(np.where(kept, n_labels, 0), out=row_offsets[1:])
    inner = pa.ListArray.from_arrays(pa.array(pair_offsets), pa.array(values, pa.int32()))
    return pa.ListArray.from_arrays(pa.array(row_offsets), inner, mask=pa.array(~kept))


def flat_pairs(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(all token ids end to end, length of each pair) of a list<list<int>> column's non-null rows."""
    pairs = column.flatten()  # the pairs of the non-null rows, slicing offsets handled
    lengths = np.diff(pairs.offsets.to_numpy()).astype(np.int64)
    return pairs.flatten().to_numpy(zero_copy_only=False), lengths


def classify(ds, config: AnnotateConfig, text_field: str, res: Resources):
    """Add the tokenize and model stages to a Ray Dataset."""
    from ray.data import ActorPoolStrategy

    ds = ds.map_batches(
        TokenizeStage,
        fn_constructor_kwargs=dict(model=config.model, labels=config.labels,
                                   hypothesis_template=config.hypothesis_template, text_field=text_field),
        batch_size=TEXTS_PER_TOKENIZE_BATCH,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=1, max_size=res.tokenizer_workers),
        num_cpus=res.tokenizer_cpus,
    )
    return ds.map_batches(
        ModelStage,
        fn_constructor_kwargs=dict(model=config.model, labels=config.labels, multi_label=config.multi_label,
                                   precision=config.precision, batch_size=config.batch_size, device=res.device,
                                   cpus=res.cpus_per_worker),
        batch_size=TEXTS_PER_MODEL_BATCH[res.device],
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=res.num_workers, max_size=res.num_workers),
        num_gpus=res.gpus_per_worker,
        num_cpus=res.cpus_per_worker,
    )
