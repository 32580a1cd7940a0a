"""Verbalizers: several phrasings per candidate label, and how a label's score comes from its phrasings'.

A verbalizer maps each candidate label to its phrasings (``{"deportes": ["deportes", "fútbol"]}``; a label
it does not name keeps itself as its one phrasing). Each phrasing makes one hypothesis
(``template.format(phrasing)``), so a text is paired with every phrasing of every label, label by label.

A label's logit is the ``max`` or the ``mean`` of its phrasings' logits, and the pipeline's formula then
applies to the labels' logits:

* single-label (two labels or more): a softmax over the labels of their entailment logits, a label's
  entailment logit being the max/mean of its phrasings' entailment logits;
* multi-label (or one label): per label the entailment-vs-contradiction softmax, i.e. the sigmoid of a
  log-odds, a label's log-odds (entailment - contradiction logit) being the max/mean of its phrasings'.
  ``max`` is then the probability of the most entailed phrasing.

With one phrasing per label, the model's logits go through the pipeline's formula unchanged: the
pipeline's scores exactly. The output's labels stay the candidate labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from zs_ray.engine.nli import NliLabels
from zs_ray.errors import ZsRayError

AGGREGATES = ("max", "mean")


@dataclass(frozen=True)
class Verbalizer:
    """Each candidate label's phrasings (``phrasings[i]`` for ``labels[i]``) and their ``aggregate``."""

    labels: tuple[str, ...]
    phrasings: tuple[tuple[str, ...], ...]
    aggregate: str = "max"

    @classmethod
    def of(cls, labels: Sequence[str], mapping: Optional[Mapping] = None, aggregate: str = "max",
           where: str = "verbalizers") -> "Verbalizer":
        """The verbalizer of ``mapping`` (label -> a phrasing or a list of them) over ``labels``; one line
        for a label that is not a candidate, a label without phrasings, a phrasing given twice (within a
        label or for two labels) or an unknown aggregate."""
        if aggregate not in AGGREGATES:
            raise ZsRayError(f"{where}: aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        mapping = dict(mapping or {})
        unknown = [str(k) for k in mapping if str(k) not in labels]
        if unknown:
            raise ZsRayError(f"{where} names {', '.join(map(repr, unknown))}, not candidate label(s) "
                             f"({', '.join(labels)})")
        mapping = {str(k): v for k, v in mapping.items()}
        phrasings, owner = [], {}
        for label in labels:
            given = mapping.get(label, [label])
            given = [given] if isinstance(given, str) else given
            if not isinstance(given, (list, tuple)) or not given:
                raise ZsRayError(f"{where}: label {label!r} needs a phrasing or a non-empty list of them")
            these = tuple(str(p).strip() for p in given)
            for p in these:
                if not p:
                    raise ZsRayError(f"{where}: label {label!r} has an empty phrasing")
                if p in owner:
                    raise ZsRayError(f"{where}: phrasing {p!r} is given twice (labels {owner[p]!r} and {label!r})")
                owner[p] = label
            phrasings.append(these)
        return cls(tuple(labels), tuple(phrasings), aggregate)

    @property
    def trivial(self) -> bool:
        """One phrasing per label: the aggregate makes no difference."""
        return all(len(p) == 1 for p in self.phrasings)

    def hypotheses(self, template: str) -> list[str]:
        """Every phrasing's hypothesis, label by label."""
        return [template.format(p) for these in self.phrasings for p in these]

    @property
    def groups(self) -> list[list[int]]:
        """Per label, the indices of its hypotheses in ``hypotheses``."""
        out, start = [], 0
        for these in self.phrasings:
            out.append(list(range(start, start + len(these))))
            start += len(these)
        return out

    def to_dict(self) -> dict:
        """label -> phrasings, as a presets file holds them."""
        return {label: list(p) for label, p in zip(self.labels, self.phrasings)}


def label_logits(logits: np.ndarray, groups: Sequence[Sequence[int]], aggregate: str, nli: NliLabels,
                 multi_label: bool) -> np.ndarray:
    """[texts, hypotheses, nli_classes] logits -> [texts, labels, nli_classes] logits that
    ``postprocess.label_probabilities`` turns into the labels' scores (see the module docstring); with one
    hypothesis per label, the hypotheses' own logits."""
    if all(len(g) == 1 for g in groups):
        return logits[:, [g[0] for g in groups]]
    logits = logits.astype(np.float64)
    pairwise = multi_label or len(groups) == 1  # the pipeline's entailment-vs-contradiction case
    per = logits[..., nli.entailment] - (logits[..., nli.contradiction] if pairwise else 0.0)
    reduce = np.max if aggregate == "max" else np.mean
    out = np.zeros((logits.shape[0], len(groups), logits.shape[-1]))
    out[..., nli.entailment] = np.stack([reduce(per[:, list(g)], axis=1) for g in groups], axis=1)
    return out  # pairwise: contradiction logit 0, so its softmax is the sigmoid of the aggregated log-odds
