"""The Ray Train worker loop of ``zs-ray train``: transformers' ``Trainer`` inside ``TorchTrainer``.

Each worker loads the base encoder with a new head for the student's labels
(``AutoModelForSequenceClassification.from_pretrained(num_labels=..., ignore_mismatched_sizes=True)``: an
NLI model's 3-way head is replaced), tokenizes the rows it is given (every worker gets all of them; under
several workers the ``Trainer``'s distributed sampler gives each its share), and trains with a weighted
cross-entropy: each row's loss times its ``weight`` (1 for a person's label, ``--zero-shot-weight`` for a
zero-shot one), summed and divided by the batch's total weight.

Evaluation and saving happen once per epoch; ``RayTrainReportCallback`` hands every saved checkpoint (with
the metrics so far, ``eval_macro_f1`` among them) to Ray Train, which keeps it in the run's storage. A run
that starts where Ray Train has a checkpoint of the same run (``ray.train.get_checkpoint()``: the same
storage and run name) resumes from it with ``Trainer.train(resume_from_checkpoint=...)``; the step it
resumed from is logged as ``resumed_from_step`` (0: a fresh start) and so reaches Ray Train's metrics.

Nothing here imports zs_ray: the loop runs in Ray Train's workers with only its config.
"""

from __future__ import annotations

import os
import tempfile

CHECKPOINT = "checkpoint"  # RayTrainReportCallback.CHECKPOINT_NAME: the transformers checkpoint in a Ray one


def _weighted_trainer():
    import torch
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        """Cross-entropy weighted per row (``weight``), normalised by the batch's total weight."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            weight = inputs.pop("weight")
            outputs = model(**inputs)
            losses = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, reduction="none")
            loss = (losses * weight).sum() / weight.sum().clamp_min(1e-12)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


def _dataset(tokenizer, rows: dict, max_length: int):
    """A list of feature dicts (input ids, label index, weight): sized, so the Trainer shards and resumes it."""
    enc = tokenizer(list(rows["text"]), truncation=True, max_length=max_length)
    keys = [k for k in enc.keys() if k != "attention_mask"]
    return [{**{k: enc[k][i] for k in keys}, "labels": int(rows["label"][i]), "weight": float(rows["weight"][i])}
            for i in range(len(rows["text"]))]


def _collator(tokenizer):
    import torch

    def collate(features):
        batch = tokenizer.pad([{k: v for k, v in f.items() if k not in ("labels", "weight")} for f in features],
                              return_tensors="pt")
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        batch["weight"] = torch.tensor([f["weight"] for f in features], dtype=torch.float32)
        return batch

    return collate


def _macro_f1(pred):
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    guess = np.argmax(logits, axis=-1)
    return {"macro_f1": float(f1_score(pred.label_ids, guess, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(pred.label_ids, guess))}


def train_loop(config: dict) -> None:
    """``train_loop_per_worker``: ``config`` holds the base model, the labels, the hyperparameters and
    ``data`` (an object ref to ``{"train": rows, "validation": rows}``, rows = text / label / weight lists)."""
    import ray
    import ray.train
    import torch
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback,
                              TrainingArguments)

    class ResumeMark(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            state.log_history.append({"resumed_from_step": state.global_step, "epoch": state.epoch or 0.0})

    data = ray.get(config["data"])
    labels = config["labels"]
    tokenizer = AutoTokenizer.from_pretrained(config["base_model"])
    torch.manual_seed(config["seed"])
    model_config = AutoConfig.from_pretrained(
        config["base_model"], num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    model = AutoModelForSequenceClassification.from_pretrained(config["base_model"], config=model_config,
                                                               ignore_mismatched_sizes=True)
    max_length = min(config["max_length"] or tokenizer.model_max_length, 512)
    train_set = _dataset(tokenizer, data["train"], max_length)
    validation = _dataset(tokenizer, data["validation"], max_length) if data["validation"]["text"] else None
    gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="zs-ray-train-") as work:
        args = TrainingArguments(
            output_dir=work, num_train_epochs=config["epochs"], per_device_train_batch_size=config["batch_size"],
            per_device_eval_batch_size=max(config["batch_size"], 32), learning_rate=config["learning_rate"],
            weight_decay=config["weight_decay"], warmup_steps=config.get("warmup_steps", 0), seed=config["seed"],
            data_seed=config["seed"], eval_strategy="epoch" if validation else "no", save_strategy="epoch",
            logging_strategy="epoch", save_total_limit=1, report_to=[], remove_unused_columns=False,
            disable_tqdm=True, use_cpu=not gpu, bf16=gpu and torch.cuda.is_bf16_supported(),
            dataloader_num_workers=0, ddp_find_unused_parameters=False)
        trainer = _weighted_trainer()(
            model=model, args=args, train_dataset=train_set, eval_dataset=validation,
            data_collator=_collator(tokenizer), compute_metrics=_macro_f1 if validation else None,
            callbacks=[ResumeMark(), RayTrainReportCallback(), *config.get("callbacks", [])])
        trainer = prepare_trainer(trainer)
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            trainer.train()
        else:
            with checkpoint.as_directory() as path:
                trainer.train(resume_from_checkpoint=os.path.join(path, CHECKPOINT))
