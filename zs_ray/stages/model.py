"""Model stage (GPU or CPU actors): the NLI model over a block's token columns -> the prediction columns.

Sorts the block's pairs by length, runs the model (``engine.NliScorer``; a supervised classifier: one
sequence per row, its classes' probabilities through ``engine.supervised.ClassMap``), ranks each row's labels and
replaces the token columns by ``output.PREDICTION_SCHEMA``'s columns (nulls for rows without text). With
verbalizers (``engine.verbalize``) each label's score comes from its phrasings' pairs. For ``zs-ray tune``
(settings with ``hypotheses``) it returns the raw ``logits`` of every pair instead.

In a multi-language run each config has its own model and labels: an actor loads a model when the first
row of a config that uses it comes (rows come config by config, so the pool moves from one language's
model to the next with one load per actor, not an idle cluster in between) and keeps the last
``MODELS_PER_ACTOR`` it used.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable

import numpy as np
import pyarrow as pa

from zs_ray.engine import NliScorer, Pairs, load_model_config, ranked, resolve_precision, torch_threads_for
from zs_ray.engine.classifier import score
from zs_ray.engine.supervised import NLI, class_map
from zs_ray.output import PREDICTION_SCHEMA, config_runs, prediction_table
from zs_ray.stages.tokenize import TOKEN_COLUMNS, flat_pairs, verbalizer

# Texts per call, whose pairs are sorted by length and cut into forward passes by the token budget: on a
# GPU (65,536 tokens per pass) 256 summaries x 6 labels fill barely 1.3 passes, so GPU calls take 1,024
# texts (~5 full passes of summaries, ~48 of full articles).
TEXTS_PER_BATCH = {"cpu": 256, "cuda": 1024}
NEEDS = TOKEN_COLUMNS  # and ``config`` where the dataset has configs
MAKES = tuple(PREDICTION_SCHEMA.names)  # in place of the token columns
log = logging.getLogger(__name__)
MODELS_PER_ACTOR = 2  # two at a border between configs; a third evicts the least recently used


class ModelStage:
    """``settings``: config (None without configs) -> {"model", "labels", ...}; the first config's model
    loads with the actor."""

    def __init__(self, settings: dict, multi_label: bool, precision: str, batch_size, device: str, cpus: float,
                 modes=None):
        import torch

        if device == "cpu":
            torch.set_num_threads(torch_threads_for(cpus))
        self.settings = settings
        self.options = (multi_label, precision, device, batch_size)
        self.modes = modes  # a ``ModesRan`` actor, told the mode of each model this actor loads
        self.scorers: OrderedDict[str, NliScorer] = OrderedDict()
        self.class_maps: dict = {}  # config -> a supervised classifier's ClassMap
        self.verbalizers: dict = {}  # config -> its Verbalizer, or None
        self.scorer(settings[next(iter(settings))])

    def scorer(self, s: dict) -> NliScorer:
        model, kind = s["model"], s.get("kind", NLI)
        if model in self.scorers:
            self.scorers.move_to_end(model)
        else:
            while len(self.scorers) >= MODELS_PER_ACTOR:
                self.scorers.popitem(last=False)
            self.scorers[model] = NliScorer(model, *self.options, kind=kind)
            if self.modes is not None:
                self.report(model, self.scorers[model].precision)
        return self.scorers[model]

    def report(self, model: str, mode: str) -> None:
        """Tell ``modes`` the mode ``model`` runs in here, and wait for it: received before this actor's first
        batch with it is done, so the driver has every actor's once the stream is."""
        import ray

        try:
            ray.get(self.modes.add.remote(model, mode), timeout=60)
        except Exception as exc:  # noqa: BLE001 - the report only names the mode; the batches need no answer
            log.warning("the mode of %s (%s) not reported to the driver: %s", model, mode, exc)

    def class_map(self, config):
        s = self.settings[config]
        if s.get("kind", NLI) == NLI:
            return None
        if config not in self.class_maps:
            self.class_maps[config] = class_map(load_model_config(s["model"]), s["labels"], s.get("label_map"),
                                                self.options[0])
        return self.class_maps[config]

    def verbalizer(self, config):
        if config not in self.verbalizers:
            self.verbalizers[config] = verbalizer(self.settings[config])
        return self.verbalizers[config]

    def __call__(self, batch: pa.Table) -> pa.Table:
        parts = []
        for config, part in config_runs(batch):
            s = self.settings[config]
            if s.get("hypotheses"):  # zs-ray tune: the raw logits of every hypothesis
                parts.append(self.raw_logits(part, self.scorer(s), len(s["hypotheses"])))
            else:
                parts.append(self.predict(part, self.scorer(s), s["labels"], self.class_map(config),
                                          self.verbalizer(config)))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    @staticmethod
    def pairs(batch: pa.Table, per_text: int) -> tuple[np.ndarray, Pairs]:
        """(the rows that have pairs, their pairs) of a block's token columns."""
        # Token ids go from Arrow to numpy without a Python list per pair (it matters when a GPU is fast).
        ids = batch.column("input_ids").combine_chunks()
        keep = np.flatnonzero(ids.is_valid().to_numpy(zero_copy_only=False))
        flat, lengths = flat_pairs(ids)
        flat_types = None
        types = batch.column("token_type_ids").combine_chunks()
        if len(keep) and types.null_count < len(types):
            flat_types, _ = flat_pairs(types)
        return keep, Pairs(flat, lengths, flat_types, per_text)

    def raw_logits(self, batch: pa.Table, scorer: NliScorer, per_text: int) -> pa.Table:
        """The token columns replaced by ``logits`` (per row: its pairs' logits end to end, float32)."""
        keep, pairs = self.pairs(batch, per_text)
        logits = scorer.logits(pairs.ids, pairs.lengths, pairs.type_ids)
        logits = logits.reshape(len(keep), per_text * logits.shape[1])
        rows: list = [None] * batch.num_rows
        for j, i in enumerate(keep):
            rows[i] = logits[j]
        column = pa.array(rows, pa.list_(pa.float32()))
        return batch.drop_columns(list(TOKEN_COLUMNS)).append_column("logits", column)

    def predict(self, batch: pa.Table, scorer: NliScorer, labels: list, classes=None, verbalizer=None) -> pa.Table:
        per_text = 1 if classes else (sum(map(len, verbalizer.phrasings)) if verbalizer else len(labels))
        keep, pairs = self.pairs(batch, per_text)
        probs = score(scorer, pairs, classes, verbalizer)
        ranked_labels, scores = [None] * batch.num_rows, [None] * batch.num_rows
        for j, i in enumerate(keep):
            ranked_labels[i], scores[i] = ranked(labels, probs[j])
        result = prediction_table(ranked_labels, scores)
        batch = batch.drop_columns(list(TOKEN_COLUMNS))
        for name in PREDICTION_SCHEMA.names:
            batch = batch.append_column(PREDICTION_SCHEMA.field(name), result.column(name))
        return batch


class ModesRan:
    """The modes the model actors run in, as each reports it once a model has loaded (after the load guard, which
    moves ``auto``'s choice to fp32 where it fails): model -> modes. One per run, a Ray actor held by the driver."""

    def __init__(self):
        self.modes: dict = {}

    def add(self, model: str, mode: str) -> None:
        self.modes.setdefault(model, set()).add(mode)

    def get(self) -> dict:
        return {m: sorted(v) for m, v in self.modes.items()}


def modes_ran():
    """A ``ModesRan`` actor on the driver's node (no resources), for ``ModelStage(modes=...)``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(ModesRan).options(num_cpus=0, scheduling_strategy=here).remote()


def precision_ran(modes, estimate: Callable[[], str]) -> Callable[[], str]:
    """The precision the model actors ran in, as they reported it to ``modes`` (several, comma-separated, where
    actors ran different modes), as a function to call once every batch is done; ``estimate`` where no actor
    reported (none was started) or the report is lost."""
    import functools

    import ray

    @functools.cache
    def get() -> str:
        try:
            ran = sorted({mode for got in ray.get(modes.get.remote(), timeout=60).values() for mode in got})
        except Exception:  # noqa: BLE001 - the report's actor lost with its node: the estimate is still right
            ran = []  # where no guard failed
        return ",".join(ran) if ran else estimate()

    return get


def _precision_on_worker(precision: str, device: str, model: str, cpus: float, kind: str = NLI) -> str:
    if precision == "auto" and device == "cpu":  # the actors' measurement on this node (engine.calibrate)
        from zs_ray.engine import cpu_candidates
        from zs_ray.engine.calibrate import stored_choice
        from zs_ray.engine.model import _model_dir

        threads = torch_threads_for(cpus)
        chosen = stored_choice(_model_dir(model), threads, cpu_candidates())
        if chosen:
            return chosen
        import torch

        torch.set_num_threads(threads)  # a node where no actor ran: measured here, as an actor would
        return NliScorer(model, precision=precision, device=device, kind=kind).precision
    return resolve_precision(precision, device)


def worker_precision(precision: str, device: str, num_gpus: float, model: str, cpus: float,
                     kind: str = NLI) -> Callable[[], str]:
    """The precision the model actors are expected to run ``model`` in (``auto`` resolved on a worker's own
    hardware, without the load guard: ``precision_ran`` has what they did run), as a function to call once the
    stream is done: on a CPU the actors' stored measurement is read then, rather than measured again beside
    them at the start."""
    if precision != "auto":
        return lambda: precision
    import functools

    import ray

    @functools.cache
    def get() -> str:
        return ray.get(ray.remote(_precision_on_worker).options(num_gpus=num_gpus, num_cpus=0.25).remote(
            precision, device, model, cpus, kind))

    return get
