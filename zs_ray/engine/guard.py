"""The load guard: a mode serves only once its logits on a padded probe batch match transformers' fp32 model's.

Before any zs-ray kernel is installed, the plain fp32 model (transformers' own code) scores a probe batch: eight
pairs of random token ids from 4 to 160 tokens, in batches of mixed lengths, so that the key-padding mask, the
relative positions past DeBERTa's log-bucket boundary (128) and the batches' shortest rows are all exercised. After the
model is put in its mode (dtype, attention, oneDNN / int8 linears, [CLS]-only last layer, ONNX Runtime), it
scores the same batch; the largest difference of the NLI class probabilities (softmax over the model's
logits) must be within ``GUARD_BOUNDS[mode]``. A mode outside it is not used: an explicit ``--precision``
fails with one line, ``auto`` moves to the next candidate. A future architecture whose fast path is wrong is
then slow, never silently wrong.

The measure is, per pair, the largest |difference| of the class probabilities, averaged over the pairs (fp32:
the largest over all pairs). The bounds sit well above each mode's own rounding on the suite's discriminative
tiny models of ELECTRA, DeBERTa-v2, BERT and XLM-RoBERTa (measured on an Intel Xeon with AMX, two seeds each:
fp32 <= 1e-6; bf16 <= 0.016, fp16 <= 0.002; int8 <= 0.033, onnx-int8 <= 0.041) and well below what a wrong
mask or kernel gives (tests/test_architectures.py: a DeBERTa-v2 attention that ignores padding is refused).
"""

from __future__ import annotations

import numpy as np

from zs_ray.errors import ZsRayError

PROBE_LENGTHS = (160, 130, 96, 64, 48, 33, 24, 17, 9, 4)
PROBE_TOKENS = 512  # padded tokens per probe batch: several batches, each with padding
GUARD_BOUNDS = {"fp32": 1e-4, "bf16": 0.05, "fp16": 0.05, "int8": 0.1, "onnx-int8": 0.1}


def probe_batch(config) -> tuple[np.ndarray, np.ndarray]:
    """(token ids end to end, lengths) of the probe pairs, within the model's length limit."""
    limit = int(getattr(config, "max_position_embeddings", 512) or 512) - 2
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(getattr(config, "pad_token_id", 1) or 1)  # positions start after the padding index
    lengths = np.array(sorted({max(2, min(n, limit)) for n in PROBE_LENGTHS}, reverse=True))
    rng = np.random.default_rng(0)
    vocab = max(6, int(config.vocab_size))
    return rng.integers(5, vocab, size=int(lengths.sum())), lengths


def probabilities(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def difference(reference: np.ndarray, got: np.ndarray, exact: bool = False) -> float:
    """How far two [pairs, classes] logit arrays are apart: per pair the largest |difference| of the class
    probabilities, averaged over the pairs (one pair near a tie can move by rounding alone; a wrong kernel
    moves most of them), or the largest over all pairs when ``exact`` (fp32)."""
    if got.shape != reference.shape or not np.isfinite(got).all():
        return float("inf")
    diff = np.abs(probabilities(got.astype(np.float64)) - probabilities(reference.astype(np.float64))).max(axis=-1)
    return float(diff.max() if exact else diff.mean())


class GuardFailed(ZsRayError):
    """A mode's probe logits fall outside its bound: the mode must not serve this model here."""


def check(mode: str, reference: np.ndarray, got: np.ndarray, model: str) -> float:
    """Raise the one-line error of a mode whose probe logits fall outside its bound; return the difference."""
    diff = difference(reference, got, exact=mode == "fp32")
    bound = GUARD_BOUNDS[mode]
    if not diff <= bound:
        raise GuardFailed(f"--precision {mode} is not faithful for model {model!r} here: on a probe batch its "
                         f"class probabilities differ from fp32 by {diff:.2g} (bound {bound:g}); "
                         "choose fp32 or auto")
    return diff
