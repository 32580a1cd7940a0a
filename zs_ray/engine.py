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

On CPU the scorer swaps in faster kernels for the same arithmetic (see "CPU
kernels" below): oneDNN GEMMs with packed weights (fp32 stays IEEE fp32), a
cache-friendly attention for bf16, GELU fused into its GEMM, and, for BERT-family
classifiers, a last layer computed for the [CLS] token only. Each is checked
against the layer it replaces when the model is loaded. On GPUs the model runs
transformers' SDPA kernels; inputs go through pinned memory without per-batch
synchronisation.

Scoring follows the pipeline: single-label is a softmax of the entailment logits
across one text's labels; multi-label (or a single label) is, per label, a
softmax over [contradiction, entailment] logits.
"""

from __future__ import annotations

import logging
import math
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

@dataclass
class Pairs:
    """Token ids of (text, hypothesis) pairs, end to end: ``n_labels`` consecutive pairs per text, in label
    order. Flat arrays, so that a Ray block holds them as Arrow lists and no Python list is made per pair."""

    ids: np.ndarray  # int32, every pair's token ids end to end
    lengths: np.ndarray  # int64, tokens per pair
    type_ids: Optional[np.ndarray]  # int32 like ``ids``, when the tokenizer makes token type ids
    n_labels: int

    @property
    def n_texts(self) -> int:
        return len(self.lengths) // self.n_labels if self.n_labels else 0


@dataclass(frozen=True)
class _PairTemplate:
    """How the tokenizer joins a premise and a hypothesis: ``head + premise + tails[i]`` (special tokens
    around them), with the matching token type ids, and how many premise tokens fit next to each
    hypothesis (``budgets[i]``)."""

    head: np.ndarray
    tails: tuple
    budgets: np.ndarray
    head_types: Optional[np.ndarray]
    premise_type: int
    tail_types: Optional[tuple]


class PairEncoder:
    """Tokenizes (premise, hypothesis) pairs exactly as the zero-shot pipeline does
    (``tokenizer(premises, hypotheses, truncation="only_first", max_length=model_max_length)``).

    The pipeline tokenizes each text once per candidate label; a fast tokenizer encodes the two
    sequences of a pair independently, truncates the first from the right and adds special tokens
    around them, so ``PairEncoder`` tokenizes each text once and joins it to each hypothesis itself
    (6x less tokenizer work with 6 labels: what keeps a GPU fed on long articles). How the tokenizer
    joins a pair is learnt from probe pairs at load and checked against the tokenizer's own pair
    encoding, at load and on the first texts it encodes; any difference, or a tokenizer that truncates
    from the left, and it uses the tokenizer's pair encoding for everything."""

    PROBE_TEXTS = 4  # real texts checked against the tokenizer's own pair encoding on the first call

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
        self.with_types = "token_type_ids" in self.tokenizer.model_input_names
        hyp_ids = self._single(self.hypotheses)
        self._check_room(hyp_ids)
        self.template = self._learn_template(hyp_ids)
        self._checked = self.template is None

    # -- the tokenizer's own pair encoding: the reference, and the fallback
    def _reference(self, texts: Sequence[str]) -> Pairs:
        n = len(self.hypotheses)
        try:
            enc = self.tokenizer([t for t in texts for _ in range(n)], self.hypotheses * len(texts),
                                 truncation="only_first", max_length=self.max_length,
                                 return_attention_mask=False, return_token_type_ids=self.with_types)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on impossible truncation
            raise ZsRayError(f"cannot tokenize a text with the hypotheses: {exc}") from None
        ids = enc["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lengths.sum()))
        types = None
        if self.with_types:
            types = np.fromiter((t for x in enc["token_type_ids"] for t in x), dtype=np.int32, count=len(flat))
        return Pairs(flat, lengths, types, n)

    def _single(self, texts: Sequence[str], max_length: Optional[int] = None):
        kwargs = {"truncation": True, "max_length": max_length} if max_length else {}
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False,
                             return_token_type_ids=False, **kwargs)
        return enc["input_ids"]

    def _check_room(self, hyp_ids: list) -> None:
        """Every hypothesis leaves room for at least one token of the text (else the tokenizer fails on
        every text that needs truncating)."""
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        for hypothesis, ids in zip(self.hypotheses, hyp_ids):
            if self.max_length - specials - len(ids) < 1:
                raise ZsRayError(f"hypothesis {hypothesis!r} takes {len(ids)} of the model's {self.max_length} "
                                 "tokens: no room is left for the text")

    def _learn_template(self, hyp_ids: list) -> Optional[_PairTemplate]:
        tok = self.tokenizer
        if getattr(tok, "truncation_side", "right") != "right" or not getattr(tok, "is_fast", False):
            return None
        probe_a = " ".join(self.hypotheses)
        a_ids = self._single([probe_a])[0]
        joined = tok(probe_a, self.hypotheses[0], return_attention_mask=False, return_token_type_ids=self.with_types)
        full, b_ids = list(joined["input_ids"]), hyp_ids[0]
        layout = _find_layout(full, a_ids, b_ids)
        if layout is None:
            return None
        p, m = layout  # special tokens before the premise, and between premise and hypothesis
        head, middle, suffix = full[:p], full[p + len(a_ids):p + len(a_ids) + m], full[p + len(a_ids) + m + len(b_ids):]
        specials = len(head) + len(middle) + len(suffix)
        budgets = np.array([self.max_length - specials - len(h) for h in hyp_ids], dtype=np.int64)
        head_types = tail_types = None
        premise_type = 0
        if self.with_types:
            types = list(joined["token_type_ids"])
            cut = (p, p + len(a_ids), p + len(a_ids) + m, p + len(a_ids) + m + len(b_ids))
            seg_a, seg_b = set(types[cut[0]:cut[1]]), set(types[cut[2]:cut[3]])
            if len(seg_a) != 1 or len(seg_b) != 1:
                return None
            premise_type, hyp_type = seg_a.pop(), seg_b.pop()
            head_types = np.array(types[:cut[0]], dtype=np.int32)
            tail_types = tuple(np.array(types[cut[1]:cut[2]] + [hyp_type] * len(h) + types[cut[3]:], dtype=np.int32)
                               for h in hyp_ids)
        template = _PairTemplate(
            head=np.array(head, dtype=np.int32),
            tails=tuple(np.array(middle + list(h) + suffix, dtype=np.int32) for h in hyp_ids),
            budgets=budgets, head_types=head_types, premise_type=premise_type, tail_types=tail_types)
        # Check on probes that need truncation and ones that do not, and on an empty text.
        probes = ["", probe_a, " ".join(self.hypotheses * (self.max_length // max(1, len(a_ids)) + 2))]
        return template if _same_pairs(self._join(probes, template), self._reference(probes)) else None

    def _join(self, texts: Sequence[str], template: _PairTemplate) -> Pairs:
        """Each text tokenized once, joined to every hypothesis by ``template``."""
        premises = self._single(texts, max_length=int(template.budgets.max()))
        n = len(template.tails)
        ids, types, lengths = [], [], np.empty(len(texts) * n, dtype=np.int64)
        for t, premise in enumerate(premises):
            premise = np.asarray(premise, dtype=np.int32)
            for i, tail in enumerate(template.tails):
                kept = premise[:template.budgets[i]]
                ids += (template.head, kept, tail)
                lengths[t * n + i] = len(template.head) + len(kept) + len(tail)
                if template.tail_types is not None:
                    types += (template.head_types, np.full(len(kept), template.premise_type, dtype=np.int32),
                              template.tail_types[i])
        type_ids = None
        if self.with_types:
            type_ids = np.concatenate(types) if types else np.empty(0, dtype=np.int32)
        return Pairs(np.concatenate(ids) if ids else np.empty(0, dtype=np.int32), lengths, type_ids, n)

    def encode(self, texts: Sequence[str]) -> Pairs:
        """Every (text, hypothesis) pair's token ids, as the pipeline's tokenizer call makes them."""
        texts = list(texts)
        if not texts:
            return Pairs(np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64),
                         np.empty(0, dtype=np.int32) if self.with_types else None, len(self.hypotheses))
        if self.template is None:
            return self._reference(texts)
        pairs = self._join(texts, self.template)
        if not self._checked:
            probe = texts[:self.PROBE_TEXTS]
            reference = self._reference(probe)
            self._checked = True
            if not _same_pairs(self._join(probe, self.template), reference):
                log.warning("tokenizer of this model joins pairs differently than learnt; using its own pair "
                            "encoding (slower on long texts)")
                self.template = None
                return self._reference(texts)
        return pairs


def _find_layout(full: list, a: list, b: list) -> Optional[tuple[int, int]]:
    """(tokens before ``a``, tokens between ``a`` and ``b``) where ``full`` = specials + a + specials + b +
    specials, or None when ``full`` is not laid out that way."""
    if not a or not b:
        return None
    for p in range(len(full) - len(a) - len(b) + 1):
        if full[p:p + len(a)] != a:
            continue
        for m in range(len(full) - p - len(a) - len(b) + 1):
            start = p + len(a) + m
            if full[start:start + len(b)] == b:
                return p, m
    return None


def _same_pairs(x: Pairs, y: Pairs) -> bool:
    return (np.array_equal(x.lengths, y.lengths) and np.array_equal(x.ids, y.ids)
            and (x.type_ids is None) == (y.type_ids is None)
            and (x.type_ids is None or np.array_equal(x.type_ids, y.type_ids)))


# --------------------------------------------------------------------------- CPU kernels
#
# Measured on the 2-core AMD EPYC (Zen 5, AVX512-BF16) this engine was tuned on, torch 2.13:
# * fp32 ``nn.Linear`` goes to MKL, which takes its AVX2 path on AMD CPUs (~190 GFLOP/s on 2 cores);
#   oneDNN's fp32 GEMM with a pre-packed weight runs the same IEEE fp32 product at ~460 GFLOP/s.
# * bf16 GEMMs (oneDNN either way) reach ~900 GFLOP/s; packing the weight adds 5-15%.
# * torch's CPU flash attention is slow in bf16 (slower than in fp32); plain bmm -> softmax -> bmm
#   in bf16 is 2.5-3x faster at every length we serve, and 10% faster again with the softmax done in
#   one pass (``_bmm_attention``). In fp32 the flash kernel is the fastest.
# * torch.compile (inductor, frozen weights) of the model reaches the same speed as these kernels at the
#   cost of a compile per batch shape in every worker, so it is not used.
# So on CPU every Linear runs through oneDNN with a packed weight (exact fp32 stays fp32), and bf16
# models use ``_bmm_attention``. GPUs keep transformers' SDPA (flash / memory-efficient kernels).

ATTENTION = "zs_ray_bmm"
SCORES_BYTES = 6 << 20  # attention scores computed at once: about the L2 caches of two cores


VALUE_PAD = 16  # v gets a column of ones (the row sums), padded to a whole SIMD width


def _bmm_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """softmax(q k^T * scaling + mask) v as bulk ops, a few sequences at a time so that their [heads, L, L]
    scores stay in cache (3x faster at L=512 than one pass over the whole batch).

    The softmax is taken apart: exp(scores) in place, the weighted sum with a column of ones beside v (so
    the same GEMM gives the row sums), then the [L, head_dim] result divided by them. That is one pass
    over the [L, L] scores instead of softmax's three (10% faster attention at L=512), with the same
    rounding (bf16 probabilities, fp32 accumulation). Without softmax's max subtraction, exp overflows for
    scores above ~88 (bf16 has fp32's range) and underflows for rows far below zero: any chunk whose row
    sums are not finite and positive is recomputed with ``torch.softmax``.

    ``attention_mask`` is the additive [batch, 1, 1, keys] key-padding mask the scorer builds, or None
    when the batch has no padding."""
    import torch

    if scaling is None:
        scaling = query.size(-1) ** -0.5
    batch, heads, length, head_dim = query.shape
    keys = key.shape[-2]
    rows = max(1, SCORES_BYTES // (heads * length * keys * query.element_size()))
    out = torch.empty((batch, length, heads, head_dim), dtype=query.dtype, device=query.device)

    def scores_of(part):
        scores = torch.matmul(query[part] * scaling, key[part].transpose(-1, -2))
        return scores if attention_mask is None else scores.add_(attention_mask[part])

    for start in range(0, batch, rows):
        part = slice(start, start + rows)
        scores = scores_of(part)
        ones = value.new_zeros((scores.shape[0], heads, keys, head_dim + VALUE_PAD))
        ones[..., :head_dim] = value[part]
        ones[..., head_dim] = 1
        weighted = torch.matmul(scores.exp_(), ones)
        sums = weighted[..., head_dim:head_dim + 1]
        if bool(((sums > 0) & (sums < math.inf)).all()):
            out[part] = (weighted[..., :head_dim] / sums).transpose(1, 2)
            continue
        out[part] = torch.matmul(torch.softmax(scores_of(part), dim=-1), value[part]).transpose(1, 2)
    return out, None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _bmm_attention)


def _onednn_linear_class():
    import torch

    class OneDnnLinear(torch.nn.Module):
        """``nn.Linear`` (optionally followed by an exact GELU, fused) through oneDNN, with a weight
        packed once. CPU inference only."""

        def __init__(self, linear: torch.nn.Linear, gelu: bool = False):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
            self.bias = None if linear.bias is None else linear.bias.detach()
            self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

        def forward(self, x):
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.attr, [], self.algorithm)

    return OneDnnLinear


def _same(reference, candidate, in_features: int, dtype) -> bool:
    """Whether ``candidate`` computes what ``reference`` does (fp32: to 1e-4 relative)."""
    import torch

    x = torch.randn(3, 5, in_features, dtype=dtype)
    with torch.inference_mode():
        ref, got = reference(x).float(), candidate(x).float()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    return got.shape == ref.shape and bool(torch.allclose(got, ref, rtol=tol, atol=tol * (ref.abs().max().item() + 1e-6)))


def onednn_linears(model) -> int:
    """Swap every ``nn.Linear`` of a CPU model for its oneDNN form, fusing the exact GELU of
    BERT-style intermediate layers; returns how many layers were swapped. Each swap is checked
    against the original on a random input first: a torch without the ops, or one whose result
    differs, keeps the original layer."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return 0
    try:
        cls = _onednn_linear_class()
    except Exception:  # noqa: BLE001 - any torch without the mkldnn ops
        return 0
    swapped = 0
    for parent in list(model.modules()):
        act = getattr(parent, "intermediate_act_fn", None)
        exact_gelu = type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is torch.nn.functional.gelu
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child.weight.device.type != "cpu":
                continue
            dtype = child.weight.dtype
            try:
                if name == "dense" and exact_gelu:
                    fused = cls(child, gelu=True)
                    if _same(lambda x: act(child(x)), fused, child.in_features, dtype):
                        setattr(parent, name, fused)
                        parent.intermediate_act_fn = torch.nn.Identity()
                        swapped += 1
                        continue
                fast = cls(child)
                if _same(child, fast, child.in_features, dtype):
                    setattr(parent, name, fast)
                    swapped += 1
            except Exception:  # noqa: BLE001
                continue
    return swapped


def _first_token_layer_class():
    import torch

    class FirstTokenLayer(torch.nn.Module):
        """The last encoder layer of a classifier that reads only the first token ([CLS] / <s>): keys and
        values for every token, the query, attention output and feed-forward for the first token only
        (~8% of a 12-layer forward). Returns hidden states of length 1."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
            att = self.layer.attention.self
            batch = hidden_states.shape[0]
            first = hidden_states[:, :1]
            shape = (batch, -1, att.num_attention_heads, att.attention_head_size)
            query = att.query(first).view(shape).transpose(1, 2)
            key = att.key(hidden_states).view(shape).transpose(1, 2)
            value = att.value(hidden_states).view(shape).transpose(1, 2)
            scaling = getattr(att, "scaling", None) or att.attention_head_size ** -0.5
            scores = torch.matmul(query * scaling, key.transpose(-1, -2)).float()  # [batch, heads, 1, keys]
            if attention_mask is not None:
                mask = attention_mask[:, :, :1, :]
                if mask.dtype == torch.bool:
                    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
                else:
                    scores = scores + mask.float()
            probs = torch.softmax(scores, dim=-1).to(value.dtype)
            context = torch.matmul(probs, value).transpose(1, 2).reshape(batch, 1, -1)
            return self.layer.feed_forward_chunk(self.layer.attention.output(context, first))

    return FirstTokenLayer


def first_token_last_layer(model):
    """Wrap the last encoder layer of a BERT-family sequence classifier in ``FirstTokenLayer``; returns
    a function that undoes it, or None where the model is not of that shape."""
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not layers or not len(layers):
        return None
    last = layers[-1]
    att = getattr(getattr(last, "attention", None), "self", None)
    needed = (att is not None and all(hasattr(att, n) for n in ("query", "key", "value", "num_attention_heads",
                                                                 "attention_head_size"))
              and hasattr(last.attention, "output") and hasattr(last, "feed_forward_chunk")
              and not getattr(last, "is_decoder", False) and not getattr(model.config, "is_decoder", False))
    if not needed:
        return None
    layers[-1] = _first_token_layer_class()(last)

    def undo():
        layers[-1] = last

    return undo


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


def default_max_tokens(device: str) -> int:
    """Padded tokens per forward pass: CPUs are at full speed from a few thousand tokens and lose cache
    locality beyond; GPUs want large batches."""
    return 65536 if device.startswith("cuda") else 4096


def default_batch_size(device: str) -> int:
    """Most pairs per forward pass; the token budget usually binds first."""
    return 1024 if device.startswith("cuda") else 64


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Cut pairs into batches, longest first: each batch holds at most ``batch_size`` pairs and at most
    ``max_tokens`` padded tokens (its rows x its longest pair), so short pairs travel in large batches
    and long ones in small ones, with almost no padding. Returns the pair indices of each batch."""
    order = np.argsort(-lengths, kind="stable")
    batches, start, n = [], 0, len(order)
    while start < n:
        width = max(1, int(lengths[order[start]]))
        rows = max(1, min(batch_size, max_tokens // width, n - start))
        batches.append(order[start:start + rows])
        start += rows
    return batches


class NliScorer:
    """Runs the NLI model over encoded pairs: sort by length, batch by a token budget, restore order."""

    def __init__(
        self,
        model: str,
        multi_label: bool = False,
        precision: str = "auto",
        device: Optional[str] = None,
        batch_size: Optional[int] = None,
        max_tokens: Optional[int] = None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        self.multi_label = multi_label
        self.batch_size = max(1, int(batch_size or default_batch_size(self.device)))
        self.max_tokens = int(max_tokens) if max_tokens else default_max_tokens(self.device)
        on_cpu = torch.device(self.device).type == "cpu"
        kwargs = {"dtype": self.dtype}
        if on_cpu and self.dtype != torch.float32:
            _register_attention()
            kwargs["attn_implementation"] = ATTENTION
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(model, **kwargs)
        except (OSError, ValueError) as exc:
            raise ZsRayError(f"model {model!r} not found or not loadable: {exc}") from None
        self.model.to(self.device).eval()
        self.nli = nli_labels(self.model.config)
        self.pad_id = self.model.config.pad_token_id or 0
        self.fast_linears = onednn_linears(self.model) if on_cpu else 0
        self.pin = torch.device(self.device).type == "cuda"
        self.first_token_only = self._prune_last_layer()

    def _prune_last_layer(self) -> bool:
        """Compute the last layer for the first token only, if the model allows it and a padded probe
        batch gives the same logits (fp32: 1e-4; half precision: its own rounding)."""
        import torch

        rng = np.random.default_rng(0)
        lengths = np.array([11, 7, 7, 3])
        flat = rng.integers(1, max(2, self.model.config.vocab_size), size=int(lengths.sum()))
        before = self.logits(flat, lengths)
        undo = first_token_last_layer(self.model)
        if undo is None:
            return False
        try:
            after = self.logits(flat, lengths)
            tol = 1e-4 if self.dtype == torch.float32 else 5e-2
            if np.allclose(after, before, rtol=tol, atol=tol * (np.abs(before).max() + 1e-6)):
                return True
        except Exception:  # noqa: BLE001 - any model whose layer does not fit; it keeps its own layer
            pass
        undo()
        return False

    def _batch_tensors(self, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, idx: np.ndarray,
                       flat_types: Optional[np.ndarray]):
        """Padded input tensors for pairs ``idx`` (longest first), built with numpy, no per-token Python."""
        import torch

        width = int(lengths[idx[0]])
        rows = len(idx)
        lens = lengths[idx]
        cols = np.arange(width)
        valid = cols[None, :] < lens[:, None]  # [rows, width]
        gather = (starts[idx][:, None] + cols[None, :])[valid]
        ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        ids[valid] = flat[gather]
        inputs = {"input_ids": torch.from_numpy(ids)}
        if flat_types is not None:
            types = np.zeros((rows, width), dtype=np.int64)
            types[valid] = flat_types[gather]
            inputs["token_type_ids"] = torch.from_numpy(types)
        if lens[-1] < width:  # padding present (rows are sorted longest first)
            if self.model.config._attn_implementation == ATTENTION:
                mask = torch.zeros((rows, 1, 1, width), dtype=self.dtype)
                mask.masked_fill_(torch.from_numpy(~valid)[:, None, None, :], torch.finfo(self.dtype).min)
            else:
                mask = torch.from_numpy(valid.astype(np.int64))
            inputs["attention_mask"] = mask
        return {k: self._to_device(v) for k, v in inputs.items()}

    def _to_device(self, tensor):
        """Host tensor -> the model's device; on a GPU through pinned memory, without waiting for the GPU."""
        if self.pin:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def logits(self, flat: np.ndarray, lengths: np.ndarray, flat_types: Optional[np.ndarray] = None) -> np.ndarray:
        """Logits [pairs, nli_classes] (fp32), in input order, of pairs given as one array of all their token
        ids end to end and their lengths (what an Arrow list column holds: no Python list per pair)."""
        import torch

        n = len(lengths)
        num_labels = self.model.config.num_labels
        if n == 0:
            return np.empty((0, num_labels), dtype=np.float32)
        lengths = np.asarray(lengths, dtype=np.int64)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        batches = plan_batches(lengths, self.batch_size, self.max_tokens)
        # Logits stay on the device until the end: no per-batch synchronisation, so on a GPU the host
        # builds batch k+1 while batch k runs.
        out = torch.empty((n, num_labels), dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            for idx in batches:
                inputs = self._batch_tensors(flat, starts, lengths, idx, flat_types)
                out[self._to_device(torch.from_numpy(idx))] = self.model(**inputs).logits.float()
        return out.cpu().numpy()

    def probabilities(self, pairs: Pairs) -> np.ndarray:
        """Per text, the probability of each candidate label (in label order): [texts, labels]."""
        if pairs.n_texts == 0:
            return np.empty((0, pairs.n_labels))
        logits = self.logits(pairs.ids, pairs.lengths, pairs.type_ids)
        return label_probabilities(logits.reshape(pairs.n_texts, pairs.n_labels, -1), self.nli, self.multi_label)


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


def torch_threads_for(cpus: float) -> int:
    """Intra-op threads for a CPU model worker holding ``cpus`` Ray CPUs (a fractional share rounds up:
    the read, tokenize and write stages take the rest only now and then)."""
    return max(1, min(os.cpu_count() or 1, math.ceil(cpus)))
