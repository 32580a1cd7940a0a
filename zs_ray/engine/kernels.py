"""CPU kernels: faster forms of the same arithmetic (attention, oneDNN linears, a [CLS]-only last layer)."""

from __future__ import annotations

import math
import warnings

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
    """Wrap the last encoder layer of a BERT-family sequence classifier in ``FirstTokenLayer`` (DeBERTa-v2's
    in ``deberta.FirstTokenDebertaLayer``); returns a function that undoes it, or None where the model is not
    of either shape."""
    from zs_ray.engine import deberta

    if deberta.is_deberta_v2(model):
        return deberta.first_token_last_layer(model)
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


# --------------------------------------------------------------------------- int8 (CPU)
#
# ``precision="int8"``: every linear of the encoder runs fbgemm's dynamic int8 GEMM (what
# ``torch.ao.quantization.quantize_dynamic`` installs): the weight is quantized once, per output channel
# (symmetric int8); each call quantizes its input to uint8 over the input's own range and accumulates in
# int32. AVX512-VNNI where the CPU has it. Without VNNI, fbgemm's AVX2 kernels add two u8 x s8 products
# in int16 (``vpmaddubsw``), which saturates with 8-bit inputs and 8-bit weights; there the weights get 7
# bits (|q| <= 63, so 2 x 255 x 64 < 32768: never saturates) and the inputs keep their 8: on the tiny test
# model this agrees with fp32 far better than fbgemm's own answer, 7-bit inputs (``reduce_range``), which
# puts the coarser grid on the per-batch activation range instead of per-channel weights (top-1 agreement
# 62% -> see tests/test_engine_cpu.py for the bound). The classification head, LayerNorm, GELU, softmax
# and attention stay fp32.

def _int8_linear_class():
    import torch

    class Int8Linear(torch.nn.Module):
        """``nn.Linear`` as a dynamic int8 GEMM (fbgemm), weight quantized per output channel once to
        ``weight_max`` levels either side of zero (127, or 63 where the int16 sums could saturate)."""

        def __init__(self, linear: torch.nn.Linear, weight_max: int):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            weight = linear.weight.detach().float()
            scales = (weight.abs().amax(dim=1) / weight_max).clamp_min(1e-12).double()
            zeros = torch.zeros(weight.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # torch 2.13 flags quantized tensors as deprecated
                warnings.simplefilter("ignore", UserWarning)
                qweight = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
            bias = None if linear.bias is None else linear.bias.detach().float()
            self.packed = torch.ops.quantized.linear_prepack(qweight, bias)

        def forward(self, x):
            return torch.ops.quantized.linear_dynamic(x, self.packed, False)  # 8-bit inputs

    return Int8Linear


def int8_linears(module, vnni: bool) -> int:
    """Swap every fp32 ``nn.Linear`` under ``module`` for its dynamic int8 form (8-bit weights with VNNI,
    7-bit without); returns how many were swapped. Each is checked against the layer it replaces on a random input (int8's own rounding: 5%
    of the output's range); a layer that fails keeps fp32."""
    import torch

    cls = _int8_linear_class()
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child.weight.dtype != torch.float32:
                continue
            try:
                fast = cls(child, 127 if vnni else 63)
                x = torch.randn(3, 5, child.in_features)
                with torch.inference_mode():
                    ref, got = child(x), fast(x)
                scale = float(ref.abs().max()) + 1e-6
                if got.shape == ref.shape and float((got - ref).abs().max()) <= 0.05 * scale:
                    setattr(parent, name, fast)
                    swapped += 1
            except Exception:  # noqa: BLE001 - a torch without fbgemm's ops keeps the fp32 layer
                continue
    return swapped
