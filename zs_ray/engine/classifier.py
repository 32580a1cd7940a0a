"""``ZeroShotClassifier``: the engine alone (no Ray), pipeline-equivalent results."""

from __future__ import annotations

from typing import Optional

from zs_ray.engine.model import NliScorer
from zs_ray.engine.pairs import PairEncoder
from zs_ray.engine.postprocess import ranked


class ZeroShotClassifier:
    """Zero-shot text classification with an NLI model, without Ray.

    ``ZeroShotClassifier(model, candidate_labels, hypothesis_template)(texts)``
    returns, in input order, one ``{"sequence", "labels", "scores"}`` per text,
    as transformers' zero-shot pipeline does (scores equal it to 1e-4 in fp32).
    """

    def __init__(
        self,
        model: str,
        candidate_labels,
        hypothesis_template: str = "This example is {}.",
        multi_label: bool = False,
        precision: str = "auto",
        device: Optional[str] = None,
        batch_size: Optional[int] = None,
    ):
        self.encoder = PairEncoder(model, candidate_labels, hypothesis_template)
        self.scorer = NliScorer(model, multi_label, precision, device, batch_size)
        self.labels = self.encoder.labels

    @property
    def precision(self) -> str:
        return self.scorer.precision

    def __call__(self, texts) -> list[dict]:
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        probs = self.scorer.probabilities(self.encoder.encode(texts))
        results = []
        for text, row in zip(texts, probs):
            labels, scores = ranked(self.labels, row)
            results.append({"sequence": text, "labels": labels, "scores": scores})
        return results[0] if single else results
