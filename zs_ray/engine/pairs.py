"""Pairing texts with hypotheses (CPU): the token ids of every (text, hypothesis) pair, as the pipeline makes them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from zs_ray.checks import check_template, parse_labels
from zs_ray.engine.verbalize import Verbalizer
from zs_ray.errors import ZsRayError

log = logging.getLogger(__name__)


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


def flatten(enc, with_types: bool, per_text: int) -> Pairs:
    """A tokenizer's batch encoding (``input_ids``, and ``token_type_ids`` with ``with_types``) as ``Pairs``:
    the sequences' tokens end to end, their lengths, ``per_text`` sequences per text."""
    ids = enc["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lengths.sum()))
    types = None
    if with_types:
        types = np.fromiter((t for x in enc["token_type_ids"] for t in x), dtype=np.int32, count=len(flat))
    return Pairs(flat, lengths, types, per_text)


def load_tokenizer(model: str):
    """(tokenizer, the length it truncates at, whether it makes token type ids) of a model, with a one-line
    error when it cannot be loaded."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise ZsRayError(f"tokenizer of model {model!r} not found or not loadable: {exc}") from None
    max_length = tokenizer.model_max_length
    if not max_length or max_length > 100_000:  # tokenizers without a limit report a huge number
        max_length = 512
    return tokenizer, max_length, "token_type_ids" in tokenizer.model_input_names


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

    def __init__(self, model: str, candidate_labels: Sequence[str], hypothesis_template: str,
                 verbalizer: Optional[Verbalizer] = None):
        self.labels = parse_labels(candidate_labels)
        template = check_template(hypothesis_template)
        if verbalizer is not None and tuple(verbalizer.labels) != self.labels:
            raise ZsRayError(f"the verbalizer's labels ({', '.join(verbalizer.labels)}) are not the candidate "
                             f"labels ({', '.join(self.labels)})")
        # One hypothesis per label, or (a verbalizer) per phrasing of each label, label by label.
        self.hypotheses = (verbalizer.hypotheses(template) if verbalizer is not None
                           else [template.format(label) for label in self.labels])
        self._load(model)

    @classmethod
    def for_hypotheses(cls, model: str, hypotheses: Sequence[str]) -> "PairEncoder":
        """An encoder of these hypotheses as given (``labels`` = the hypotheses): ``zs-ray tune`` pairs each
        text once with every distinct hypothesis of its candidates."""
        encoder = cls.__new__(cls)
        encoder.labels, encoder.hypotheses = tuple(hypotheses), list(hypotheses)
        encoder._load(model)
        return encoder

    def _load(self, model: str) -> None:
        self.tokenizer, self.max_length, self.with_types = load_tokenizer(model)
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
        return flatten(enc, self.with_types, n)

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
