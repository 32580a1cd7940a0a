"""``zs-ray train``: learn a student classifier from the labels people gave (issue 23).

``data.py`` reads a pulled file (or an output with a gold column) and splits it: the labelled round-1 sample
is the test set, never trained on; the other human labels are split into train and validation; with
thresholds, unlabelled high-score zero-shot labels join the training rows, marked and weighted.
``loop.py`` is the Ray Train worker loop (transformers' ``Trainer`` in ``TorchTrainer``, weighted loss,
resume from Ray Train's checkpoint); ``run.py`` is the driver (checks, ``fit``, the best checkpoint,
student vs zero-shot teacher on the test set, the model directory written all or nothing).

    from zs_ray.train import train
    from zs_ray.train.config import TrainConfig

    summary = train(TrainConfig(input="round1.parquet", base_model="Recognai/zeroshot_selectra_medium",
                                output="student/"))
    print(summary)   # then: zs-ray annotate --model student/ ...
"""

from zs_ray.train.run import TrainFailed, TrainSummary, train

__all__ = ["train", "TrainSummary", "TrainFailed"]
