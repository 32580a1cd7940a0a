"""``ZeroShotClassifier``: the engine alone (no Ray), pipeline-equivalent results."""

from __future__ import annotations

from typing import Mapping, Optional

from zs_ray.checks import parse_labels
from zs_ray.engine.model import NliScorer
from zs_ray.engine.nli import load_model_config
from zs_ray.engine.pairs import PairEncoder
from zs_ray.engine.postprocess import ranked
from zs_ray.engine.supervised import CLASSIFIER, TextEncoder, class_map, model_kind
from zs_ray.engine.verbalize import Verbalizer
from zs_ray.errors import ZsRayError


class ZeroShotClassifier:
    """Zero-shot text classification with an NLI model, without Ray.

    ``ZeroShotClassifier(model, candidate_labels, hypothesis_template)(texts)``
    returns, in input order, one ``{"sequence", "labels", "scores"}`` per text,
    as transformers' zero-shot pipeline does (scores equal it to 1e-4 in fp32).

    A supervised text classifier (no entailment label, named classes: ``supervised``) runs once per
    text; its candidate labels are its classes (default), a subset of them, or the image of
    ``label_map`` (model class -> label); the template is not used. Its scores equal
    ``pipeline("text-classification", top_k=None)``'s in fp32.

    ``verbalizers`` (label -> phrasings, ``engine.verbalize``) pairs each text with every phrasing of
    each label; a label's score comes from its phrasings' logits by ``aggregate`` (max or mean).
    """

    def __init__(
        self,
        model: str,
        candidate_labels=None,
        hypothesis_template: str = "This example is {}.",
        multi_label: bool = False,
        precision: str = "auto",
        device: Optional[str] = None,
        batch_size: Optional[int] = None,
        label_map: Optional[Mapping] = None,
        verbalizers: Optional[Mapping] = None,
        aggregate: str = "max",
    ):
        config = load_model_config(model)
        self.kind = model_kind(config, label_map)
        self.class_map = self.verbalizer = None
        if self.kind == CLASSIFIER:
            if verbalizers:
                raise ZsRayError(f"verbalizers are for NLI models; {model!r} is a supervised classifier")
            self.class_map = class_map(config, candidate_labels, label_map, multi_label)
            self.encoder = TextEncoder(model)
            self.labels = self.class_map.labels
        else:
            if label_map:
                raise ZsRayError(f"--label-map is for supervised classifiers; {model!r} is an NLI model")
            labels = parse_labels(candidate_labels or ())
            self.verbalizer = Verbalizer.of(labels, verbalizers, aggregate) if verbalizers else None
            self.encoder = PairEncoder(model, labels, hypothesis_template, self.verbalizer)
            self.labels = self.encoder.labels
        self.scorer = NliScorer(model, multi_label, precision, device, batch_size, kind=self.kind)

    @property
    def precision(self) -> str:
        return self.scorer.precision

    def probabilities(self, pairs):
        """[texts, labels] probabilities of encoded texts (``self.encoder.encode``)."""
        return score(self.scorer, pairs, self.class_map, self.verbalizer)

    def __call__(self, texts) -> list[dict]:
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        probs = self.probabilities(self.encoder.encode(texts))
        results = []
        for text, row in zip(texts, probs):
            labels, scores = ranked(self.labels, row)
            results.append({"sequence": text, "labels": labels, "scores": scores})
        return results[0] if single else results


def score(scorer: NliScorer, pairs, class_map=None, verbalizer=None):
    """Per text, each candidate label's probability: an NLI model's over its pairs (a ``verbalizer``'s
    hypotheses: from each label's phrasings), a classifier's (``class_map``) from one forward pass per text."""
    import numpy as np

    if class_map is None:
        return scorer.probabilities(pairs, verbalizer)
    if pairs.n_texts == 0:
        return np.empty((0, len(class_map.labels)))
    return class_map.probabilities(scorer.logits(pairs.ids, pairs.lengths, pairs.type_ids))
