"""The engine alone (no Ray): scores equal transformers' zero-shot pipeline in fp32."""

import numpy as np
import pytest

from tests.builders import build_nli_model, mlsum_rows
from tests.conftest import LABELS, TEMPLATE
from zs_ray import ZeroShotClassifier, ZsRayError
from zs_ray.engine import check_model, label_probabilities, nli_labels, plan_batches

ROWS = mlsum_rows(24, seed=7)
# Summaries of many lengths, plus full articles far past the tiny model's 128-token limit (truncation).
TEXTS = [r["summary"] for r in ROWS[:18]] + [r["text"] * 3 for r in ROWS[18:]] + ["Gol.", "¿Qué pasó ayer en el congreso?"]


def by_label(result):
    return dict(zip(result["labels"], result["scores"]))


def assert_same(ours, reference, tol=1e-4):
    assert len(ours) == len(reference)
    for o, r in zip(ours, reference):
        assert o["sequence"] == r["sequence"]
        assert set(o["labels"]) == set(r["labels"])
        ref = by_label(r)
        for label, score in by_label(o).items():
            assert score == pytest.approx(ref[label], abs=tol), (label, o, r)
        assert o["scores"] == sorted(o["scores"], reverse=True)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_equals_pipeline(nli_model, pipeline_factory, multi_label, batch_size):
    reference = pipeline_factory(nli_model)(TEXTS, candidate_labels=LABELS, hypothesis_template=TEMPLATE,
                                            multi_label=multi_label)
    clf = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, multi_label=multi_label, precision="fp32",
                             batch_size=batch_size)
    assert_same(clf(TEXTS), reference)


@pytest.mark.parametrize("multi_label", [False, True])
def test_entailment_index_zero(nli_model_entail0, pipeline_factory, multi_label):
    reference = pipeline_factory(nli_model_entail0)(TEXTS, candidate_labels=LABELS, hypothesis_template=TEMPLATE,
                                                    multi_label=multi_label)
    clf = ZeroShotClassifier(nli_model_entail0, ",".join(LABELS), TEMPLATE, multi_label=multi_label,
                             precision="fp32")
    assert nli_labels(clf.scorer.model.config).entailment == 0
    assert_same(clf(TEXTS), reference)


def test_single_label_uses_entailment_vs_contradiction(nli_model, pipeline_factory):
    # With one candidate label the pipeline scores it as in multi-label mode (a softmax over one label is 1.0).
    reference = pipeline_factory(nli_model)(TEXTS, candidate_labels=["deportes"], hypothesis_template=TEMPLATE)
    out = ZeroShotClassifier(nli_model, ["deportes"], TEMPLATE, precision="fp32")(TEXTS)
    assert_same(out, reference)
    assert len({round(r["scores"][0], 4) for r in out}) > 3


def test_tiny_model_is_discriminative(nli_model):
    """The fixture must make a wrong softmax axis or entailment index visible: varied, untied scores."""
    out = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="fp32")(TEXTS)
    tops = {r["labels"][0] for r in out}
    assert len(tops) >= 3
    assert np.mean([r["scores"][0] for r in out]) > 0.25
    assert all(r["scores"][0] - r["scores"][1] > 1e-6 for r in out)


def test_single_string_input_returns_one_dict(nli_model, pipeline_factory):
    text = TEXTS[0]
    out = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="fp32")(text)
    reference = pipeline_factory(nli_model)(text, candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    assert isinstance(out, dict)
    assert_same([out], [reference])


@pytest.mark.parametrize("max_tokens", [1, 150, 700])
def test_token_budget_batches_equal_pipeline(nli_model, pipeline_factory, max_tokens):
    """Batches cut by a padded-token budget (long pairs alone, short ones many together) change nothing in fp32."""
    reference = pipeline_factory(nli_model)(TEXTS, candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    clf = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="fp32", batch_size=1000)
    clf.scorer.max_tokens = max_tokens
    assert_same(clf(TEXTS), reference)


def test_plan_batches_respects_budget_and_covers_every_pair():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 512, size=500)
    for batch_size, max_tokens in [(64, 4096), (7, 100000), (1000, 300), (64, 1)]:
        batches = plan_batches(lengths, batch_size, max_tokens)
        seen = np.concatenate(batches)
        assert sorted(seen.tolist()) == list(range(len(lengths)))
        for idx in batches:
            width = lengths[idx[0]]
            assert width == lengths[idx].max()  # the first pair is the longest: the batch's padded width
            assert len(idx) <= batch_size
            assert len(idx) == 1 or len(idx) * width <= max_tokens


@pytest.mark.parametrize("scores_bytes", [1, 1 << 30])
def test_bmm_attention_equals_sdpa(monkeypatch, scores_bytes):
    """The CPU bf16 attention (scores, softmax, weighted sum; chunked or not) computes SDPA with a key-padding mask."""
    import torch

    from zs_ray.engine import kernels

    monkeypatch.setattr(kernels, "SCORES_BYTES", scores_bytes)
    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 3, 17, 8) for _ in range(3))
    lengths = torch.tensor([17, 17, 12, 5, 1])
    pad = torch.arange(17)[None, :] >= lengths[:, None]
    additive = torch.zeros(5, 1, 1, 17).masked_fill_(pad[:, None, None, :], torch.finfo(torch.float32).min)
    got, _ = kernels._bmm_attention(None, q, k, v, additive, scaling=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :], scale=0.3)
    assert torch.allclose(got, want.transpose(1, 2), atol=1e-5)
    got, _ = kernels._bmm_attention(None, q, k, v, None)
    assert torch.allclose(got, torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2), atol=1e-5)
    # Scores past exp's range (overflow, and rows whose every exp underflows) take the max-subtracting
    # softmax; float64 keeps the reference well conditioned at such magnitudes.
    q64, k64, v64 = q.double(), k.double().abs(), v.double()
    mask64 = torch.zeros(5, 1, 1, 17, dtype=torch.float64).masked_fill_(pad[:, None, None, :], -1e300)
    for big in (400 * q64, -400 * q64.abs() - 1000):
        got, _ = kernels._bmm_attention(None, big, k64, v64, mask64)
        want = torch.softmax(big @ k64.transpose(-1, -2) / 8 ** 0.5 + mask64, -1) @ v64
        assert not torch.isfinite(torch.exp(big @ k64.transpose(-1, -2) / 8 ** 0.5)).all() or big.max() < 0
        assert torch.allclose(got, want.transpose(1, 2), atol=1e-9)


def test_bmm_attention_bf16_rounding_like_softmax():
    """In bf16, the one-pass softmax rounds no worse than bf16 softmax + matmul (vs an fp32 reference)."""
    import torch

    from zs_ray.engine import kernels

    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 6, 128, 64) for _ in range(3))
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    got, _ = kernels._bmm_attention(None, qb, kb, vb, None)
    plain = torch.matmul(torch.softmax(torch.matmul(qb * 0.125, kb.transpose(-1, -2)), -1), vb).transpose(1, 2)
    assert (got.float() - exact).abs().max() <= 1.5 * (plain.float() - exact).abs().max()


def test_cpu_fast_paths_are_in_use(nli_model):
    """The equivalence tests above must exercise the oneDNN layers and, in bf16, the CPU attention."""
    import torch

    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    exact = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="fp32")
    n_linear = 2 * 6 + 2  # tiny model: 2 layers x (q, k, v, attention out, intermediate, output) + head
    assert exact.scorer.fast_linears == n_linear
    bf16 = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="bf16")
    from zs_ray.engine import cpu_runs_native_bf16

    # Without native bf16 oneDNN may have no bf16 GEMMs at all (AVX2 kernels): then every layer is kept as it is.
    assert bf16.scorer.fast_linears in ((n_linear,) if cpu_runs_native_bf16() else (0, n_linear))
    assert bf16.scorer.model.config._attn_implementation == "zs_ray_bmm"
    assert exact.scorer.first_token_only and bf16.scorer.first_token_only  # last layer: [CLS] only
    out = bf16(TEXTS[:4])
    assert all(abs(sum(r["scores"]) - 1) < 1e-6 for r in out)


def test_label_probabilities_formulas():
    logits = np.array([[[1.0, 0.0, 3.0], [0.5, 0.0, 1.0]]])  # one text, two labels, [contra, neutral, entail]
    single = label_probabilities(logits, nli_labels(_Cfg({"contradiction": 0, "neutral": 1, "entailment": 2})), False)
    e = np.exp([3.0, 1.0])
    assert single[0] == pytest.approx(e / e.sum())
    multi = label_probabilities(logits, nli_labels(_Cfg({"contradiction": 0, "neutral": 1, "entailment": 2})), True)
    assert multi[0] == pytest.approx([np.exp(3) / (np.exp(3) + np.exp(1)), np.exp(1) / (np.exp(1) + np.exp(0.5))])
    # entailment at 0: contradiction is the last class
    multi0 = label_probabilities(logits, nli_labels(_Cfg({"entailment": 0, "neutral": 1, "contradiction": 2})), True)
    assert multi0[0] == pytest.approx([np.exp(1) / (np.exp(1) + np.exp(3)), np.exp(0.5) / (np.exp(0.5) + np.exp(1))])


class _Cfg:
    def __init__(self, label2id):
        self.label2id = label2id


def test_model_without_entailment_label_is_refused(tmp_path):
    path = build_nli_model(tmp_path / "m", entailment_index=None)
    with pytest.raises(ZsRayError, match="no entailment label"):
        check_model(str(path))
    with pytest.raises(ZsRayError, match="no entailment label"):
        ZeroShotClassifier(str(path), LABELS, TEMPLATE)


def test_missing_model_is_one_line_error(tmp_path):
    with pytest.raises(ZsRayError, match="not found") as info:
        check_model(str(tmp_path / "no-such-model"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("labels,template,message", [
    ("", TEMPLATE, "at least one"),
    ("a,,b", TEMPLATE, "at least one"),
    ("a,b,a", TEMPLATE, "duplicate"),
    ("a,b", "Esta noticia habla de.", "must contain"),
])
def test_bad_labels_and_templates(nli_model, labels, template, message):
    with pytest.raises(ZsRayError, match=message):
        ZeroShotClassifier(nli_model, labels, template)


def test_engine_does_not_import_ray():
    """The engine stands alone: importing it (and the zs_ray package it lives in) loads no Ray module."""
    import subprocess
    import sys

    code = "import zs_ray.engine, sys; assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
