"""Supervised text classifiers as the pre-annotator: one forward pass per text, the model's own classes.

A model whose config has no entailment label but named classes (``id2label`` other than the generic
``LABEL_0, LABEL_1, ...``) is a ``"classifier"``: each text is encoded alone (``TextEncoder``: the
tokenizer's single-sequence encoding, truncated at ``model_max_length``, what
``pipeline("text-classification")`` feeds the model) and scored once, whatever the number of labels.

Its candidate labels are its classes in index order, or a subset of them (``--labels``), or, with a label
map (model class -> candidate label), the map's image. ``ClassMap`` turns the model's logits into the
candidates' probabilities as the text-classification pipeline does (``function_to_apply``): a softmax over
all the model's classes; a sigmoid per class for multi-label (``--multi-label``, a config whose
``problem_type`` is ``multi_label_classification``, or a single-class model). A candidate label that
several classes map to gets the sum of their softmax probabilities (multi-label: the largest). The
candidates' scores are the model's probabilities, not renormalised over a subset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from zs_ray.engine.nli import nli_labels
from zs_ray.engine.pairs import Pairs, flatten, load_tokenizer
from zs_ray.errors import ZsRayError

NLI, CLASSIFIER = "nli", "classifier"
_GENERIC = re.compile(r"^LABEL_\d+$")


def model_classes(model_config) -> list[str]:
    """The model's class names in index order (``id2label``)."""
    id2label = model_config.id2label or {}
    return [str(id2label[i]) for i in sorted(id2label, key=int)]


def model_kind(model_config, label_map: Optional[Mapping] = None) -> str:
    """``"nli"`` (an entailment label), ``"classifier"`` (named classes, or generic ones a label map names),
    else the one-line error that zero-shot classification needs an NLI model."""
    names = [str(k) for k in (model_config.label2id or {})]
    if any(name.lower().startswith("entail") for name in names):
        return NLI
    classes = model_classes(model_config)
    if classes and (label_map or not all(_GENERIC.match(c) for c in classes)):
        return CLASSIFIER
    nli_labels(model_config)  # raises: no entailment label
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ClassMap:
    """The candidate labels of a classifier and, for each, the model classes that make its score."""

    labels: tuple[str, ...]
    classes: tuple[tuple[int, ...], ...]
    sigmoid: bool

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """[texts, model classes] logits -> [texts, candidate labels] probabilities."""
        logits = logits.astype(np.float64)
        if self.sigmoid:
            probs = 1.0 / (1.0 + np.exp(-logits))
            return np.stack([probs[:, list(c)].max(axis=1) for c in self.classes], axis=1)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = e / e.sum(axis=-1, keepdims=True)
        return np.stack([probs[:, list(c)].sum(axis=1) for c in self.classes], axis=1)


def class_map(model_config, labels: Optional[Sequence[str]] = None, label_map: Optional[Mapping] = None,
              multi_label: bool = False) -> ClassMap:
    """The candidate labels (default: every class, or the label map's image, in class order) and their
    classes; one line naming the labels the model does not have, or a label map naming unknown classes."""
    classes = model_classes(model_config)
    if label_map:
        unknown = [str(k) for k in label_map if str(k) not in classes]
        if unknown:
            raise ZsRayError(f"--label-map names classes the model does not have: {', '.join(unknown)} "
                             f"(its classes: {', '.join(classes)})")
        target = [str(label_map.get(c, "")) or None for c in classes]
    else:
        target = list(classes)
    available = list(dict.fromkeys(t for t in target if t))
    wanted = list(labels) if labels else available
    missing = [w for w in wanted if w not in available]
    if missing:
        what = "the label map's labels" if label_map else "its classes"
        raise ZsRayError(f"--labels {', '.join(missing)}: the model does not have "
                         f"{'this label' if len(missing) == 1 else 'these labels'} ({what}: {', '.join(available)})")
    groups = tuple(tuple(i for i, t in enumerate(target) if t == w) for w in wanted)
    sigmoid = (multi_label or getattr(model_config, "problem_type", None) == "multi_label_classification"
               or len(classes) == 1)
    return ClassMap(tuple(wanted), groups, sigmoid)


class TextEncoder:
    """Token ids of each text alone, as the text-classification pipeline makes them
    (``tokenizer(text, truncation=True, max_length=model_max_length)``): ``Pairs`` with one per text."""

    def __init__(self, model: str):
        self.tokenizer, self.max_length, self.with_types = load_tokenizer(model)

    def encode(self, texts: Sequence[str]) -> Pairs:
        texts = list(texts)
        if not texts:
            return Pairs(np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64),
                         np.empty(0, dtype=np.int32) if self.with_types else None, 1)
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_attention_mask=False,
                             return_token_type_ids=self.with_types)
        return flatten(enc, self.with_types, 1)
