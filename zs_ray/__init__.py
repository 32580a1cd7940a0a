"""zs-ray: zero-shot NLI pre-annotation of text at cluster scale (Ray Data -> Parquet -> Rubrix).

* ``ZeroShotClassifier``: the engine alone (no Ray), pipeline-equivalent scores.
* ``AnnotateConfig`` (+ ``RubrixConfig``) and ``annotate``: the whole job (read -> tokenize -> model ->
  write -> log).
"""

__version__ = "0.1.0"

from zs_ray.config import AnnotateConfig  # noqa: E402
from zs_ray.engine import ZeroShotClassifier  # noqa: E402
from zs_ray.errors import ZsRayError  # noqa: E402
from zs_ray.workflow.config import RubrixConfig  # noqa: E402


def annotate(config: AnnotateConfig, rubrix: "RubrixConfig | None" = None):
    """Run the annotation job (see ``zs_ray.pipeline.annotate``)."""
    from zs_ray.pipeline import annotate as run

    return run(config, rubrix)


__all__ = ["AnnotateConfig", "RubrixConfig", "ZeroShotClassifier", "ZsRayError", "annotate", "__version__"]
