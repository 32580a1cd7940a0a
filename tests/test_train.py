"""``zs-ray train``: the splits (the labelled round-1 sample is the test set, never trained on; zero-shot labels
above the thresholds marked and weighted), a student trained on Ray Train that resumes from Ray Train's
checkpoint after a failure and that ``annotate --model`` then runs, better than chance on rows it never saw;
bad inputs refused in one line before any work."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from transformers import TrainerCallback

from tests.builders import TOPICS, build_nli_model, write_pulled
from zs_ray.cli import main, parse
from zs_ray.train import TrainFailed, train
from zs_ray.train.data import prepare
from zs_ray.train.config import TrainConfig

THRESHOLDS = {"deportes": 0.8, "cultura": 0.7}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny ELECTRA NLI model (real WordPiece tokenizer; 2 layers, hidden 64) with ordinary initialisation: its
    3-way head is replaced. (At hidden 32 learning the topics in 6 epochs depends on the seed.)"""
    return str(build_nli_model(tmp_path_factory.mktemp("base"), hidden=64, ffn=128, initializer_range=0.02))


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    """420 pulled records: 0-339 labelled by a person, 0-79 the round-1 sample, 340-419 unlabelled."""
    path = tmp_path_factory.mktemp("pull") / "round1.parquet"
    return path, write_pulled(path, 420, labelled=340, sample=80)


def test_splits_keep_the_sample_out_and_mark_zero_shot_labels(pulled):
    path, rows = pulled
    data = prepare(TrainConfig(input=str(path), output="unused", base_model="unused", zero_shot_weight=0.3),
                   THRESHOLDS)
    assert data.labels == sorted(TOPICS)
    assert data.test.ids == [r["id"] for r in rows[:80]]  # the labelled round-1 sample, and nothing else
    assert data.test.label == [r["topic"] for r in rows[:80]]
    assert list(data.teacher_pred) == [r["prediction_labels"][0] for r in rows[:80]]
    human = [i for i, s in zip(data.train.ids, data.train.source) if s == "human"]
    assert sorted(human + data.validation.ids) == sorted(r["id"] for r in rows[80:340])
    assert not set(human) & set(data.validation.ids) and len(data.validation) == 26
    assert set(data.validation.label) == set(TOPICS)  # stratified
    expected = [r["id"] for r in rows[340:]
                if THRESHOLDS.get(r["prediction_labels"][0], 2) <= r["prediction_scores"][0]]
    weak = [(i, lab, w) for i, lab, s, w in zip(data.train.ids, data.train.label, data.train.source, data.train.weight)
            if s == "zero-shot"]
    assert expected and [i for i, _, _ in weak] == expected
    by_id = {r["id"]: r for r in rows}
    assert all(lab == by_id[i]["prediction_labels"][0] and w == 0.3 for i, lab, w in weak)
    again = prepare(TrainConfig(input=str(path), output="unused", base_model="unused"), THRESHOLDS)
    other = prepare(TrainConfig(input=str(path), output="unused", base_model="unused", seed=1), THRESHOLDS)
    assert again.validation.ids == data.validation.ids and other.validation.ids != data.validation.ids


def test_zero_shot_rows_weigh_what_they_are_given(base):
    """The loss is each row's cross-entropy times its weight, over the batch's total weight."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    from zs_ray.train.loop import _collator, _dataset, _weighted_trainer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base).eval()
    rows = {"text": ["gol del equipo", "la bolsa y el banco", "museo"], "label": [0, 1, 2], "weight": [1.0, 0.5, 0.25]}
    batch = _collator(tokenizer)(_dataset(tokenizer, rows, 32))
    trainer = _weighted_trainer()(model=model, args=TrainingArguments(output_dir=str(base), use_cpu=True,
                                                                      report_to=[]))
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "weight")}).logits
    each = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]), reduction="none")
    assert float(loss) == pytest.approx(float((each * torch.tensor([1.0, 0.5, 0.25])).sum() / 1.75), rel=1e-5)
    assert float(loss) != pytest.approx(float(each.mean()), rel=1e-3)


class FailAfterSecondCheckpoint(TrainerCallback):
    """A worker failure once Ray Train has the checkpoints of epochs 1 and 2 (runs after its report callback)."""

    def on_save(self, args, state, control, **kwargs):
        if state.epoch >= 2:
            raise RuntimeError("injected failure")


def test_train_resumes_and_annotate_runs_the_student(ray_local, tmp_path, pulled, base, mlsum_dir, capsys):
    path, _ = pulled
    out = tmp_path / "student"
    argv = ["--input", str(path), "--base-model", base, "--output", str(out), "--epochs", "6", "--learning-rate",
            "2e-3", "--thresholds", str(tmp_path / "thresholds.json"), "--bootstrap", "50"]
    thresholds = {"labels": {k: {"threshold": v} for k, v in THRESHOLDS.items()}}
    (tmp_path / "thresholds.json").write_text(json.dumps(thresholds))
    storage = tmp_path / ".student.zs-ray-train"
    with pytest.raises(TrainFailed, match="injected failure.*run the same command again to resume"):
        train(parse("train", argv)[0], callbacks=[FailAfterSecondCheckpoint()])
    assert not out.exists() and list(storage.glob("train-*/checkpoint_*"))  # nothing published, checkpoints kept

    assert main(["train", *argv]) == 0  # the same command: Ray Train hands the loop its latest checkpoint
    printed = capsys.readouterr().out
    manifest = json.loads((out / "zs-ray-train.json").read_text())
    run = manifest["ray_train"]
    steps_per_epoch = run["steps"] // 6
    assert run["resumed_from_step"] in (steps_per_epoch, 2 * steps_per_epoch), run
    assert run["steps"] == 6 * steps_per_epoch and "resumed from step" in printed
    assert not storage.exists()  # the default storage goes once the student is in place
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(5)] == sorted(TOPICS)
    assert manifest["rows"]["test"]["rows"] == 80 and manifest["rows"]["train"]["zero-shot"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"]["records"] == metrics["teacher"]["records"] == 80
    trained = pq.read_table(out / "training-rows.parquet").to_pylist()
    assert {r["split"] for r in trained if r["id"] in {f"es-test-{i}" for i in range(80)}} == {"test"}

    ann = tmp_path / "annotated"
    assert main(["annotate", "--dataset", mlsum_dir, "--split", "test[0:120]", "--model", str(out), "--precision",
                 "fp32", "--output", str(ann)]) == 0
    rows = [r for r in pq.read_table(ann).to_pylist() if r["prediction"] is not None]
    accuracy = np.mean([r["prediction"] == r["topic"] for r in rows])
    assert len(rows) > 100 and accuracy > 0.6, accuracy  # chance: 0.2
    assert main(["annotate", "--dataset", mlsum_dir, "--model", str(out), "--labels", "ciencia", "--output",
                 str(tmp_path / "never")]) == 2
    assert "--labels ciencia: the model does not have this label" in capsys.readouterr().err

    # An annotation output with a gold column is an input too: no record is marked as the sample, so a seeded
    # 20% of its gold labels is the test set.
    (tmp_path / "map.yaml").write_text("".join(f"{t}: {t}\n" for t in TOPICS))
    data = prepare(TrainConfig(input=str(ann), gold_column="topic", label_map=str(tmp_path / "map.yaml"),
                               output="unused", base_model="unused"))
    assert len(data.test) == round(0.2 * len(rows)) and "is the test set" in data.notes[-1]
    assert sorted(data.test.ids + data.validation.ids + data.train.ids) == sorted(r["id"] for r in rows)


BAD = [
    ("nolabels", [], "has no human labels to train on"),
    ("missing-base", ["--base-model", "/nonexistent/encoder"], "--base-model /nonexistent/encoder: not found"),
    ("labels", ["--labels", "politica,economia"], "human labels the student does not have: cultura ("),
    ("all-in-sample", [], "are in the test set"),
    ("threshold", ["--threshold", "deportes=2"], "invalid --threshold 'deportes=2'"),
    ("fraction", ["--validation-fraction", "1"], "--validation-fraction must be in [0, 1)"),
    ("output", [], "is not empty: pass --overwrite"),
]


@pytest.mark.parametrize("case,extra,message", BAD, ids=[c for c, _, _ in BAD])
def test_bad_input_is_one_line_and_no_output(tmp_path, capsys, pulled, base, case, extra, message):
    path, _ = pulled
    if case == "nolabels":
        path = tmp_path / "in" / "nolabels.parquet"
        write_pulled(path, 30, labelled=0, sample=10)
    elif case == "all-in-sample":
        path = tmp_path / "in" / "sample.parquet"
        write_pulled(path, 60, labelled=20, sample=30)
    out = tmp_path / "out" / "student"
    if case == "output":
        out.mkdir(parents=True)
        (out / "keep.txt").write_text("a person's file")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["train", "--input", str(path), "--base-model", base, "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zs-ray: error: ") and err.count("\n") == 1, err
    assert message in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, no hidden run directory
