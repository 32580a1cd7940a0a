"""DeBERTa-v2 (mDeBERTa-v3-xnli, the model of de, fr, ru and tu): its disentangled attention, computed faster.

transformers runs DeBERTa-v2 in its own eager ``DisentangledSelfAttention`` only (no SDPA, no attention
interface). Per layer and batch it projects the 2S relative embeddings through the key and query projections
again, copies them once per sequence and head (``repeat``), multiplies every query and key with all 2S
position vectors however short the sequence is, and gathers the [L, L] content->position (c2p) and
position->content (p2c) terms out of [L, 2S] products. ``DisentangledAttention`` computes the same scores
with less work, exactly in fp32:

* the position projections depend on the weights only: projected once at load, per head ([H, 2S, d]);
* a sequence of L tokens needs only its 2L - 1 relative offsets: the position table is cut to them (summaries
  of ~60 tokens use ~120 of mDeBERTa's 512 rows);
* c2p[i, j] and p2c[i, j] depend on i - j only, so they are read out of the [L, 2L - 1] products through a
  strided view (no gather, no [L, L] copy);
* a few sequences (and heads) at a time, so their [L, L] scores stay in cache, and the key-padding mask is
  added rather than a [B, 1, L, L] query x key mask filled in.

``FirstTokenDebertaLayer`` computes the last layer for the [CLS] token only (the classifier's pooler reads
nothing else): keys and values for every token, the query, attention, output and feed-forward for one.

Padded query rows attend to the valid keys here (transformers masks them out entirely); no valid token reads a
padded one, so the [CLS] logits are the same. ``NliScorer`` checks the whole model against transformers' own
fp32 logits on a padded probe batch before it serves (``guard``).
"""

from __future__ import annotations

import functools

SCORES_BYTES = {"cpu": 6 << 20, "cuda": 1 << 30}  # [L, L] scores computed at once (CPU: about two cores' L2)


def is_deberta_v2(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "deberta-v2"


def _layers(model):
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    return encoder, getattr(encoder, "layer", None)


@functools.lru_cache(maxsize=None)
def _modules():
    import torch

    class DisentangledAttention(torch.nn.Module):
        """transformers' ``DisentangledSelfAttention`` (eval) with the position terms precomputed and read through
        strided views; same call and return as the module it wraps."""

        def __init__(self, att, rel_embeddings):
            super().__init__()
            self.att = att
            self.heads, self.head_dim = att.num_attention_heads, att.attention_head_size
            kinds = att.pos_att_type if att.relative_attention else []
            self.c2p, self.p2c = "c2p" in kinds, "p2c" in kinds
            self.scale = (self.head_dim * (1 + self.c2p + self.p2c)) ** -0.5
            self._index = {}
            if self.c2p or self.p2c:
                span = att.pos_ebd_size
                rel = rel_embeddings[:2 * span]
                with torch.inference_mode(False), torch.no_grad():
                    key = att.key_proj if att.share_att_key else getattr(att, "pos_key_proj", None)
                    query = att.query_proj if att.share_att_key else getattr(att, "pos_query_proj", None)
                    self.pos_key = self._per_head(key(rel)) if self.c2p else None  # [H, 2S, d]
                    self.pos_query = self._per_head(query(rel)) * self.scale if self.p2c else None

        def _per_head(self, x):
            return x.view(x.shape[0], self.heads, self.head_dim).transpose(0, 1).contiguous().detach()

        def offsets_index(self, length: int, device):
            """Rows of the position table for the offsets L-1, L-2, ..., -(L-1) (i - j, descending)."""
            index = self._index.get((length, device))
            if index is None:
                from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

                att = self.att
                offsets = torch.arange(length - 1, -length, -1, dtype=torch.long)
                if att.position_buckets > 0 and att.max_relative_positions > 0:
                    offsets = make_log_bucket_position(offsets, att.position_buckets, att.max_relative_positions)
                span = att.pos_ebd_size
                index = torch.clamp(offsets.long() + span, 0, 2 * span - 1).to(device)
                self._index[(length, device)] = index
            return index

        def heads_of(self, x):
            """[B, L, H*d] -> [H, B, L, d] (contiguous)."""
            batch, length = x.shape[:2]
            return x.view(batch, length, self.heads, self.head_dim).permute(2, 0, 1, 3).contiguous()

        def forward(self, hidden_states, attention_mask, output_attentions=False, query_states=None,
                    relative_pos=None, rel_embeddings=None):
            att = self.att
            batch, length = hidden_states.shape[:2]
            query = self.heads_of(att.query_proj(hidden_states if query_states is None else query_states))
            query.mul_(self.scale)
            key = self.heads_of(att.key_proj(hidden_states))
            value = self.heads_of(att.value_proj(hidden_states))
            mask = key_padding(attention_mask, query.dtype)  # [B, 1, L] additive, or None
            c2p_table = p2c_table = None
            if self.c2p or self.p2c:
                index = self.offsets_index(length, query.device)
                if self.c2p:
                    c2p_table = self.pos_key.index_select(1, index).transpose(1, 2)  # [H, d, 2L-1]
                if self.p2c:
                    p2c_table = self.pos_query.index_select(1, index.flip(0)).transpose(1, 2)
            out = torch.empty_like(query)
            per_seq = self.heads * length * length * query.element_size()
            budget = SCORES_BYTES["cuda" if query.is_cuda else "cpu"]
            rows = max(1, budget // per_seq)
            head_step = self.heads if rows > 1 else max(1, budget // (length * length * query.element_size()))
            for b0 in range(0, batch, rows):
                b1 = min(batch, b0 + rows)
                for h0 in range(0, self.heads, head_step):
                    h1 = min(self.heads, h0 + head_step)
                    q, k = query[h0:h1, b0:b1], key[h0:h1, b0:b1]
                    scores = torch.matmul(q, k.transpose(-1, -2))  # [h, b, L, L]
                    if c2p_table is not None:
                        scores += _by_offset(torch.bmm(q.reshape(h1 - h0, -1, self.head_dim),
                                                       c2p_table[h0:h1]), b1 - b0, length)
                    if p2c_table is not None:
                        scores += _by_offset(torch.bmm(k.reshape(h1 - h0, -1, self.head_dim),
                                                       p2c_table[h0:h1]), b1 - b0, length).transpose(-1, -2)
                    if mask is not None:
                        scores += mask[b0:b1]
                    out[h0:h1, b0:b1] = torch.matmul(torch.softmax(scores, dim=-1), value[h0:h1, b0:b1])
            return out.permute(1, 2, 0, 3).reshape(batch, length, -1), None

    class FirstTokenDebertaLayer(torch.nn.Module):
        """The last ``DebertaV2Layer`` for the first token only: returns hidden states of length 1."""

        def __init__(self, layer, attention):
            super().__init__()
            self.layer, self.attention = layer, attention

        def forward(self, hidden_states, attention_mask, query_states=None, relative_pos=None, rel_embeddings=None,
                    output_attentions=False):
            fast, att = self.attention, self.attention.att
            batch, length = hidden_states.shape[:2]
            first = hidden_states[:, :1]
            query = fast.heads_of(att.query_proj(first))[:, :, 0] * fast.scale  # [H, B, d]
            key = fast.heads_of(att.key_proj(hidden_states))  # [H, B, L, d]
            value = fast.heads_of(att.value_proj(hidden_states))
            scores = torch.matmul(key, query.unsqueeze(-1)).squeeze(-1)  # [H, B, L]
            if fast.c2p or fast.p2c:
                index = fast.offsets_index(length, first.device)[length - 1:]  # offsets 0, -1, ..., -(L-1)
                if fast.c2p:  # q_0 . pos_key[offset(0 - j)]
                    scores += torch.bmm(query, fast.pos_key.index_select(1, index).transpose(1, 2))
                if fast.p2c:  # k_j . pos_query[offset(0 - j)]
                    scores += (key * fast.pos_query.index_select(1, index)[:, None]).sum(-1)
            mask = key_padding(attention_mask, scores.dtype)
            if mask is not None:
                scores += mask[:, 0]
            probs = torch.softmax(scores, dim=-1)  # [H, B, L]
            context = torch.matmul(probs.unsqueeze(-2), value)[:, :, 0]  # [H, B, d]
            context = context.permute(1, 0, 2).reshape(batch, 1, -1)
            attention_output = self.layer.attention.output(context, first)
            out = self.layer.output(self.layer.intermediate(attention_output), attention_output)
            return out, None

    return DisentangledAttention, FirstTokenDebertaLayer


def _by_offset(products, batch: int, length: int):
    """[h, b*L, 2L-1] products with the offsets L-1 ... -(L-1) -> the [h, b, L, L] view whose [i, j] is
    column L-1-i+j of row i (offset i - j): rows advance by 2L-2 elements, columns by 1."""
    width = 2 * length - 1
    h = products.shape[0]
    return products.as_strided((h, batch, length, length), (batch * length * width, length * width, width - 1, 1),
                               products.storage_offset() + length - 1)


def key_padding(attention_mask, dtype):
    """The additive key-padding mask [B, 1, L] of DeBERTa's [B, 1, L, L] (or [B, L]) 0/1 mask, or None: the
    first token's row holds the keys' mask (the first token is never padding)."""
    import torch

    if attention_mask is None:
        return None
    keep = attention_mask[:, 0, 0, :] if attention_mask.dim() == 4 else attention_mask
    keep = keep.bool()
    if bool(keep.all()):
        return None
    mask = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return mask.masked_fill_(~keep, torch.finfo(dtype).min)[:, None, :]


def fast_attention(model) -> int:
    """Swap every DeBERTa-v2 layer's attention for ``DisentangledAttention``; returns how many were swapped
    (0 for other architectures)."""
    if not is_deberta_v2(model):
        return 0
    encoder, layers = _layers(model)
    if not layers or not hasattr(encoder, "get_rel_embedding"):
        return 0
    import torch

    cls, _ = _modules()
    with torch.no_grad():
        rel = encoder.get_rel_embedding()
    swapped = 0
    for layer in layers:
        att = getattr(getattr(layer, "attention", None), "self", None)
        if type(att).__name__ == "DisentangledSelfAttention":
            layer.attention.self = cls(att, rel)
            swapped += 1
    return swapped


def first_token_last_layer(model):
    """Wrap the last DeBERTa-v2 layer in ``FirstTokenDebertaLayer`` (its attention must be a
    ``DisentangledAttention``: ``fast_attention`` first); returns an undo function, or None."""
    if not is_deberta_v2(model):
        return None
    encoder, layers = _layers(model)
    if not layers or getattr(encoder, "conv", None) is not None and len(layers) == 1:
        return None
    last = layers[-1]
    fast_cls, first_cls = _modules()
    if not isinstance(getattr(getattr(last, "attention", None), "self", None), fast_cls):
        return None
    layers[-1] = first_cls(last, last.attention.self)

    def undo():
        layers[-1] = last

    return undo
