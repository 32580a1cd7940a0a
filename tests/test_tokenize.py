"""PairEncoder tokenizes each text once and joins it to every hypothesis; the pairs must equal what the
tokenizer's own pair encoding (the pipeline's call) makes, for every tokenizer family NLI models use."""

import dataclasses

import numpy as np
import pytest

from tests.builders import (
    build_bpe_tokenizer,
    build_tokenizer,
    build_unigram_tokenizer,
    mlsum_rows,
)
from tests.conftest import LABELS, TEMPLATE
from zs_ray import ZsRayError
from zs_ray.engine import PairEncoder

ROWS = mlsum_rows(12, seed=3)
TEXTS = ([r["summary"] for r in ROWS[:6]] + [r["text"] * 2 for r in ROWS[6:]]  # short, and far past 64 tokens
         + ["", "Gol.", "  espacios   raros \t y\nsaltos  ", "¿Qué pasó? ¡Ñandú, acción & «comillas» 😀 ½!",
            "palabra" * 60, " ".join(["x"] * 200)])
BUILDERS = {"wordpiece (ELECTRA)": build_tokenizer, "byte-level BPE (RoBERTa)": build_bpe_tokenizer,
            "unigram (DeBERTa-v2)": build_unigram_tokenizer}


def tokenizer_pairs(tok, texts, labels=LABELS, template=TEMPLATE, max_length=64):
    """The pipeline's tokenizer call: every (text, hypothesis) pair, truncation only_first."""
    hyps = [template.format(label) for label in labels]
    enc = tok([t for t in texts for _ in hyps], hyps * len(texts), truncation="only_first", max_length=max_length,
              return_attention_mask=False)
    return enc["input_ids"], enc.get("token_type_ids")


def as_lists(pairs, values):
    offsets = np.concatenate([[0], np.cumsum(pairs.lengths)])
    return [values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(pairs.lengths))]


@pytest.fixture(scope="module", params=list(BUILDERS))
def tokenizer_dir(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    kwargs = {"max_length": 64}
    return BUILDERS[request.param](path, **kwargs), path


def test_pairs_equal_the_tokenizers_pair_encoding(tokenizer_dir):
    tok, path = tokenizer_dir
    enc = PairEncoder(str(path), LABELS, TEMPLATE)
    assert enc.template is not None, "the one-tokenization path must be in use for this tokenizer family"
    pairs = enc.encode(TEXTS)
    ids, types = tokenizer_pairs(tok, TEXTS)
    assert pairs.n_texts == len(TEXTS) and pairs.n_labels == len(LABELS)
    assert as_lists(pairs, pairs.ids) == ids
    assert max(len(x) for x in ids) == 64  # truncation happened
    if types is None:
        assert pairs.type_ids is None
    else:
        assert as_lists(pairs, pairs.type_ids) == types
    assert enc.template is not None  # the check on the first real texts passed


def test_one_label_and_long_hypotheses(tokenizer_dir):
    tok, path = tokenizer_dir
    labels = ["deportes", "ciencia y tecnología y también sociedad, cultura y economía del país"]
    enc = PairEncoder(str(path), labels, "{}")
    ids, _ = tokenizer_pairs(tok, TEXTS, labels, "{}")
    pairs = enc.encode(TEXTS)
    assert as_lists(pairs, pairs.ids) == ids
    one = PairEncoder(str(path), ["deportes"], TEMPLATE).encode(TEXTS)
    assert as_lists(one, one.ids) == tokenizer_pairs(tok, TEXTS, ["deportes"])[0]


def test_left_truncating_tokenizer_uses_its_own_pair_encoding(tmp_path):
    tok = build_unigram_tokenizer(tmp_path, max_length=64, truncation_side="left")
    enc = PairEncoder(str(tmp_path), LABELS, TEMPLATE)
    assert enc.template is None
    pairs = enc.encode(TEXTS)
    ids, types = tokenizer_pairs(tok, TEXTS)
    assert as_lists(pairs, pairs.ids) == ids and as_lists(pairs, pairs.type_ids) == types


def test_a_template_that_disagrees_on_real_texts_is_dropped(tmp_path):
    tok = build_tokenizer(tmp_path, max_length=64)
    enc = PairEncoder(str(tmp_path), LABELS, TEMPLATE)
    enc.template = dataclasses.replace(enc.template, head=np.array([tok.unk_token_id], dtype=np.int32))
    pairs = enc.encode(TEXTS)
    assert enc.template is None
    assert as_lists(pairs, pairs.ids) == tokenizer_pairs(tok, TEXTS)[0]


@pytest.mark.parametrize("side", ["right", "left"])
def test_hypothesis_longer_than_the_model_is_one_line_error(tmp_path, side):
    build_unigram_tokenizer(tmp_path, max_length=16, truncation_side=side)
    with pytest.raises(ZsRayError, match="no room is left for the text") as err:
        PairEncoder(str(tmp_path), ["deportes " * 20], TEMPLATE)
    assert "\n" not in str(err.value)


