"""Scoring for ``zs-ray tune``: every labelled text with every distinct hypothesis of every candidate, once.

A ``Candidate`` is a hypothesis template and a verbalizer (each label's phrasings and their aggregate,
``engine.verbalize``; without phrasings, each label is its own). The candidates' hypotheses overlap (a
template's hypotheses are shared by all its phrasing sets and aggregates; a phrasing set's by no other
template), so their union is paired with each text once and each distinct (text, hypothesis) pair is
tokenized and run through the model once (``score_hypotheses``): in this process with the engine, or, from
``--ray-min-records`` records on, through Ray Data with the annotation job's own stages (``TokenizeStage``
and ``ModelStage`` in their actor pools, the model stage returning the raw logits).

Each candidate's label scores then come from those logits exactly as ``annotate`` computes them
(``Scores.probabilities``: ``engine.verbalize.label_logits`` then ``engine.postprocess.label_probabilities``),
so a candidate with one phrasing per label scores as the pipeline does with its template.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from zs_ray.engine.nli import NliLabels
from zs_ray.engine.postprocess import label_probabilities
from zs_ray.engine.verbalize import Verbalizer, label_logits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A template and a verbalizer; ``phrasings`` names the verbalizer's set ("labels": the labels themselves)."""

    template: str
    verbalizer: Verbalizer
    phrasings: str = "labels"

    def hypotheses(self) -> list[str]:
        return self.verbalizer.hypotheses(self.template)

    @property
    def aggregate(self) -> Optional[str]:
        """The aggregate, where it matters (a label with several phrasings)."""
        return None if self.verbalizer.trivial else self.verbalizer.aggregate

    def verbalizers(self) -> Optional[dict]:
        """label -> phrasings for the labels not phrased as themselves (None when none is)."""
        kept = {k: v for k, v in self.verbalizer.to_dict().items() if v != [k]}
        return kept or None

    def describe(self) -> dict:
        return {"hypothesis_template": self.template, "phrasings": self.phrasings,
                "verbalizers": self.verbalizers(), "aggregate": self.aggregate}


@dataclass
class Scores:
    """The logits of every text with every distinct hypothesis: ``logits[text, index[hypothesis], class]``."""

    logits: np.ndarray
    index: dict
    nli: NliLabels
    multi_label: bool
    where: str  # "in-process" or "ray"

    def probabilities(self, candidate: Candidate) -> np.ndarray:
        """[texts, labels]: the candidate's label scores, as annotate computes them."""
        v = candidate.verbalizer
        columns = self.logits[:, [self.index[h] for h in candidate.hypotheses()]]
        return label_probabilities(label_logits(columns, v.groups, v.aggregate, self.nli, self.multi_label),
                                   self.nli, self.multi_label)


def distinct_hypotheses(candidates: Sequence[Candidate]) -> list[str]:
    """Every hypothesis of the candidates, once, in first-seen order."""
    return list(dict.fromkeys(h for c in candidates for h in c.hypotheses()))


def score_hypotheses(model: str, hypotheses: list[str], texts: Sequence[str], multi_label: bool, precision: str,
                     batch_size: Optional[int], on_ray: bool, num_workers: Optional[str] = None,
                     ray_address: Optional[str] = None) -> Scores:
    """Each text paired once with each hypothesis and scored: in this process, or (``on_ray``) on Ray Data."""
    from zs_ray.engine import PairEncoder, load_model_config, nli_labels

    nli = nli_labels(load_model_config(model))
    encoder = PairEncoder.for_hypotheses(model, hypotheses)  # the tokenizer loads, every hypothesis fits
    if on_ray:
        logits = _on_ray(model, hypotheses, texts, precision, batch_size, num_workers, ray_address)
        where = "ray"
    else:
        from zs_ray.engine import NliScorer

        scorer = NliScorer(model, multi_label, precision, None, batch_size)
        pairs = encoder.encode(list(texts))
        logits = scorer.logits(pairs.ids, pairs.lengths, pairs.type_ids)
        where = "in-process"
    logits = logits.reshape(len(texts), len(hypotheses), -1)
    return Scores(logits, {h: i for i, h in enumerate(hypotheses)}, nli, multi_label, where)


def _on_ray(model: str, hypotheses: list[str], texts: Sequence[str], precision: str, batch_size: Optional[int],
            num_workers: Optional[str], ray_address: Optional[str]) -> np.ndarray:
    """The logits [texts x hypotheses, classes] from the job's tokenize and model stages on Ray Data."""
    import pyarrow as pa
    import ray

    from zs_ray.capacity import cluster_capacity
    from zs_ray.cluster import connect_ray
    from zs_ray.config import AnnotateConfig
    from zs_ray.resources import plan_pools
    from zs_ray.stages.base import Stage
    from zs_ray.stages.model import TEXTS_PER_BATCH, ModelStage
    from zs_ray.stages.tokenize import TEXTS_PER_BATCH as TEXTS_PER_TOKENIZE, TokenizeStage

    pool_settings = AnnotateConfig(output="-", precision=precision, batch_size=batch_size, num_workers=num_workers,
                                   ray_address=ray_address)
    connect_ray(pool_settings.ray_address)
    pools = plan_pools(pool_settings, cluster_capacity())
    settings = {None: {"model": model, "hypotheses": list(hypotheses), "kind": "nli"}}
    ds = ray.data.from_arrow(pa.table({"row": np.arange(len(texts)), "text": pa.array(list(texts), pa.string())}))
    for stage in (Stage("tokenize", TokenizeStage, dict(settings=settings, text_field="text"),
                        batch_size=TEXTS_PER_TOKENIZE, pool=pools.tokenize),
                  Stage("model", ModelStage, dict(settings=settings, multi_label=False, precision=precision,
                                                  batch_size=batch_size, device=pools.device, cpus=pools.model.cpus),
                        batch_size=TEXTS_PER_BATCH[pools.device], pool=pools.model)):
        ds = stage.apply(ds)
    log.info("scoring %d texts x %d hypotheses on Ray: %s model worker(s)", len(texts), len(hypotheses), pools.model)
    table = pa.concat_tables(ray.get(ds.select_columns(["row", "logits"]).to_arrow_refs()))
    order = np.argsort(table.column("row").to_numpy())
    rows = table.column("logits").to_pylist()
    return np.stack([np.asarray(rows[i], dtype=np.float32) for i in order]).reshape(len(texts) * len(hypotheses), -1)
