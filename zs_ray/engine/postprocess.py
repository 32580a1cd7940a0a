"""Post-processing: NLI logits to label probabilities, and labels ranked by score, as the pipeline does."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from zs_ray.engine.nli import NliLabels


def label_probabilities(logits: np.ndarray, nli: NliLabels, multi_label: bool) -> np.ndarray:
    """[texts, labels, nli_classes] logits -> [texts, labels] probabilities, as the pipeline computes them."""
    logits = logits.astype(np.float64)
    if multi_label or logits.shape[1] == 1:
        pair = logits[..., [nli.contradiction, nli.entailment]]
        pair = np.exp(pair - pair.max(-1, keepdims=True))
        return pair[..., 1] / pair.sum(-1)
    entail = logits[..., nli.entailment]
    entail = np.exp(entail - entail.max(-1, keepdims=True))
    return entail / entail.sum(-1, keepdims=True)


def ranked(labels: Sequence[str], probs: np.ndarray) -> tuple[list[str], list[float]]:
    """Labels and scores sorted by descending score, as the pipeline returns them."""
    order = np.argsort(-probs, kind="stable")
    return [labels[i] for i in order], [float(probs[i]) for i in order]
