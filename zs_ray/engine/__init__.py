"""The zero-shot NLI engine: what transformers' zero-shot pipeline computes, faster.

No Ray here: the engine is usable on its own (``ZeroShotClassifier``) and is
wrapped by the Ray stages in ``zs_ray.classify``. It has two halves so that a Ray
job can run them on different resources:

* ``PairEncoder`` (CPU): token ids of every (text, hypothesis) pair exactly as the
  pipeline makes them (``truncation="only_first"`` at ``model_max_length``), tokenizing
  each text once rather than once per label.
* ``NliScorer`` (GPU or CPU): sorts the pairs by length, cuts them into batches by a
  padded-token budget (``max_tokens``, at most ``batch_size`` rows), pads each batch
  only to its own longest pair, runs the model and returns per-text label
  probabilities in input order.

On CPU the scorer swaps in faster kernels for the same arithmetic (see
``kernels``): oneDNN GEMMs with packed weights (fp32 stays IEEE fp32), a
cache-friendly attention for bf16 (models that call transformers' attention
interface), GELU fused into its GEMM, and, for BERT-family and DeBERTa-v2
classifiers, a last layer computed for the [CLS] token only. DeBERTa-v2 (which has
its own attention) gets zs-ray's disentangled attention on every device
(``deberta``). Each is checked against the layer it replaces when the model is
loaded, and then the whole model in its mode against transformers' own fp32
logits on a padded probe batch (``guard``): a mode outside its bound never serves. ``precision="int8"`` (CPU)
runs the encoder's linears as fbgemm dynamic int8 GEMMs (VNNI where present);
``precision="onnx-int8"`` (CPU) exports the model to ONNX Runtime and runs it
int8-quantized (``onnx``); ``auto`` on CPU measures this machine's candidate modes once per model and
takes the fastest faithful one (``calibrate``). On GPUs the model runs
transformers' SDPA kernels; inputs go through pinned memory without per-batch
synchronisation.

Scoring follows the pipeline: single-label is a softmax of the entailment logits
across one text's labels; multi-label (or a single label) is, per label, a
softmax over [contradiction, entailment] logits.

Modules:

* ``nli``: model facts (where entailment / contradiction sit; loading and checking a model's config).
* ``device``: device, precision (``auto`` from what torch runs: ``cpu_capability``), agreement bounds, CPU threads.
* ``pairs``: ``Pairs`` and ``PairEncoder`` (pairing texts with hypotheses).
* ``batching``: length sorting and the padded-token budget (``plan_batches``).
* ``postprocess``: logits to label probabilities, labels ranked by score.
* ``verbalize``: several phrasings per label (``Verbalizer``), a label's logit from its phrasings' (max or mean).
* ``kernels``: the CPU kernels (bf16 attention, oneDNN linears, int8 linears, [CLS]-only last layer).
* ``deberta``: DeBERTa-v2's disentangled attention and [CLS]-only last layer, exact in fp32.
* ``guard``: the load-time check of a mode against transformers' fp32 logits.
* ``onnx``: the ONNX Runtime int8 backend (export once per machine, check, quantize, cache).
* ``calibrate``: ``auto`` on CPU, measured per machine and model, stored.
* ``model``: ``NliScorer``, the model wrapper.
* ``supervised``: a supervised text classifier as the pre-annotator (its kind, ``TextEncoder``, ``ClassMap``).
* ``classifier``: ``ZeroShotClassifier``, the two halves together.
"""

from zs_ray.engine.batching import default_batch_size, default_max_tokens, plan_batches
from zs_ray.engine.classifier import ZeroShotClassifier
from zs_ray.engine.deberta import fast_attention
from zs_ray.engine.device import (
    AGREEMENT_BOUNDS,
    cpu_candidates,
    cpu_capability,
    cpu_flags,
    cpu_int8_available,
    cpu_int8_vnni,
    cpu_runs_native_bf16,
    precision_name,
    resolve_device,
    resolve_dtype,
    resolve_precision,
    torch_threads_for,
)
from zs_ray.engine.guard import GUARD_BOUNDS
from zs_ray.engine.kernels import ATTENTION, first_token_last_layer, int8_linears, onednn_linears
from zs_ray.engine.model import NliScorer
from zs_ray.engine.nli import NliLabels, check_model, load_model_config, nli_labels
from zs_ray.engine.pairs import PairEncoder, Pairs
from zs_ray.engine.postprocess import label_probabilities, ranked
from zs_ray.engine.supervised import ClassMap, TextEncoder, class_map, model_classes, model_kind
from zs_ray.engine.verbalize import AGGREGATES, Verbalizer, label_logits

__all__ = [
    "AGGREGATES",
    "AGREEMENT_BOUNDS",
    "Verbalizer",
    "label_logits",
    "ClassMap",
    "TextEncoder",
    "class_map",
    "model_classes",
    "model_kind",
    "ATTENTION",
    "GUARD_BOUNDS",
    "NliLabels",
    "NliScorer",
    "PairEncoder",
    "Pairs",
    "ZeroShotClassifier",
    "check_model",
    "cpu_candidates",
    "cpu_capability",
    "cpu_flags",
    "cpu_int8_available",
    "cpu_int8_vnni",
    "cpu_runs_native_bf16",
    "default_batch_size",
    "default_max_tokens",
    "fast_attention",
    "first_token_last_layer",
    "int8_linears",
    "label_probabilities",
    "load_model_config",
    "nli_labels",
    "onednn_linears",
    "plan_batches",
    "precision_name",
    "ranked",
    "resolve_device",
    "resolve_dtype",
    "resolve_precision",
    "torch_threads_for",
]
