"""Every architecture a preset or a user may bring x every precision mode, each against transformers' own result.

Architectures: ELECTRA (es: SELECTRA), DeBERTa-v2 (de, fr, ru, tu: mDeBERTa-v3-xnli), BERT and XLM-RoBERTa, each
tiny, with a real tokenizer of its family and random, discriminative weights (tests/builders.py). Modes:

* fp32: equal to transformers' zero-shot pipeline to 1e-4 (single- and multi-label);
* bf16, fp16: top-1 agreement with the fp32 pipeline, over all texts and over texts with a clear fp32 margin,
  no worse than transformers' own pipeline at that precision minus ``MARGIN``, and within ``AGREEMENT_BOUNDS``;
* int8, onnx-int8 (transformers has no int8 of its own): within ``AGREEMENT_BOUNDS``;
* auto: whatever it takes here is within its mode's bound.

And the load guard: a fast mode whose kernel is deliberately broken is refused in one line when asked for, and
``auto`` measures the other modes instead.
"""

import json

import numpy as np
import pytest

from tests.agreement import agreement, by_label
from tests.agreement import check_bound as shared_check_bound
from tests.builders import ARCHITECTURES, build_arch_nli_model, mlsum_rows
from tests.conftest import LABELS, TEMPLATE
from zs_ray import ZeroShotClassifier, ZsRayError
from zs_ray.engine import cpu_int8_available

TEXTS = [r["summary"] for r in mlsum_rows(120, seed=3)]
MARGIN = 0.05  # how far below transformers' own agreement at the same precision zs-ray may fall (6 of 120 texts)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch(request, tmp_path_factory):
    """(architecture, model path, transformers' fp32 pipeline result on TEXTS)."""
    from transformers import pipeline

    path = str(build_arch_nli_model(tmp_path_factory.mktemp(request.param), request.param))
    reference = pipeline("zero-shot-classification", model=path, tokenizer=path, device="cpu")(
        TEXTS, candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    return request.param, path, reference


def transformers_at(path, dtype):
    import torch
    from transformers import pipeline

    pipe = pipeline("zero-shot-classification", model=path, tokenizer=path, device="cpu",
                    dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
    return pipe(TEXTS, candidate_labels=LABELS, hypothesis_template=TEMPLATE)


def check_bound(mode, exact, fast):
    shared_check_bound(mode, exact, fast, min_clear=20)  # XLM-RoBERTa's tiny model has ~23 clear texts of 120


@pytest.mark.parametrize("multi_label", [False, True])
def test_fp32_equals_the_pipeline(arch, pipeline_factory, multi_label):
    name, path, reference = arch
    if multi_label:
        reference = pipeline_factory(path)(TEXTS, candidate_labels=LABELS, hypothesis_template=TEMPLATE,
                                           multi_label=True)
    clf = ZeroShotClassifier(path, LABELS, TEMPLATE, multi_label=multi_label, precision="fp32")
    assert clf.scorer.first_token_only, f"{name}: the [CLS]-only last layer must apply"
    if name == "deberta-v2":
        assert clf.scorer.fast_attention == 2  # both layers in zs-ray's disentangled attention
    assert len({r["labels"][0] for r in reference}) >= 3, "fixture not discriminative"
    for ours, ref in zip(clf(TEXTS), reference):
        expected = by_label(ref)
        for label, score in by_label(ours).items():
            assert score == pytest.approx(expected[label], abs=1e-4), (name, label)


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_half_precision_no_worse_than_transformers_own(arch, mode):
    name, path, reference = arch
    clf = ZeroShotClassifier(path, LABELS, TEMPLATE, precision=mode)
    assert clf.precision == mode
    ours = agreement(reference, clf(TEXTS))
    own = agreement(reference, transformers_at(path, mode))
    assert ours[0] >= own[0] - MARGIN, (name, mode, "all", ours, own)
    assert ours[1] >= own[1] - MARGIN, (name, mode, "clear", ours, own)
    check_bound(mode, reference, clf(TEXTS))


@pytest.mark.parametrize("mode", ["int8", "onnx-int8"])
def test_int8_modes_within_their_bound(arch, mode):
    name, path, reference = arch
    if mode == "int8" and not cpu_int8_available():
        pytest.skip("no x86 int8 engine in this torch / CPU")
    clf = ZeroShotClassifier(path, LABELS, TEMPLATE, precision=mode)
    assert clf.precision == mode
    check_bound(mode, reference, clf(TEXTS))


def test_auto_takes_a_mode_within_its_bound(arch):
    name, path, reference = arch
    clf = ZeroShotClassifier(path, LABELS, TEMPLATE, precision="auto")
    out = clf(TEXTS)
    if clf.precision == "fp32":
        assert agreement(reference, out)[2] < 1e-4
    else:
        check_bound(clf.precision, reference, out)


@pytest.fixture
def broken_bf16_attention(monkeypatch):
    """DeBERTa-v2's attention made to ignore padding in bf16 only (a wrong fast kernel, as the additive mask
    given to DeBERTa was before the guard)."""
    import torch

    from zs_ray.engine import deberta

    key_padding = deberta.key_padding
    monkeypatch.setattr(deberta, "key_padding",
                        lambda mask, dtype: None if dtype == torch.bfloat16 else key_padding(mask, dtype))


def test_the_guard_refuses_a_broken_fast_mode(tmp_path, broken_bf16_attention):
    path = str(build_arch_nli_model(tmp_path / "deberta", "deberta-v2"))
    with pytest.raises(ZsRayError, match=r"--precision bf16 is not faithful for model .* probe batch") as info:
        ZeroShotClassifier(path, LABELS, TEMPLATE, precision="bf16")
    assert "\n" not in str(info.value)
    assert ZeroShotClassifier(path, LABELS, TEMPLATE, precision="fp32").precision == "fp32"  # unaffected


def test_auto_moves_past_a_broken_fast_mode(tmp_path, monkeypatch, broken_bf16_attention):
    """``auto`` measures only the modes that pass the guard; a stored choice that fails it (an older zs-ray's
    measurement) falls back to fp32."""
    from zs_ray.engine import calibrate, cpu_candidates

    monkeypatch.setenv("ZS_RAY_CACHE", str(tmp_path / "cache"))
    path = str(build_arch_nli_model(tmp_path / "deberta", "deberta-v2"))
    clf = ZeroShotClassifier(path, LABELS, TEMPLATE, precision="auto")
    (key, entry), = json.loads(calibrate.cache_file().read_text()).items()
    assert "bf16" not in entry["pairs_per_s"] and clf.precision != "bf16"
    assert set(entry["pairs_per_s"]) == set(cpu_candidates()) - {"bf16"}
    if "bf16" in cpu_candidates():
        calibrate.cache_file().write_text(json.dumps({key: {**entry, "choice": "bf16"}}))
        assert ZeroShotClassifier(path, LABELS, TEMPLATE, precision="auto").precision == "fp32"


@pytest.mark.parametrize("budget", [1, 1 << 40])
def test_deberta_attention_equals_transformers_in_every_chunking(tmp_path, monkeypatch, budget):
    """zs-ray's disentangled attention, one sequence and one head at a time (budget 1 byte: how 512-token
    articles of mDeBERTa-base run on a CPU) or the whole batch at once (as on a GPU), gives transformers'
    own fp32 logits on padded batches, with log-bucketed offsets (lengths past position_buckets / 2)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from zs_ray.engine import deberta, guard
    from zs_ray.engine.model import NliScorer

    monkeypatch.setitem(deberta.SCORES_BYTES, "cpu", budget)
    path = str(build_arch_nli_model(tmp_path / "deberta", "deberta-v2", position_buckets=16))
    scorer = NliScorer(path, precision="fp32")
    assert scorer.fast_attention == 2 and scorer.first_token_only
    flat, lengths = guard.probe_batch(scorer.model.config)
    assert lengths.max() > 16  # offsets in the log buckets
    ours = scorer.logits(flat, lengths)
    scorer.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    theirs = scorer.logits(flat, lengths)
    assert np.abs(ours - theirs).max() < 1e-4 * (np.abs(theirs).max() + 1)
