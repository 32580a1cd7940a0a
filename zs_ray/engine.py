"""The zero-shot NLI engine: what transformers' zero-shot pipeline computes, faster.

No Ray here: the engine is usable on its own (``ZeroShotClassifier``) and is
wrapped by the Ray stages in ``zs_ray.stages``. It has two halves so that a Ray
job can run them on different resources:

* ``PairEncoder`` (CPU): tokenizes every (text, hypothesis) pair exactly as the
  pipeline does (``truncation="only_first"`` at ``model_max_length``).
* ``NliScorer`` (GPU or CPU): sorts the pairs by length, batches them, pads each
  batch only to its own longest pair, runs the model and returns per-text label
  probabilities in input order (as sentence-transformers' CrossEncoder does).

Scoring follows the pipeline: single-label is a softmax of the entailment logits
across one text's labels; multi-label (or a single label) is, per label, a
softmax over [contradiction, entailment] logits.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from zs_ray.checks import check_precision, check_template, parse_labels
from zs_ray.errors import ZsRayError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model facts

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


# --------------------------------------------------------------------------- devices and precision

def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: Optional[str] = None) -> str:
    import torch

    if device:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(precision: str, device: str):
    """torch dtype for a precision name. ``auto`` picks the fastest precision the
    hardware runs well: bf16 on GPUs that support it (else fp16), bf16 on CPUs
    with native bf16 instructions (AVX512-BF16 / AMX), else fp32."""
    import torch

    check_precision(precision)
    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device == "cpu" and _cpu_has_native_bf16():
            precision = "bf16"
        else:
            precision = "fp32"
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# --------------------------------------------------------------------------- tokenization (CPU)

class PairEncoder:
    """Tokenizes (premise, hypothesis) pairs like the zero-shot pipeline.

    ``encode(texts)`` returns, per text, one token id list per candidate label
    (and the matching token type ids when the model uses them)."""

    def __init__(self, model: str, candidate_labels: Sequence[str], hypothesis_template: str):
        from transformers import AutoTokenizer

        self.labels = parse_labels(candidate_labels)
        self.hypotheses = [check_template(hypothesis_template).format(label) for label in self.labels]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise ZsRayError(f"tokenizer of model {model!r} not found or not loadable: {exc}") from None
        self.max_length = self.tokenizer.model_max_length
        if not self.max_length or self.max_length > 100_000:  # tokenizers without a limit report a huge number
            self.max_length = 512

    def encode(self, texts: Sequence[str]) -> dict[str, list]:
        if not texts:
            return {"input_ids": []}
        n = len(self.hypotheses)
        premises = [text for text in texts for _ in range(n)]
        hypotheses = self.hypotheses * len(texts)
        enc = self.tokenizer(
            premises,
            hypotheses,
            truncation="only_first",
            max_length=self.max_length,
            return_attention_mask=False,
        )
        out = {"input_ids": [enc["input_ids"][i * n:(i + 1) * n] for i in range(len(texts))]}
        if "token_type_ids" in enc:
            out["token_type_ids"] = [enc["token_type_ids"][i * n:(i + 1) * n] for i in range(len(texts))]
        return out


# --------------------------------------------------------------------------- model (GPU or CPU)

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


class NliScorer:
    """Runs the NLI model over encoded pairs: sort by length, batch, restore order."""

    def __init__(
        self,
        model: str,
        multi_label: bool = False,
        precision: str = "auto",
        device: Optional[str] = None,
        batch_size: int = 64,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        self.multi_label = multi_label
        self.batch_size = batch_size
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(model, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise ZsRayError(f"model {model!r} not found or not loadable: {exc}") from None
        self.model.to(self.device).eval()
        self.nli = nli_labels(self.model.config)
        self.pad_id = self.model.config.pad_token_id or 0

    def logits(self, input_ids: Sequence[Sequence[int]], token_type_ids=None) -> np.ndarray:
        """Logits [pairs, nli_classes] (fp32) for pairs in input order."""
        import torch

        n = len(input_ids)
        out = np.empty((n, self.model.config.num_labels), dtype=np.float32)
        if n == 0:
            return out
        lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                width = int(lengths[idx[0]])
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                types = torch.zeros((len(idx), width), dtype=torch.long) if token_type_ids is not None else None
                for row, i in enumerate(idx):
                    length = int(lengths[i])
                    ids[row, :length] = torch.as_tensor(input_ids[i])
                    mask[row, :length] = 1
                    if types is not None:
                        types[row, :length] = torch.as_tensor(token_type_ids[i])
                inputs = {"input_ids": ids, "attention_mask": mask}
                if types is not None:
                    inputs["token_type_ids"] = types
                inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
                out[idx] = self.model(**inputs).logits.float().cpu().numpy()
        return out

    def probabilities(self, encoded: dict[str, list]) -> np.ndarray:
        """Per text, the probability of each candidate label (in label order): [texts, labels]."""
        per_text = encoded["input_ids"]
        if not per_text:
            return np.empty((0, 0))
        n_labels = len(per_text[0])
        flat_ids = [ids for pairs in per_text for ids in pairs]
        types = encoded.get("token_type_ids")
        flat_types = [t for pairs in types for t in pairs] if types is not None else None
        logits = self.logits(flat_ids, flat_types).reshape(len(per_text), n_labels, -1)
        return label_probabilities(logits, self.nli, self.multi_label)


def ranked(labels: Sequence[str], probs: np.ndarray) -> tuple[list[str], list[float]]:
    """Labels and scores sorted by descending score, as the pipeline returns them."""
    order = np.argsort(-probs, kind="stable")
    return [labels[i] for i in order], [float(probs[i]) for i in order]


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
        batch_size: int = 64,
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


def torch_threads_for(cpus: float) -> int:
    """Intra-op threads for a CPU model worker holding ``cpus`` Ray CPUs."""
    return max(1, min(os.cpu_count() or 1, round(cpus)))
