"""Model facts: where an NLI model puts entailment and contradiction, and loading/checking its config."""

from __future__ import annotations

from dataclasses import dataclass

from zs_ray.errors import ZsRayError


@dataclass(frozen=True)
class NliLabels:
    """Where entailment and contradiction sit in the model's logits."""

    entailment: int
    contradiction: int


def nli_labels(model_config) -> NliLabels:
    """Find the entailment index as the pipeline does: the first ``label2id``
    entry whose lower-cased name starts with "entail". Contradiction is index 0,
    or -1 when entailment itself is index 0."""
    for name, idx in (model_config.label2id or {}).items():
        if str(name).lower().startswith("entail"):
            idx = int(idx)
            return NliLabels(entailment=idx, contradiction=-1 if idx == 0 else 0)
    labels = ", ".join(str(k) for k in (model_config.label2id or {})) or "none"
    raise ZsRayError(
        f"model config has no entailment label (label2id: {labels}); zero-shot classification needs an NLI model"
    )


def load_model_config(model: str):
    """The model's config, with a one-line error when it cannot be found."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZsRayError(f"model {model!r} not found or not loadable: {first}") from None


def check_model(model: str) -> NliLabels:
    """Validate a model before any work: it exists and has an entailment label."""
    return nli_labels(load_model_config(model))
